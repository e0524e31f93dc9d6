"""`[api] executor = "process"`: runs execute in an executor process, against a real uvicorn on loopback.

The gate stage here is file-driven (tests/api/helpers.FileGateStage): the executor is another process.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.api.helpers import (
    SIM_SYMBOLS,
    FileFlakyStage,
    FileGateStage,
    file_stage_factories,
    install_file_gate,
    read_sse,
    serve,
    wait_for_files,
    wait_for_run,
)

from jax_assistant.api import create_app
from jax_assistant.api.runs import RunManager
from jax_assistant.config import DEFAULT_PIPELINE, EngineConfig, Settings
from jax_assistant.domain import RunStatus
from jax_assistant.orchestrator import Orchestrator
from jax_assistant.pipeline import plugins

pytestmark = pytest.mark.slow  # each test starts an executor process (imports, database open)


@pytest.fixture
def process_settings(database_url: str) -> Settings:
    return Settings.model_validate(
        {"database_url": database_url, "metrics_enabled": True, "api": {"executor": "process"}}
    )


@pytest.fixture
def gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The gate's folder; the ``gate`` stage is installed here (the API validates the pipeline) and,
    through ``executor_setup``, in the executor."""
    folder = tmp_path / "gate"
    folder.mkdir()
    monkeypatch.setattr(FileGateStage, "folder", str(folder))
    monkeypatch.setattr(FileFlakyStage, "folder", str(folder))
    factories = file_stage_factories(str(folder))
    monkeypatch.setattr(plugins, "discover_stage_factories", lambda: factories)
    return folder


@pytest.fixture
def gated_process_settings(database_url: str) -> Settings:
    return Settings.model_validate(
        {
            "database_url": database_url,
            "pipeline": [*DEFAULT_PIPELINE, "gate"],
            "api": {"executor": "process"},
            # Short leases so a run an executor left behind would also be found by expiry.
            "storage": {"lease_ttl_s": 3.0, "heartbeat_s": 0.5},
        }
    )


