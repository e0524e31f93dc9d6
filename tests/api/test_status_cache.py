"""/status and /health answer cached bytes (api/cached.py), yet show every change at once: the body is
built again when a version or the second of uptime changes, and per request while a run executes.
(/health turning degraded at once: tests/api/test_routes.py.)"""

from __future__ import annotations

from tests.api.helpers import SIM_SYMBOLS, GateStage, serve, wait_for_admission_drained, wait_for_run

from jax_assistant.api import create_app
from jax_assistant.config import Settings
from jax_assistant.learning import service as learning


async def test_status_is_the_same_bytes_until_something_changes_then_shows_it(settings: Settings) -> None:
    async with serve(create_app(settings)) as svc:
        client = svc.client
        first = await client.get("/status")
        again = await client.get("/status")
        assert first.headers["content-type"] == "application/json"
        body = first.json()
        if body["uptime"] == again.json()["uptime"]:  # same second: nothing else changed
            assert again.content == first.content
        assert body["uptime"] == int(body["uptime"]) and isinstance(body["uptime"], float)

        # Admission changes (a version) and learning's block (a small snapshot) show at once.
        admission = svc.app.state.admission
        ticket = admission.admit(3)
        assert (await client.get("/status")).json()["admission"]["symbolsInFlight"] == 3
        ticket.release()
        assert (await client.get("/status")).json()["admission"]["symbolsInFlight"] == 0
        saved = dict(learning.last_reflection)
        try:
            learning.last_reflection.update(at="2026-01-02T00:00:00+00:00", asOf="2026-01-02", beliefs=7)
            assert (await client.get("/status")).json()["learning"]["beliefs"] == 7
        finally:
            learning.last_reflection.update(saved)


async def test_status_follows_a_running_run_stage_by_stage(gated_settings: Settings) -> None:
    async with serve(create_app(gated_settings)) as svc:
        client = svc.client
        assert (await client.get("/status")).json()["activeRuns"] == {}  # cached while idle
        symbols = list(SIM_SYMBOLS[:2])
        run_id = (await client.post("/process", json={"symbols": symbols})).json()["runId"]
        await GateStage.wait_entered(len(symbols))
        status = (await client.get("/status")).json()
        assert status["activeRuns"][run_id]["stageInFlight"]["gate"] == len(symbols)
        # A symbol entering a stage bumps no version: while a run executes, every request builds.
        engine = svc.app.state.orchestrator.active[run_id]
        engine.status.stage_in_flight["next"] = 1
        status = (await client.get("/status")).json()
        assert status["activeRuns"][run_id]["stageInFlight"]["next"] == 1
        del engine.status.stage_in_flight["next"]
        GateStage.opened.set()
        await wait_for_run(client, run_id)
        await wait_for_admission_drained(client)  # the run's place is freed when its task ends
        status = (await client.get("/status")).json()
        assert status["activeRuns"] == {} and status["inFlight"] == 0
