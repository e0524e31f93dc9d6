"""Issue 8 §5 routes against a real uvicorn on loopback: cancel, dead letters, /ready and /health,
Idempotency-Key, wait=true, /runs filters and cursors, /audit cursors, run options, failed runs' error."""

from __future__ import annotations

import asyncio
import csv
import gzip
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from tests.api.helpers import SIM_SYMBOLS, GateStage, Service, serve, wait_for_run
from tests.api.test_runs import ExplodingOrchestrator

from jax_assistant.api import create_app
from jax_assistant.config import DEFAULT_PIPELINE, DataSourceConfig, EngineConfig, Settings
from jax_assistant.orchestrator import Orchestrator, RunError, RunRequest, new_run_id
from jax_assistant.pipeline import plugins
from jax_assistant.pipeline.base import BaseStage, StageContext, StageOutput, WorkItem
from jax_assistant.pipeline.policy import StagePolicy
from jax_assistant.pipeline.stages import BUILTIN_STAGES

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture
async def svc(settings: Settings, api_headers: dict[str, str]) -> AsyncIterator[Service]:
    async with serve(create_app(settings), headers=api_headers) as service:
        yield service


async def start(client: httpx.AsyncClient, **body: Any) -> str:
    resp = await client.post("/process", json=body)
    assert resp.status_code == 202, resp.text
    run_id: str = resp.json()["runId"]
    return run_id


# ---------------------------------------------------------------------------- cancel


async def test_cancel_mid_run_ends_it_cancelled(
    database_url: str, gated_settings: Settings, api_headers: dict[str, str]
) -> None:
    # One symbol at a time: the first waits at the gate, the other three are still queued.
    settings = gated_settings.model_copy(update={"engine": EngineConfig(concurrency=1, queue_size=1)})
    async with serve(create_app(settings), headers=api_headers) as service:
        client = service.client
        run_id = await start(client, symbols=list(SIM_SYMBOLS))
        await GateStage.wait_entered(1)
        resp = await client.post(f"/runs/{run_id}/cancel")
        assert resp.status_code == 202, resp.text
        assert resp.json() == {"runId": run_id, "status": "cancelling"}
        GateStage.opened.set()  # the in-flight symbol finishes its stage (drain); the rest never start
        done = await wait_for_run(client, run_id)
        assert done["run"]["status"] == "cancelled"
        statuses = sorted(s["status"] for s in done["symbols"])
        assert statuses.count("cancelled") >= 2, statuses
        assert GateStage.entered < len(SIM_SYMBOLS)
        again = await client.post(f"/runs/{run_id}/cancel")
        assert again.status_code == 409 and "already ended (cancelled)" in again.json()["error"]
        assert (await client.post("/runs/run_nope/cancel")).status_code == 404


async def test_cancel_an_interrupted_run_stops_it_being_resumed(
    settings: Settings, api_headers: dict[str, str]
) -> None:
    from tests.api.test_resume import interrupted_run_without_results

    run = await interrupted_run_without_results(settings)
    app = create_app(settings, resume_on_startup=False)
    async with serve(app, headers=api_headers) as service:
        resp = await service.client.post(f"/runs/{run.id}/cancel")
        assert resp.status_code == 202, resp.text
        body = (await service.client.get(f"/runs/{run.id}")).json()
        assert body["run"]["status"] == "cancelled" and body["run"]["finishedAt"]
    # A later start-up finds nothing to resume.
    async with serve(create_app(settings), headers=api_headers) as service:
        assert service.app.state.runs.snapshot()["startupResume"]["runIds"] == []


# ---------------------------------------------------------------------------- dead letters


class FlakyStage(BaseStage):
    """Fails every symbol while ``failing`` is set (a required stage: each failure is a dead letter)."""

    name = "flaky"
    default_policy = StagePolicy(timeout_s=None, required=True)
    failing: ClassVar[bool] = True

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        if type(self).failing:
            raise RuntimeError("dependency down")
        return StageOutput(item=item)