async def wait_for_resumed_run(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """Like wait_for_run, but through ``interrupted``: between its executor's end and the resume's
    claim a handed-back run reads interrupted (no lease), which is not its end here."""
    async with asyncio.timeout(60):
        while (done := await wait_for_run(client, run_id))["run"]["status"] == "interrupted":  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return done


def executor_pid(runs: RunManager) -> int:
    assert runs.executor is not None and runs.executor.pid is not None
    return runs.executor.pid


async def test_a_run_executes_in_the_executor_process_with_its_stream(process_settings: Settings) -> None:
    async with serve(create_app(process_settings)) as svc:
        runs: RunManager = svc.app.state.runs
        pid = executor_pid(runs)
        assert pid != os.getpid()
        resp = await svc.client.post("/process", json={"symbols": list(SIM_SYMBOLS)})
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["runId"]
        events = await read_sse(svc.client, f"/runs/{run_id}/events")
        assert sorted(d["symbol"] for e, d in events if e == "symbol") == sorted(SIM_SYMBOLS)
        assert events[-1][0] == "run" and events[-1][1]["status"] == "completed"
        done = await wait_for_run(svc.client, run_id)
        assert all(r["status"] == "succeeded" for r in done["symbols"])
        # Nothing executed on the request loop: this process never had an engine for it.
        assert runs.orchestrator.engine is None
        status = (await svc.client.get("/status")).json()
        assert status["runs"]["executor"] == {"mode": "process", "pid": pid, "ready": True, "restarts": 0}
        # /status shows the executor's breakers and limiters (its snapshot may be replaced by a newer
        # one between the two reads: compared again then).
        assert runs.executor is not None
        async with asyncio.timeout(5):
            while status["resilience"] != runs.executor.status["resilience"]:
                await asyncio.sleep(0.05)
                status = (await svc.client.get("/status")).json()
        # Lower CPU priority than the API, on the API's own cores (never moved elsewhere).
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(os.getpriority(os.PRIO_PROCESS, 0) + 10, 19)
        assert os.sched_getscheduler(pid) == os.SCHED_OTHER  # api.executor_sched defaults to nice
        assert os.sched_getaffinity(pid) == os.sched_getaffinity(0)
        metrics = await svc.client.get("/metrics")
        assert metrics.status_code == 200
        # The pipeline metrics live in the executor: its stage histograms reach /metrics.
        assert 'stage="detect_events"' in metrics.text


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
async def test_an_idle_policy_executor_runs_every_thread_under_sched_idle(database_url: str) -> None:
    settings = Settings.model_validate(
        {"database_url": database_url, "api": {"executor": "process", "executor_sched": "idle"}}
    )
    async with serve(create_app(settings)) as svc:
        pid = executor_pid(svc.app.state.runs)
        resp = await svc.client.post("/process", json={"symbols": list(SIM_SYMBOLS)})
        assert resp.status_code == 202, resp.text
        done = await wait_for_run(svc.client, resp.json()["runId"])
        assert done["run"]["status"] == "completed"
        # Every thread: those its imports started (polars, jemalloc) and those it started since.
        threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        assert len(threads) > 1
        assert {os.sched_getscheduler(t) for t in threads} == {os.SCHED_IDLE}
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the API process keeps its own


def test_an_idle_policy_that_cannot_be_set_leaves_the_nice_level(monkeypatch: pytest.MonkeyPatch) -> None:
    from jax_assistant.service import executor

    def refuse(pid: int, policy: int, param: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    assert executor._sched_idle() == "[Errno 1] Operation not permitted"


async def test_process_mode_decides_as_inline_mode(settings: Settings, process_settings: Settings) -> None:
    """Same request, same data: the stored decisions are the same whichever process executed them."""

    async def decisions(app_settings: Settings) -> list[dict[str, object]]:
        async with serve(create_app(app_settings)) as svc:
            resp = await svc.client.post("/process", json={"symbols": list(SIM_SYMBOLS)})
            run_id = resp.json()["runId"]
            await wait_for_run(svc.client, run_id)
            trades = (await svc.client.get("/trades", params={"runId": run_id, "limit": 1000})).json()
        return sorted(
            ({k: v for k, v in t.items() if k not in ("id", "runId", "createdAt")} for t in trades),
            key=repr,
        )

    inline = await decisions(settings)
    assert inline  # the sample data yields setups, or this compares nothing
    assert await decisions(process_settings) == inline


async def test_cancel_mid_run_is_forwarded_to_the_executor(
    gated_process_settings: Settings, gate: Path
) -> None:
    # One symbol at a time: the first waits at the gate, the other three are still queued.
    settings = gated_process_settings.model_copy(update={"engine": EngineConfig(concurrency=1, queue_size=1)})
    app = create_app(settings, executor_setup=functools.partial(install_file_gate, str(gate)))
    async with serve(app) as svc:
        resp = await svc.client.post("/process", json={"symbols": list(SIM_SYMBOLS)})
        run_id = resp.json()["runId"]
        await wait_for_files(gate, "entered-*", 1)
        # The executor's engines are shown by /status (its snapshot arrives within STATUS_INTERVAL_S).
        async with asyncio.timeout(5):
            while run_id not in (await svc.client.get("/status")).json()["activeRuns"]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        cancel = await svc.client.post(f"/runs/{run_id}/cancel")
        assert cancel.status_code == 202, cancel.text
        (gate / "open").touch()  # the in-flight stages finish (drain), the rest end cancelled
        done = await wait_for_run(svc.client, run_id)
        assert done["run"]["status"] == "cancelled"
        statuses = sorted(s["status"] for s in done["symbols"])
        assert statuses.count("cancelled") >= 2, statuses
        assert len(list(gate.glob("entered-*"))) < len(SIM_SYMBOLS)  # noqa: ASYNC240
        again = await svc.client.post(f"/runs/{run_id}/cancel")
        assert again.status_code == 409 and "already ended (cancelled)" in again.json()["error"]


async def test_a_killed_executor_is_restarted_and_its_run_resumed(
    gated_process_settings: Settings, gate: Path
) -> None:
    app = create_app(gated_process_settings, executor_setup=functools.partial(install_file_gate, str(gate)))
    async with serve(app) as svc:
        runs: RunManager = svc.app.state.runs
        first = executor_pid(runs)
        resp = await svc.client.post("/process", json={"symbols": list(SIM_SYMBOLS)})
        run_id = resp.json()["runId"]
        await wait_for_files(gate, "entered-*", len(SIM_SYMBOLS))
        os.kill(first, signal.SIGKILL)
        # The API process notices, marks the run interrupted (lease released) and starts a new executor.
        async with asyncio.timeout(30):
            while runs.executor is None or runs.executor.restarts < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert executor_pid(runs) != first
        (gate / "open").touch()
        done = await wait_for_resumed_run(svc.client, run_id)
        assert done["run"]["status"] == "completed"
        assert done["run"]["counts"]["succeeded"] == len(SIM_SYMBOLS)
        assert run_id in runs.resume_state["runIds"]


async def test_shutdown_drains_the_executor_and_the_next_start_finishes_the_run(
    gated_process_settings: Settings, gate: Path
) -> None:
    setup = functools.partial(install_file_gate, str(gate))
    async with serve(create_app(gated_process_settings, executor_setup=setup)) as svc:
        runs: RunManager = svc.app.state.runs
        resp = await svc.client.post("/process", json={"symbols": list(SIM_SYMBOLS)})
        run_id = resp.json()["runId"]
        await wait_for_files(gate, "entered-*", 1)
        proc = runs.executor.process if runs.executor is not None else None
    # Stopped with symbols at the gate: the executor drained (its deadline), exited and left the run
    # resumable, its lease released.
    assert proc is not None and not proc.is_alive()
    async with Orchestrator(gated_process_settings) as orch:
        assert orch.repository is not None
        stored = await orch.repository.get_run(run_id)
        assert stored is not None and stored.status is RunStatus.INTERRUPTED
        assert await orch.repository.lease_of(run_id) == (None, None)
    (gate / "open").touch()
    async with serve(create_app(gated_process_settings, executor_setup=setup)) as svc:
        done = await wait_for_run(svc.client, run_id)
        assert done["run"]["status"] == "completed"
        assert done["run"]["counts"]["succeeded"] == len(SIM_SYMBOLS)


async def test_runs_queued_at_shutdown_stay_resumable(gated_process_settings: Settings, gate: Path) -> None:
    """A run still waiting for its admission place when the service stops is not handed to a stopping
    executor and recorded failed: it stays `running` with no lease, for the next start-up."""
    settings = gated_process_settings.model_copy(
        update={"api": gated_process_settings.api.model_copy(update={"max_symbols_in_flight": 1})}
    )
    setup = functools.partial(install_file_gate, str(gate))
    async with serve(create_app(settings, executor_setup=setup)) as svc:
        first = (await svc.client.post("/process", json={"symbols": ["ACME.SIM"]})).json()["runId"]
        queued = (await svc.client.post("/process", json={"symbols": ["BOLT.SIM"]})).json()["runId"]
        await wait_for_files(gate, "entered-*", 1)
        assert (await svc.client.get("/status")).json()["admission"]["queuedRuns"] == 1
    async with Orchestrator(settings) as orch:
        assert orch.repository is not None
        for run_id in (first, queued):
            stored = await orch.repository.get_run(run_id)
            assert stored is not None and stored.status is RunStatus.INTERRUPTED, run_id
            assert await orch.repository.lease_of(run_id) == (None, None)


async def test_a_dead_letter_retry_executes_in_the_executor(database_url: str, gate: Path) -> None:
    settings = Settings.model_validate(
        {
            "database_url": database_url,
            "pipeline": [*DEFAULT_PIPELINE, "flaky"],
            "api": {"executor": "process"},
        }
    )
    app = create_app(settings, executor_setup=functools.partial(install_file_gate, str(gate)))
    async with serve(app) as svc:
        run_id = (await svc.client.post("/process", json={"symbols": list(SIM_SYMBOLS[:2])})).json()["runId"]
        done = await wait_for_run(svc.client, run_id)
        assert {s["status"] for s in done["symbols"]} == {"failed"}
        letters = (await svc.client.get("/dead-letters")).json()
        assert [d["symbol"] for d in letters] == list(SIM_SYMBOLS[:2])
        (gate / "ok").touch()  # the dependency is back
        resp = await svc.client.post(f"/dead-letters/{letters[0]['id']}/retry")
        assert resp.status_code == 202, resp.text
        retried = await wait_for_run(svc.client, resp.json()["runId"])
        assert retried["run"]["status"] == "completed"
        assert retried["run"]["params"]["retryOf"] == run_id
        resolved = (await svc.client.get("/dead-letters", params={"status": "resolved"})).json()
        assert [d["id"] for d in resolved] == [letters[0]["id"]]


async def test_a_sigterm_to_the_executor_drains_it_and_the_run_is_resumed(
    gated_process_settings: Settings, gate: Path
) -> None:
    """A group-wide SIGTERM (systemd, a container stop) reaches the executor too: it drains (exit code
    0, not killed by the signal) instead of dying mid-stage, and the API restarts and resumes."""
    app = create_app(gated_process_settings, executor_setup=functools.partial(install_file_gate, str(gate)))
    async with serve(app) as svc:
        runs: RunManager = svc.app.state.runs
        assert runs.executor is not None and runs.executor.process is not None
        first = runs.executor.process
        resp = await svc.client.post("/process", json={"symbols": list(SIM_SYMBOLS)})
        run_id = resp.json()["runId"]
        await wait_for_files(gate, "entered-*", 1)
        (gate / "open").touch()  # the in-flight stages finish within the drain
        os.kill(first.pid or 0, signal.SIGTERM)
        async with asyncio.timeout(30):
            while runs.executor.restarts < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert first.exitcode == 0
        done = await wait_for_resumed_run(svc.client, run_id)
        assert done["run"]["status"] == "completed"
        assert done["run"]["counts"]["succeeded"] == len(SIM_SYMBOLS)
