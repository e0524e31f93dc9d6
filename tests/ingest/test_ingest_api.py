"""POST /ingest on a real uvicorn: a mixed batch, memory written, a run triggered, an idempotent re-send."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from tests.api.helpers import serve
from tests.ingest.batches import (
    AFTER_AS_OF,
    EXPECTED,
    PUSHED,
    SIGNIFICANT_SYMBOLS,
    mixed_batch,
    outcome_tuples,
)

from jax_assistant.api import create_app
from jax_assistant.config import Settings
from jax_assistant.memory import open_memory
from jax_assistant.storage import open_database
from jax_assistant.storage.tables import IngestedObservationRow

pytestmark = pytest.mark.usefixtures("api_auth_off")


async def _stored_keys(url: str) -> list[str]:
    db = await open_database(url)
    try:
        async with db.engine.connect() as conn:
            return sorted((await conn.execute(sa.select(IngestedObservationRow.key))).scalars())
    finally:
        await db.close()


async def _memories(settings: Settings) -> dict[str, list[Any]]:
    async with await open_memory(settings) as memory:
        return {
            bank: await memory.recall({"tags": ["ingest"], "limit": 50}, bank=bank)
            for bank in ("signals", "market_events")
        }


async def _finished(client: Any, run_id: str) -> dict[str, Any]:
    for _ in range(600):
        run = (await client.get(f"/runs/{run_id}")).json()["run"]
        if run["status"] not in ("pending", "running"):
            return dict(run)
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish")


async def test_mixed_batch_outcomes_memory_processing_and_idempotent_resend(database_url: str) -> None:
    settings = Settings(database_url=database_url)
    app = create_app(settings, resume_on_startup=False)
    async with serve(app) as svc:
        resp = await svc.client.post(
            "/ingest", json=mixed_batch(), headers={"X-Correlation-ID": "corr_ingest_one"}
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert resp.headers["x-correlation-id"] == "corr_ingest_one" == body["correlation_id"]
        assert outcome_tuples(body["items"]) == EXPECTED
        assert (body["received"], body["accepted"], body["duplicates"], body["rejected"]) == (10, 4, 1, 5)
        assert body["items"][5]["errors"][0]["message"] == "Input should be less than or equal to 1"
        assert "required for type price_gap" in body["items"][7]["errors"][0]["message"]

        # Processing: one run of the significant symbols, under the request's correlation ID.
        processing = body["processing"]
        assert processing["symbols"] == SIGNIFICANT_SYMBOLS and processing["run_id"]
        assert processing["status"] == "started" and processing["events"] == 3
        # The in-batch repeat (8) is the same observation, so the same pushed event.
        started = {0, 1, 3, 8}
        assert [i.get("processing") for i in body["items"]] == [
            "started" if n in started else None for n in range(10)
        ]
        run = await _finished(svc.client, processing["run_id"])
        assert run["correlationId"] == "corr_ingest_one" and run["symbols"] == SIGNIFICANT_SYMBOLS
        assert run["status"] == "completed"

        # The pushed observations reached detect_events as events of their symbol and that day, and
        # are stored with the run's result (beside any detected ones).
        detail = (await svc.client.get(f"/runs/{processing['run_id']}")).json()
        for result in detail["symbols"]:
            pushed = [e for e in result["events"] if e["payload"].get("source") == "ingest"]
            want = PUSHED[result["symbol"]]
            assert [(e["type"], e["time"].replace("+00:00", "Z")) for e in pushed] == [
                (t, ts) for t, ts, _ in want
            ]
            for event, (_, _, fields) in zip(pushed, want, strict=True):
                assert {k: event["payload"][k] for k in fields} == fields
            keys = {i["symbol"]: i["key"] for i in body["items"][:4]}
            assert pushed[0]["id"] == f"ingest-{keys[result['symbol']][:24]}"
            assert [e["time"] for e in result["events"]] == sorted(e["time"] for e in result["events"])

        # Every observation audited under the correlation ID, with its outcome.
        audit = (await svc.client.get("/audit", params={"correlation_id": "corr_ingest_one"})).json()
        ingest_audit = [a for a in audit if a["action"] == "ingest.observation"]
        processed = sorted(
            a["payload"]["key"] for a in audit if a["action"] == "ingest.processed"
        )  # once each
        assert processed == sorted(body["items"][i]["key"] for i in (0, 1, 3))
        assert {a["payload"]["runId"] for a in audit if a["action"] == "ingest.processed"} == {
            processing["run_id"]
        }
        assert sorted((a["payload"]["index"], a["outcome"]) for a in ingest_audit) == [
            (0, "success"),
            (1, "success"),
            (2, "success"),
            (3, "success"),
            (4, "rejected"),
            (5, "rejected"),
            (6, "rejected"),
            (7, "rejected"),
            (8, "skipped"),
            (9, "rejected"),
        ]

        keys = await _stored_keys(database_url)
        assert keys == sorted(i["key"] for i in body["items"][:4])
        memories = await _memories(settings)
        assert [(m.symbol, m.type, m.source.ref) for m in memories["signals"]] == [
            ("ACME.SIM", "price_gap", body["items"][0]["key"])
        ]
        assert sorted((m.symbol, m.type) for m in memories["market_events"]) == [
            ("BOLT.SIM", "news_headline"),
            ("BYTE.SIM", "earnings"),
        ]
        gap = memories["signals"][0]
        assert (
            gap.data is not None
            and gap.data["impact_estimate"] == -0.8
            and gap.data["correlationId"] == "corr_ingest_one"
        )

        # The same batch again (another request): nothing stored twice, nothing re-run.
        again = (
            await svc.client.post(
                "/ingest", json=mixed_batch(), headers={"X-Correlation-ID": "corr_ingest_two"}
            )
        ).json()
        assert [i["status"] for i in again["items"]] == ["duplicate"] * 4 + ["rejected"] * 3 + [
            "rejected",
            "duplicate",
            "rejected",
        ]
        assert again["processing"] is None
        assert await _stored_keys(database_url) == keys
        assert {b: len(v) for b, v in (await _memories(settings)).items()} == {
            "signals": 1,
            "market_events": 2,
        }
        runs = (await svc.client.get("/runs")).json()
        assert len(runs if isinstance(runs, list) else runs["runs"]) == 1


async def test_bad_envelope_is_refused_naming_the_field(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url), resume_on_startup=False)
    async with serve(app) as svc:
        missing = await svc.client.post("/ingest", json={"observations": [{"type": "news"}]})
        assert missing.status_code == 400 and missing.json()["field"] == "generated_at"
        empty = await svc.client.post(
            "/ingest", json={"generated_at": "2026-11-27T00:00:00Z", "observations": []}
        )
        assert empty.status_code == 400 and empty.json()["field"] == "observations"
        garbage = await svc.client.post(
            "/ingest", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert garbage.status_code == 400 and garbage.json()["field"] == "body"
        assert await _stored_keys(database_url) == []


async def test_an_observation_after_the_runs_as_of_date_is_not_used_for_it(database_url: str) -> None:
    later = {"type": "gap_up", "timestamp": AFTER_AS_OF, "symbol": "ACME.SIM", "impact_estimate": 0.9}
    batch = {"generated_at": AFTER_AS_OF, "observations": [later]}
    async with serve(create_app(Settings(database_url=database_url), resume_on_startup=False)) as svc:
        body = (await svc.client.post("/ingest", json=batch)).json()
        assert body["items"][0]["status"] == "accepted" and body["processing"]["events"] == 0
        await _finished(svc.client, body["processing"]["run_id"])
        detail = (await svc.client.get(f"/runs/{body['processing']['run_id']}")).json()
        assert detail["run"]["asOf"] == "2025-06-27"
        (result,) = detail["symbols"]
        assert all(e["payload"].get("source") != "ingest" for e in result["events"])


async def test_a_full_admission_cap_defers_processing_and_a_resend_runs_it(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.api.helpers import GateStage

    from jax_assistant.config import DEFAULT_PIPELINE, ApiConfig
    from jax_assistant.pipeline import plugins
    from jax_assistant.pipeline.stages import BUILTIN_STAGES

    GateStage.reset()
    monkeypatch.setattr(plugins, "discover_stage_factories", lambda: {**BUILTIN_STAGES, "gate": GateStage})
    settings = Settings(
        database_url=database_url,
        pipeline=[*DEFAULT_PIPELINE, "gate"],
        api=ApiConfig(auth="off", max_symbols_in_flight=1, max_queued_runs=0),
    )
    try:
        async with serve(create_app(settings, resume_on_startup=False)) as svc:
            busy = await svc.client.post("/process", json={"symbols": ["BREW.SIM"]})
            assert busy.status_code == 202
            await GateStage.wait_entered(1)  # the one slot is taken

            resp = await svc.client.post(
                "/ingest", json=mixed_batch(), headers={"X-Correlation-ID": "corr_ingest_busy"}
            )
            assert resp.status_code == 200  # the items themselves are stored: read processing
            body = resp.json()
            assert outcome_tuples(body["items"]) == EXPECTED
            assert body["processing"]["status"] == "deferred" and body["processing"]["run_id"] is None
            assert int(resp.headers["Retry-After"]) == body["processing"]["retry_after_s"] >= 1
            assert [body["items"][i]["processing"] for i in (0, 1, 3)] == ["deferred"] * 3
            # Nothing lost: stored and remembered anyway; no run was recorded for the ingest.
            assert len(await _stored_keys(database_url)) == 4
            assert {b: len(v) for b, v in (await _memories(settings)).items()} == {
                "signals": 1,
                "market_events": 2,
            }
            assert len((await svc.client.get("/runs")).json()) == 1

            GateStage.opened.set()
            await _finished(svc.client, busy.json()["runId"])
            again = (
                await svc.client.post(
                    "/ingest", json=mixed_batch(), headers={"X-Correlation-ID": "corr_ingest_later"}
                )
            ).json()
            assert [i["status"] for i in again["items"][:4]] == ["duplicate"] * 4
            assert [again["items"][i]["processing"] for i in (0, 1, 3)] == ["started"] * 3
            processing = again["processing"]
            assert processing["symbols"] == SIGNIFICANT_SYMBOLS and processing["events"] == 3
            run = await _finished(svc.client, processing["run_id"])
            assert run["correlationId"] == "corr_ingest_later" and run["status"] == "completed"
            # Carried once: a third send starts nothing.
            third = (await svc.client.post("/ingest", json=mixed_batch())).json()
            assert third["processing"] is None
    finally:
        GateStage.opened.set()