@pytest.fixture
def flaky_settings(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    FlakyStage.failing = True
    monkeypatch.setattr(plugins, "discover_stage_factories", lambda: {**BUILTIN_STAGES, "flaky": FlakyStage})
    yield Settings(database_url=database_url, pipeline=[*DEFAULT_PIPELINE, "flaky"])


async def test_dead_letters_listed_and_retried(flaky_settings: Settings, api_headers: dict[str, str]) -> None:
    async with serve(create_app(flaky_settings), headers=api_headers) as service:
        client = service.client
        run_id = await start(client, symbols=list(SIM_SYMBOLS[:2]))
        done = await wait_for_run(client, run_id)
        assert {s["status"] for s in done["symbols"]} == {"failed"}

        letters = (await client.get("/dead-letters")).json()
        assert [(d["runId"], d["symbol"], d["stage"], d["status"]) for d in letters] == [
            (run_id, SIM_SYMBOLS[0], "flaky", "open"),
            (run_id, SIM_SYMBOLS[1], "flaky", "open"),
        ]
        assert "dependency down" in letters[0]["error"]
        assert (await client.get("/dead-letters", params={"runId": "run_other"})).json() == []

        FlakyStage.failing = False
        resp = await client.post(f"/dead-letters/{letters[0]['id']}/retry")
        assert resp.status_code == 202, resp.text
        retry_id = resp.json()["runId"]
        assert retry_id != run_id and resp.headers["Location"] == f"/runs/{retry_id}"
        retried = await wait_for_run(client, retry_id)
        assert retried["run"]["status"] == "completed"
        assert [s["symbol"] for s in retried["symbols"]] == [SIM_SYMBOLS[0]]
        assert retried["run"]["params"]["retryOf"] == run_id

        resolved = (await client.get("/dead-letters", params={"status": "resolved"})).json()
        assert [(d["id"], d["retriedByRunId"]) for d in resolved] == [(letters[0]["id"], retry_id)]
        assert [d["id"] for d in (await client.get("/dead-letters")).json()] == [letters[1]["id"]]

        again = await client.post(f"/dead-letters/{letters[0]['id']}/retry")
        assert again.status_code == 409 and "resolved" in again.json()["error"]
        assert (await client.post("/dead-letters/999999/retry")).status_code == 404
        assert (await client.get("/dead-letters", params={"status": "bogus"})).status_code == 422


# ---------------------------------------------------------------------------- /ready and /health


async def test_ready_when_database_migrations_and_data_are_fine(svc: Service) -> None:
    resp = await svc.client.get("/ready")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "migrations", "data"}
    assert all(c["ok"] for c in body["checks"].values())


async def test_not_ready_when_the_schema_is_not_at_head(
    settings: Settings, tmp_path: Path, api_headers: dict[str, str]
) -> None:
    async with serve(create_app(settings), headers=api_headers) as service:
        with sqlite3.connect(tmp_path / "jax.db") as conn:
            conn.execute("UPDATE alembic_version SET version_num = '0002_old'")
        resp = await service.client.get("/ready")
        assert resp.status_code == 503
        checks = resp.json()["checks"]
        assert checks["database"]["ok"] and not checks["migrations"]["ok"]
        assert "0002_old" in checks["migrations"]["detail"]


def write_real_csv(path: Path, symbols: tuple[str, ...] = ("AAPL", "MSFT"), sessions: int = 60) -> Path:
    """A small csv of real bars: the last ``sessions`` rows of each symbol in the long-history file."""
    rows: dict[str, list[list[str]]] = {s: [] for s in symbols}
    with gzip.open(SHARED_DATA / "daily_ohlcv_stooq_longhist.csv.gz", "rt", newline="") as src:
        reader = csv.reader(src)
        header = next(reader)
        for row in reader:
            if row[0] in rows:
                rows[row[0]].append(row)
    with path.open("w", newline="") as dst:
        writer = csv.writer(dst)
        writer.writerow(header)
        for sym in symbols:
            writer.writerows(rows[sym][-sessions:])
    return path


async def test_health_degraded_and_not_ready_when_data_is_unusable(
    database_url: str, tmp_path: Path, api_headers: dict[str, str]
) -> None:
    data = write_real_csv(tmp_path / "bars.csv")
    settings = Settings(database_url=database_url, provider="csv", data_path=data)
    async with serve(create_app(settings), headers=api_headers) as service:
        client = service.client
        assert (await client.get("/health")).json()["status"] == "healthy"
        data.unlink()  # the data goes away under a running service
        health = (await client.get("/health")).json()
        assert health["status"] == "degraded" and str(data) in health["reason"]
        resp = await client.get("/ready")
        assert resp.status_code == 503
        assert not resp.json()["checks"]["data"]["ok"]
        write_real_csv(data)
        assert (await client.get("/health")).json()["status"] == "healthy"
        assert (await client.get("/ready")).status_code == 200


async def test_health_degraded_when_data_never_loaded(
    database_url: str, tmp_path: Path, api_headers: dict[str, str]
) -> None:
    broken = tmp_path / "broken.csv"
    broken.write_text("not,a,price,file\n1,2,3,4\n")
    settings = Settings(database_url=database_url, provider="csv", data_path=broken)
    async with serve(create_app(settings), headers=api_headers) as service:
        health = (await service.client.get("/health")).json()
        assert health["status"] == "degraded" and "market data unavailable" in health["reason"]
        assert (await service.client.get("/ready")).status_code == 503


