"""Admission and run leases across two service instances on one database (SQLite and PostgreSQL):
a queued run stays owned by the instance that accepted it however long it waits, and runs resumed at
start-up count against the same global cap as new ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.api.helpers import SIM_SYMBOLS, GateStage, serve, wait_for_admission_drained, wait_for_run
from tests.api.test_resume import interrupted_run_without_results
from tests.pgutil import backend_url

from jax_assistant.api import create_app
from jax_assistant.config import DEFAULT_PIPELINE, ApiConfig, EngineConfig, Settings, StorageConfig
from jax_assistant.orchestrator import Orchestrator
from jax_assistant.pipeline import plugins
from jax_assistant.pipeline.stages import BUILTIN_STAGES

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
TTL_S = 0.6  # short, so "queued longer than the lease TTL" takes a second, not a minute


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with backend_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def gated(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    GateStage.reset()
    monkeypatch.setattr(plugins, "discover_stage_factories", lambda: {**BUILTIN_STAGES, "gate": GateStage})
    yield Settings(
        database_url=db_url,
        pipeline=[*DEFAULT_PIPELINE, "gate"],
        api=ApiConfig(auth="off", max_symbols_in_flight=1, max_queued_runs=4),
        engine=EngineConfig(concurrency=8),
        storage=StorageConfig(lease_ttl_s=TTL_S, heartbeat_s=0.1),
    )
    GateStage.opened.set()


async def test_a_run_queued_past_the_lease_ttl_is_not_taken_by_another_instance(gated: Settings) -> None:
    async with serve(create_app(gated)) as first:
        running = await first.client.post("/process", json={"symbols": [SIM_SYMBOLS[0]]})
        assert running.status_code == 202
        await GateStage.wait_entered(1)
        queued = await first.client.post("/process", json={"symbols": [SIM_SYMBOLS[1]]})
        assert queued.status_code == 202
        queued_id = queued.json()["runId"]
        assert (await first.client.get("/status")).json()["admission"]["queuedRuns"] == 1

        await asyncio.sleep(TTL_S * 3)  # queued three lease lifetimes
        # A second instance on the same database (its own lease owner) starts up and looks for
        # interrupted runs: the queued one is not among them, and its lease cannot be taken.
        async with Orchestrator(gated) as other:
            assert queued_id not in {r.id for r in await other.interrupted_runs()}
            assert not await other.claim_run(queued_id)
        async with serve(create_app(gated)) as second:
            await asyncio.sleep(0.3)
            resume = (await second.client.get("/status")).json()["runs"]["startupResume"]
            assert queued_id not in resume["runIds"]
        listed = (await first.client.get(f"/runs/{queued_id}")).json()
        assert listed["run"]["status"] == "running"  # queued, not "interrupted"

        GateStage.opened.set()
        for resp in (running, queued):
            done = await wait_for_run(first.client, resp.json()["runId"])
            assert done["run"]["status"] == "completed"


async def test_resumed_runs_hold_places_under_the_global_cap(gated: Settings) -> None:
    run = await interrupted_run_without_results(gated)  # four symbols, left `running` without a lease
    async with serve(create_app(gated)) as svc:
        # Its weight is clamped to the cap (as a new run's is), so all its symbols run.
        await GateStage.wait_entered(len(SIM_SYMBOLS))
        admission = (await svc.client.get("/status")).json()["admission"]
        assert admission["resumed"] == 1
        assert admission["symbolsInFlight"] == 1 and admission["symbolCap"] == 1
        # The cap is full with the resumed run: a new run waits instead of executing beside it.
        new = await svc.client.post("/process", json={"symbols": [SIM_SYMBOLS[0]]})
        assert new.status_code == 202
        assert (await svc.client.get("/status")).json()["admission"]["queuedRuns"] == 1
        await asyncio.sleep(0.2)
        assert GateStage.entered == len(SIM_SYMBOLS)  # the new run's symbol has not started

        GateStage.opened.set()
        for run_id in (run.id, new.json()["runId"]):
            done = await wait_for_run(svc.client, run_id)
            assert done["run"]["status"] == "completed"
        await wait_for_admission_drained(svc.client)  # both places freed once the runs' tasks end
