"""Start-up resume: runs a stopped or crashed service left ``running`` are finished by the next one."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import uvicorn
from tests.api.helpers import SIM_SYMBOLS, GateStage, read_sse, serve, wait_for_run

from jax_assistant.api import create_app
from jax_assistant.api.runs import RunManager
from jax_assistant.api.server import ServingServer
from jax_assistant.config import Settings
from jax_assistant.domain import Run, RunStatus, SymbolResult
from jax_assistant.orchestrator import Orchestrator, RunRequest, new_run_id


async def interrupted_run_without_results(settings: Settings) -> Run:
    """A run row left ``running`` with no symbol results: the process died right after creating it."""
    async with Orchestrator(settings) as orch:
        assert orch.repository is not None
        provider = orch.provider()
        run = Run(
            id=new_run_id(),
            correlation_id="flow-interrupted-1",
            as_of=provider.latest_date(),
            provider=provider.name,
            simulated=provider.simulated,
            symbols=list(SIM_SYMBOLS),
            pipeline=list(settings.pipeline),
            params={
                "accountSize": settings.account_size,
                "riskPercent": settings.risk_percent,
                "lookback": 1,
                "provider": provider.name,
                "dataPath": None,
                "stageOverrides": {},
                "unknownSymbols": [],
            },
        )
        assert await orch.repository.create_run(run)
        assert await orch.repository.get_symbol_results(run.id) == []
    return run


async def test_startup_resumes_a_run_left_running(settings: Settings) -> None:
    run = await interrupted_run_without_results(settings)
    async with serve(create_app(settings)) as svc:
        done = await wait_for_run(svc.client, run.id)
        assert done["run"]["status"] == "completed"
        assert done["run"]["counts"]["symbols"] == len(SIM_SYMBOLS)
        assert sorted(r["symbol"] for r in done["symbols"]) == sorted(SIM_SYMBOLS)
        assert all(r["status"] == "succeeded" for r in done["symbols"])
        # The resumed work is audited under the run's own correlation id.
        audit = (await svc.client.get("/audit", params={"correlation_id": "flow-interrupted-1"})).json()
        assert "run.finished" in [e["action"] for e in audit]
        deadline = time.monotonic() + 10
        while (resume := (await svc.client.get("/status")).json()["runs"]["startupResume"])[
            "state"
        ] != "done":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert resume["runIds"] == [run.id] and resume["finished"] == [run.id]


async def test_startup_resumes_a_run_killed_mid_flight(settings: Settings) -> None:
    """A run cancelled hard after its first symbol: finished symbols are kept, the rest resume."""
    # One symbol at a time: in parallel, the symbols' final writes share one group commit and all
    # finish together before the kill lands.
    settings = settings.model_copy(update={"engine": settings.engine.model_copy(update={"concurrency": 1})})
    async with Orchestrator(settings) as orch:
        finished: list[SymbolResult] = []
        task: asyncio.Task[object]

        class KillAfterFirst:
            def started(self, total: int) -> None:
                pass

            def symbol_done(self, result: SymbolResult) -> None:
                finished.append(result)
                task.cancel()

        request = RunRequest(symbols=list(SIM_SYMBOLS), run_id=new_run_id(), correlation_id="flow-killed")
        task = asyncio.create_task(orch.start_run(request, progress=KillAfterFirst()))
        await asyncio.gather(task, return_exceptions=True)
        assert finished
        assert orch.repository is not None
        assert request.run_id is not None
        stored = await orch.repository.get_run(request.run_id)
        assert stored is not None and stored.status is RunStatus.INTERRUPTED
        kept = {
            r.symbol for r in await orch.repository.get_symbol_results(request.run_id) if r.status.terminal
        }
        assert 0 < len(kept) < len(SIM_SYMBOLS)

    async with serve(create_app(settings)) as svc:
        events = await read_sse(svc.client, f"/runs/{request.run_id}/events")
        assert [n for n, _ in events] == ["symbol"] * len(SIM_SYMBOLS) + ["run"]
        assert events[-1][1]["status"] == "completed"
        done = await wait_for_run(svc.client, request.run_id)
        assert done["run"]["counts"]["symbols"] == len(SIM_SYMBOLS)
        assert {r["symbol"] for r in done["symbols"]} == set(SIM_SYMBOLS)


async def test_no_resume_leaves_the_run_alone(settings: Settings) -> None:
    run = await interrupted_run_without_results(settings)
    async with serve(create_app(settings, resume_on_startup=False)) as svc:
        await asyncio.sleep(0.3)
        body = (await svc.client.get(f"/runs/{run.id}")).json()
        assert body["run"]["status"] == "interrupted" and body["symbols"] == []
        status = (await svc.client.get("/status")).json()
        assert status["runs"]["startupResume"]["state"] == "disabled"
        assert status["activeRuns"] == {}


async def test_a_run_cut_by_shutdown_is_finished_by_the_next_start(gated_settings: Settings) -> None:
    """Stopping the service mid-run leaves the run resumable (not cancelled); the next start ends it."""
    async with serve(create_app(gated_settings)) as svc:
        resp = await svc.client.post(
            "/process", json={"symbols": list(SIM_SYMBOLS)}, headers={"X-Flow-ID": "f-1"}
        )
        run_id = resp.json()["runId"]
        await GateStage.wait_entered(len(SIM_SYMBOLS))
    # Server stopped with every symbol still at the gate.
    async with Orchestrator(gated_settings) as orch:
        assert orch.repository is not None
        stored = await orch.repository.get_run(run_id)
        assert stored is not None and stored.status is RunStatus.INTERRUPTED

    GateStage.opened.set()
    async with serve(create_app(gated_settings)) as svc:
        done = await wait_for_run(svc.client, run_id)
        assert done["run"]["status"] == "completed"
        assert done["run"]["correlationId"] == "f-1"
        assert done["run"]["counts"]["succeeded"] == len(SIM_SYMBOLS)


async def test_shutdown_in_the_middle_of_database_writes_does_not_hang(settings: Settings) -> None:
    """Stopping while symbols are being written must leave no task that blocks the loop from closing."""
    async with serve(create_app(settings)) as svc:
        posts = [await svc.client.post("/process", json={}) for _ in range(3)]
        run_ids = [p.json()["runId"] for p in posts]
        # Stop as soon as results are being stored: the cancel then lands inside SQLite writes.
        async with asyncio.timeout(20):
            while True:
                if (await svc.client.get(f"/runs/{run_ids[0]}")).json()["symbols"]:
                    break
                await asyncio.sleep(0.005)
    stuck = [
        t
        for t in asyncio.all_tasks()
        if not t.done() and getattr(t.get_coro(), "__qualname__", "").endswith("_terminate_graceful_close")
    ]
    assert stuck == []

    # And the runs it cut short are finished by the next start.
    async with serve(create_app(settings)) as svc:
        for run_id in run_ids:
            done = await wait_for_run(svc.client, run_id)
            assert done["run"]["status"] == "completed"
            assert done["run"]["counts"]["symbols"] == 20


async def test_resume_waits_until_the_port_is_bound(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`jax serve`'s server: a service whose port is taken never even looks for runs to resume; one
    that binds resumes the interrupted run."""
    run = await interrupted_run_without_results(settings)
    scans: list[int] = []
    original = RunManager.resume_interrupted

    async def counted(self: RunManager) -> list[str]:
        scans.append(1)
        return await original(self)

    monkeypatch.setattr(RunManager, "resume_interrupted", counted)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=taken.getsockname()[1], log_config=None
        )
        with pytest.raises(SystemExit):
            await ServingServer(config).serve()
    assert scans == []
    async with Orchestrator(settings) as orch:
        assert orch.repository is not None
        stored = await orch.repository.get_run(run.id)
        assert stored is not None and stored.status is RunStatus.INTERRUPTED
        assert await orch.repository.get_symbol_results(run.id) == []

    server = ServingServer(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_config=None))
    task = asyncio.create_task(server.serve())
    try:
        async with Orchestrator(settings) as orch:
            assert orch.repository is not None
            deadline = time.monotonic() + 30
            while (stored := await orch.repository.get_run(run.id)) is None or stored.status is not (
                RunStatus.COMPLETED
            ):
                assert time.monotonic() < deadline and not task.done()
                await asyncio.sleep(0.05)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)
    assert scans == [1]


async def test_the_stream_of_an_interrupted_run_ends_with_that_status(settings: Settings) -> None:
    """Nothing executes a run whose lease expired: its SSE stream ends instead of polling forever."""
    run = await interrupted_run_without_results(settings)
    async with serve(create_app(settings, resume_on_startup=False)) as svc:
        events = await asyncio.wait_for(read_sse(svc.client, f"/runs/{run.id}/events"), 10)
        assert [name for name, _ in events] == ["run"]
        assert events[0][1]["status"] == "interrupted"
        listed = (await svc.client.get("/runs")).json()
        assert [(r["id"], r["status"]) for r in listed] == [(run.id, "interrupted")]