# ---------------------------------------------------------------------------- Idempotency-Key


async def test_idempotent_resubmission_returns_the_same_run(svc: Service) -> None:
    client = svc.client
    body = {"symbols": list(SIM_SYMBOLS[:2])}
    key = {"Idempotency-Key": "order-7f3a"}
    first = await client.post("/process", json=body, headers=key)
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    run_id = first.json()["runId"]
    await wait_for_run(client, run_id)
    second = await client.post("/process", json=body, headers=key)
    assert second.status_code == 202
    assert second.json()["runId"] == run_id and second.headers["Idempotent-Replayed"] == "true"
    assert len((await client.get("/runs")).json()) == 1

    other = await client.post("/process", json={"symbols": [SIM_SYMBOLS[3]]}, headers=key)
    assert other.status_code == 409 and "different request" in other.json()["error"]
    assert (await client.post("/process", json=body, headers={"Idempotency-Key": "x y"})).status_code == 422


async def test_concurrent_submissions_with_one_key_start_one_run(svc: Service) -> None:
    client = svc.client
    body = {"symbols": [SIM_SYMBOLS[0]]}
    responses = await asyncio.gather(
        *(client.post("/process", json=body, headers={"Idempotency-Key": "burst-1"}) for _ in range(8))
    )
    assert {r.status_code for r in responses} == {202}
    ids = {r.json()["runId"] for r in responses}
    assert len(ids) == 1
    await wait_for_run(client, ids.pop())
    assert len((await client.get("/runs")).json()) == 1


# ---------------------------------------------------------------------------- wait=true and options


async def test_wait_true_answers_with_the_finished_run(svc: Service) -> None:
    resp = await svc.client.post("/process", params={"wait": "true"}, json={"symbols": list(SIM_SYMBOLS)})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["run"]["status"] == "completed" and body["run"]["error"] is None
    assert sorted(s["symbol"] for s in body["symbols"]) == sorted(SIM_SYMBOLS)


