"""Admission control against a real uvicorn: a global cap on symbols in flight, a bounded run queue,
429/503 with Retry-After when full, and every accepted run completing."""

from __future__ import annotations

import asyncio

import pytest
from tests.api.helpers import SIM_SYMBOLS, GateStage, serve, wait_for_admission_drained, wait_for_run

from jax_assistant.api import create_app
from jax_assistant.api.runs import RunManager
from jax_assistant.config import ApiConfig, EngineConfig, Settings


def capped(gated: Settings, *, cap: int, queue: int) -> Settings:
    return gated.model_copy(
        update={
            "api": ApiConfig(auth="off", max_symbols_in_flight=cap, max_queued_runs=queue),
            "engine": EngineConfig(concurrency=8),
        }
    )


async def test_the_cap_holds_across_runs_and_a_full_queue_answers_429(gated_settings: Settings) -> None:
    async with serve(create_app(capped(gated_settings, cap=2, queue=1))) as svc:
        client = svc.client
        first = await client.post("/process", json={"symbols": list(SIM_SYMBOLS[:2])})
        assert first.status_code == 202
        await GateStage.wait_entered(2)
        second = await client.post("/process", json={"symbols": [SIM_SYMBOLS[2]]})
        assert second.status_code == 202  # accepted, waiting for capacity
        third = await client.post("/process", json={"symbols": [SIM_SYMBOLS[3]]})
        assert third.status_code == 429, third.text
        assert int(third.headers["Retry-After"]) >= 1
        assert third.json()["retryAfterS"] == int(third.headers["Retry-After"])
        assert "retry in" in third.json()["error"]

        status = (await client.get("/status")).json()["admission"]
        assert status["symbolsInFlight"] == 2 and status["symbolCap"] == 2
        assert status["queuedRuns"] == 1 and status["queueLimit"] == 1
        assert status["rejected"] == 1 and status["admitted"] == 2
        await asyncio.sleep(0.2)
        assert GateStage.entered == 2  # the queued run has not started a symbol beside the first

        # The refused request left no run behind.
        assert {r["id"] for r in (await client.get("/runs")).json()} == {
            first.json()["runId"],
            second.json()["runId"],
        }
        GateStage.opened.set()
        for accepted in (first, second):
            done = await wait_for_run(client, accepted.json()["runId"])
            assert done["run"]["status"] == "completed"
        await wait_for_admission_drained(client)  # both places freed once the runs' tasks end


async def test_a_burst_gets_429s_and_every_accepted_run_completes(gated_settings: Settings) -> None:
    async with serve(create_app(capped(gated_settings, cap=2, queue=3))) as svc:
        client = svc.client
        burst = await asyncio.gather(
            *(client.post("/process", json={"symbols": [SIM_SYMBOLS[i % 4]]}) for i in range(12))
        )
        codes = sorted(r.status_code for r in burst)
        assert codes.count(202) == 5 and codes.count(429) == 7  # 2 executing + 3 queued
        assert all(int(r.headers["Retry-After"]) >= 1 for r in burst if r.status_code == 429)
        GateStage.opened.set()
        for resp in burst:
            if resp.status_code == 202:
                done = await wait_for_run(client, resp.json()["runId"])
                assert done["run"]["status"] == "completed"
        assert len((await client.get("/runs")).json()) == 5


async def test_a_service_shutting_down_answers_503(gated_settings: Settings) -> None:
    GateStage.opened.set()
    async with serve(create_app(capped(gated_settings, cap=4, queue=4))) as svc:
        svc.app.state.admission.close()  # what the lifespan does first on shutdown
        resp = await svc.client.post("/process", json={"symbols": [SIM_SYMBOLS[0]]})
        assert resp.status_code == 503
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await svc.client.get("/runs")).json() == []


async def test_a_full_queue_refuses_before_validating(
    gated_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a burst a refusal costs no validation: with the queue full, a request is answered 429 before
    its symbols are resolved (even an invalid one, which a place would have answered 400)."""
    async with serve(create_app(capped(gated_settings, cap=1, queue=1))) as svc:
        client = svc.client
        assert (await client.post("/process", json={"symbols": [SIM_SYMBOLS[0]]})).status_code == 202
        await GateStage.wait_entered(1)
        assert (await client.post("/process", json={"symbols": [SIM_SYMBOLS[1]]})).status_code == 202
        prepared: list[object] = []
        runs: RunManager = svc.app.state.runs
        original = runs.prepare
        monkeypatch.setattr(runs, "prepare", lambda request: prepared.append(request) or original(request))
        refused = await client.post("/process", json={"symbols": ["NOPE.SIM"]})
        assert refused.status_code == 429, refused.text
        assert prepared == []
        GateStage.opened.set()
