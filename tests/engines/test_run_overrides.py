"""Per-run stage policy overrides: RunRequest(stage_overrides=...) applies to that run (and to its
resume), never to the configured pipeline or to other runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tests.engines.helpers import FnStage, by_symbol, policy, stage_of

from jax_assistant.config import Settings
from jax_assistant.domain import RunStatus, StageStatus, SymbolResult, SymbolStatus
from jax_assistant.orchestrator import Orchestrator, RunRequest
from jax_assistant.pipeline.base import StageContext, WorkItem

SYMBOLS = ["ACME.SIM", "BOLT.SIM"]


async def takes_a_while(ctx: StageContext, item: WorkItem) -> None:
    await asyncio.sleep(0.3)


class CancelOnStart:
    """A progress sink that cancels the run as soon as it starts (nothing gets to run)."""

    def __init__(self, orch: Orchestrator) -> None:
        self.orch = orch

    def started(self, total: int) -> None:
        assert self.orch.engine is not None
        self.orch.engine.cancel()

    def symbol_done(self, result: SymbolResult) -> None:
        pass


async def test_stage_overrides_change_the_timeout_for_that_run_only(
    register_stages: Callable[..., None], tmp_path: Path
) -> None:
    register_stages(
        x=lambda: FnStage("x", takes_a_while, policy(timeout_s=30.0, required=False, after=["detect_events"]))
    )
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}",
        pipeline=["detect_events", "x"],
        stages={"x": {"retry": {"attempts": 1}}},
        metrics_enabled=False,
    )
    overrides = {"x": {"timeout_s": 0.01}}
    async with Orchestrator(settings) as orch:
        short = await orch.start_run(RunRequest(symbols=SYMBOLS, stage_overrides=overrides))
        normal = await orch.start_run(RunRequest(symbols=SYMBOLS))

        # The override is stored with the run, so resuming it applies it again.
        interrupted = await orch.start_run(
            RunRequest(symbols=SYMBOLS, stage_overrides=overrides), progress=CancelOnStart(orch)
        )
        assert interrupted.run.status is RunStatus.CANCELLED
        resumed = await orch.resume_run(interrupted.run.id)

        assert [s.policy.timeout_s for s in orch.stages() if s.name == "x"] == [30.0]

    assert short.run.params["stageOverrides"] == overrides
    for outcome in (short, resumed):
        for r in outcome.results:
            x = stage_of(r, "x")
            assert x.status is StageStatus.TIMED_OUT and x.error == "exceeded its 0.01s timeout"
            assert r.status is SymbolStatus.DEGRADED
    assert normal.run.params["stageOverrides"] == {}
    for r in by_symbol(normal.results).values():
        assert stage_of(r, "x").status is StageStatus.OK and r.status is SymbolStatus.SUCCEEDED
    assert settings.stages == {"x": {"retry": {"attempts": 1}}}  # the configuration is untouched


async def test_overrides_merge_onto_configured_policy(
    register_stages: Callable[..., None], tmp_path: Path
) -> None:
    register_stages(x=lambda: FnStage("x", policy=policy(timeout_s=30.0, after=["detect_events"])))
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}",
        pipeline=["detect_events", "x"],
        stages={"x": {"required": False, "retry": {"attempts": 4, "initial_backoff_s": 0.5}}},
        metrics_enabled=False,
    )
    async with Orchestrator(settings) as orch:
        (x,) = [s for s in orch.stages({"x": {"timeout_s": 2.0, "retry": {"attempts": 2}}}) if s.name == "x"]
        (plain,) = [s for s in orch.stages() if s.name == "x"]
    assert (x.policy.timeout_s, x.policy.required, x.policy.retry.attempts) == (2.0, False, 2)
    assert x.policy.retry.initial_backoff_s == 0.5  # the configured part the run did not override
    assert x.policy.after == ["detect_events"]  # the stage's own default
    assert (plain.policy.timeout_s, plain.policy.retry.attempts) == (30.0, 4)