async def test_wait_true_refuses_a_large_batch(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    from jax_assistant.api import app as app_module

    monkeypatch.setattr(app_module, "WAIT_MAX_SYMBOLS", 3)
    resp = await svc.client.post("/process", params={"wait": "true"}, json={"symbols": list(SIM_SYMBOLS)})
    assert resp.status_code == 400
    assert resp.json()["field"] == "wait" and "at most 3 symbols" in resp.json()["error"]
    assert (await svc.client.get("/runs")).json() == []  # refused before anything started
    # An empty list means the whole universe (20 sample symbols): counted after resolving.
    resp = await svc.client.post("/process", params={"wait": "true"}, json={})
    assert resp.status_code == 400 and "has 20" in resp.json()["error"]


async def test_process_options_on_par_with_jax_run(
    database_url: str, tmp_path: Path, api_headers: dict[str, str]
) -> None:
    data = write_real_csv(tmp_path / "real.csv")
    settings = Settings(
        database_url=database_url, data_sources={"real": DataSourceConfig(provider="csv", path=data)}
    )
    async with serve(create_app(settings), headers=api_headers) as service:
        client = service.client
        body = {
            "symbols": ["aapl"],
            "dataSource": "real",
            "accountSize": 50_000,
            "riskPercent": 1.5,
            "lookback": 5,
            "asOf": "2017-11-01",
        }
        resp = await client.post("/process", params={"wait": "true"}, json=body)
        assert resp.status_code == 200, resp.text
        run = resp.json()["run"]
        assert run["status"] == "completed" and run["symbols"] == ["AAPL"]
        assert run["provider"] == "csv" and run["simulated"] is False and run["asOf"] == "2017-11-01"
        assert run["params"]["accountSize"] == 50_000 and run["params"]["riskPercent"] == 1.5
        assert run["params"]["lookback"] == 5 and run["params"]["dataSource"] == "real"
        for trade in resp.json()["symbols"][0]["trades"]:
            assert trade["risk"]["accountSize"] == 50_000

        bad = await client.post("/process", json={"symbols": ["AAPL"], "dataSource": "nope"})
        assert bad.status_code == 400 and bad.json()["field"] == "dataSource"
        assert "real" in bad.json()["error"]
        raw = await client.post("/process", json={"symbols": ["AAPL"], "dataPath": "/etc"})
        assert raw.status_code == 422 and raw.json()["details"][0]["field"] == "dataPath"
        for field, value in (("accountSize", -1), ("riskPercent", 0), ("riskPercent", 101)):
            resp = await client.post("/process", json={"symbols": ["AAPL"], field: value})
            assert resp.status_code == 422 and resp.json()["details"][0]["field"] == field
        # Nothing was stored for the refused requests.
        assert len((await client.get("/runs")).json()) == 1


# ---------------------------------------------------------------------------- listing and paging


async def test_runs_filters_and_cursor_pagination(svc: Service) -> None:
    client = svc.client
    ids = []
    for symbols in ([SIM_SYMBOLS[0]], [SIM_SYMBOLS[1]], [SIM_SYMBOLS[0], SIM_SYMBOLS[2]]):
        run_id = await start(client, symbols=symbols)
        await wait_for_run(client, run_id)
        ids.append(run_id)
    newest_first = ids[::-1]

    seen: list[str] = []
    params: dict[str, Any] = {"limit": 1}
    while True:
        resp = await client.get("/runs", params=params)
        assert resp.status_code == 200
        seen.extend(r["id"] for r in resp.json())
        cursor = resp.headers.get("X-Next-Cursor")
        if cursor is None:
            assert "Link" not in resp.headers
            break
        assert 'rel="next"' in resp.headers["Link"]
        params = {"limit": 1, "cursor": cursor}
    assert seen == newest_first

    by_symbol = (await client.get("/runs", params={"symbol": SIM_SYMBOLS[0].lower()})).json()
    assert [r["id"] for r in by_symbol] == [ids[2], ids[0]]
    assert (await client.get("/runs", params={"status": "completed"})).json()[0]["id"] == ids[2]
    assert (await client.get("/runs", params={"status": "running"})).json() == []
    assert (await client.get("/runs", params={"since": "2999-01-01T00:00:00Z"})).json() == []
    assert len((await client.get("/runs", params={"since": "2000-01-01T00:00:00+00:00"})).json()) == 3
    bad = await client.get("/runs", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and bad.json()["field"] == "cursor"
    assert (await client.get("/runs", params={"status": "bogus"})).status_code == 422
    assert (await client.get("/runs", params={"since": "1700000000"})).status_code == 422
    month13 = await client.get("/runs", params={"since": "2000-13-01T00:00:00Z"})
    assert month13.status_code == 400 and month13.json()["field"] == "since"


async def test_audit_newest_first_with_a_cursor(svc: Service) -> None:
    client = svc.client
    await wait_for_run(client, await start(client, symbols=[SIM_SYMBOLS[0]]))
    full = (await client.get("/audit")).json()
    stamps = [e["timestamp"] for e in full]
    assert stamps == sorted(stamps, reverse=True) and len(full) > 3
    paged: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        resp = await client.get("/audit", params=params)
        paged.extend(e["id"] for e in resp.json())
        if "X-Next-Cursor" not in resp.headers:
            break
        params = {"limit": 2, "cursor": resp.headers["X-Next-Cursor"]}
    assert paged == [e["id"] for e in full]


# ---------------------------------------------------------------------------- errors and ids


async def test_a_failed_run_carries_its_error(settings: Settings, api_headers: dict[str, str]) -> None:
    orch = ExplodingOrchestrator(settings, stage="execute")
    try:
        async with serve(create_app(orchestrator=orch), headers=api_headers) as service:
            client = service.client
            run_id = await start(client, symbols=[SIM_SYMBOLS[0]])
            orch.release.set()
            done = await wait_for_run(client, run_id)
            assert done["run"]["status"] == "failed"
            assert done["run"]["error"] == "RuntimeError: engine exploded"
            listed = (await client.get("/runs", params={"status": "failed"})).json()
            assert [(r["id"], r["error"]) for r in listed] == [(run_id, "RuntimeError: engine exploded")]
    finally:
        await orch.close()


def test_run_ids_do_not_collide() -> None:
    ids = {new_run_id() for _ in range(50_000)}  # all within the same few seconds
    assert len(ids) == 50_000


async def test_an_existing_run_id_is_refused_not_merged(settings: Settings) -> None:
    async with Orchestrator(settings) as orch:
        prepared = orch.prepare_run(RunRequest(symbols=[SIM_SYMBOLS[0]], run_id="run_fixed"))
        await orch.record_run(prepared)
        again = orch.prepare_run(RunRequest(symbols=[SIM_SYMBOLS[1]], run_id="run_fixed"))
        with pytest.raises(RunError, match="already exists"):
            await orch.record_run(again)
        assert orch.repository is not None
        stored = await orch.repository.get_run("run_fixed")
        assert stored is not None and stored.symbols == [SIM_SYMBOLS[0]]
