"""Cancellation (drain) and resume.

``engine.cancel()`` stops taking new symbols; stages already running finish, their symbols end
``cancelled`` at the next stage boundary, the rest end ``cancelled`` without starting, and the run is
``cancelled``. ``Orchestrator.resume_run`` then completes it from the checkpoints without duplicating
trades or audit records.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.engines.helpers import (
    TERMINAL,
    FnStage,
    by_symbol,
    make_engine,
    order_independent_constraints,
    policy,
    start,
)

from jax_assistant.config import EngineConfig, Settings
from jax_assistant.domain import RunStatus, StageStatus, SymbolStatus
from jax_assistant.engines.local import LocalEngine
from jax_assistant.orchestrator import Orchestrator, RunOutcome, RunRequest
from jax_assistant.pipeline.base import StageContext, WorkItem
from jax_assistant.pipeline.policy import BreakerConfig, RateLimitConfig, ResilienceConfig
from jax_assistant.pipeline.resilience import (
    BreakerState,
    CallNotPermittedError,
    FakeClock,
    ResilienceRegistry,
)
from jax_assistant.storage import Repository

# A drain that never ends would hang the test; fail it instead (a liveness guard, not a timing check).
HANG_GUARD_S = 20.0


class Gate:
    """A stage body that waits until the test opens the gate (only ``hold``, if given, has to wait),
    remembering who came through."""

    def __init__(self, hold: set[str] | None = None) -> None:
        self.open = asyncio.Event()
        self.hold = hold
        self.entered: list[str] = []
        self._arrived = asyncio.Event()

    async def __call__(self, ctx: StageContext, item: WorkItem) -> None:
        self.entered.append(item.symbol)
        self._arrived.set()
        if self.hold is None or item.symbol in self.hold:
            await self.open.wait()

    async def wait_for(self, n: int) -> None:
        async with asyncio.timeout(HANG_GUARD_S):
            while len(self.entered) < n:
                self._arrived.clear()
                await self._arrived.wait()


async def cancel_when_busy(
    engine: Callable[[], LocalEngine | None], gate: Gate, entered: int, busy: int
) -> None:
    """Cancel once ``entered`` symbols reached the gate (``busy`` of them waiting there), check the run
    waits for the in-flight ones, then open the gate."""
    await gate.wait_for(entered)
    current = engine()
    assert current is not None
    current.cancel()
    for _ in range(20):
        await asyncio.sleep(0)
    assert current.status.in_flight == busy  # draining: the in-flight stages are allowed to finish
    gate.open.set()


async def test_cancel_drains_in_flight_stages_and_cancels_the_rest(repository: Repository) -> None:
    gate = Gate()
    first, waiting, last = FnStage("first"), FnStage("gate", gate), FnStage("last")
    engine = make_engine(
        [first, waiting, last], repository=repository, concurrency=3, queue_size=2, drain_timeout_s=3600
    )
    symbols = [f"S{i}" for i in range(10)]
    run, starts = await start(engine, symbols)

    task = asyncio.create_task(engine.run(run, starts))
    await cancel_when_busy(lambda: engine, gate, entered=3, busy=3)
    async with asyncio.timeout(HANG_GUARD_S):
        run, results = await task

    assert run.status is RunStatus.CANCELLED
    got = by_symbol(results)
    assert sorted(got) == symbols and all(r.status is SymbolStatus.CANCELLED for r in results)
    assert run.counts["cancelled"] == 10 and run.counts["symbols"] == 10
    in_flight = set(gate.entered)
    assert len(in_flight) == 3 and set(first.calls) == in_flight and last.calls == []
    for sym in symbols:
        r = got[sym]
        if sym in in_flight:  # its running stage finished; it stopped at the next boundary
            assert [(s.stage, s.status) for s in r.stages] == [
                ("first", StageStatus.OK),
                ("gate", StageStatus.OK),
            ]
        else:
            assert r.stages == []
    assert engine.status.in_flight == 0

    stored = await repository.get_run(run.id)
    assert stored is not None and stored.status is RunStatus.CANCELLED
    assert {r.symbol: r.status for r in await repository.get_symbol_results(run.id)} == {
        s: SymbolStatus.CANCELLED for s in symbols
    }
    checkpoints = await repository.load_checkpoints(run.id)
    assert {s: [c.stage for c in rows] for s, rows in checkpoints.items()} == {
        s: ["first", "gate"] for s in in_flight
    }
    assert await repository.list_dead_letters(run_id=run.id, status=None) == []


async def test_cancel_before_any_work_cancels_every_symbol() -> None:
    stage = FnStage("only")
    engine = make_engine([stage], concurrency=2)
    run, starts = await start(engine, ["A", "B", "C"])
    engine.cancel()
    async with asyncio.timeout(HANG_GUARD_S):
        run, results = await engine.run(run, starts)
    assert run.status is RunStatus.CANCELLED and stage.calls == []
    assert [r.status for r in results] == [SymbolStatus.CANCELLED] * 3


class StuckClock(FakeClock):
    """Virtual time whose sleeps never end: whoever sleeps on it (the rate limiter) waits until cancelled."""

    def __init__(self) -> None:
        super().__init__(start=0.0)
        self.sleeping = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.sleeping.set()
        await asyncio.Event().wait()


async def test_cancelled_while_queued_at_the_rate_limiter_hands_the_breaker_trial_back() -> None:
    """A half-open breaker has a fixed budget of trial calls; a call cancelled before it was made (here:
    while waiting for the rate limiter when the drain window ran out) must return its permit, or the
    breaker (shared by every later run of the orchestrator) stays half-open and refuses every call."""
    clock = StuckClock()
    config = ResilienceConfig(
        breakers={
            "dep": BreakerConfig(
                sliding_window_size=1,
                minimum_number_of_calls=1,
                wait_duration_in_open_s=10.0,
                permitted_number_of_calls_in_half_open=1,
            )
        },
        rate_limits={"api": RateLimitConfig(limit=1, period_s=60.0)},
    )
    registry = ResilienceRegistry(config, clock)
    breaker = registry.breaker("dep")
    breaker.on_error(0.0, RuntimeError("down"))
    assert breaker.state is BreakerState.OPEN
    clock.advance(10.0)  # the next call is the half-open trial
    assert await registry.limiter("api").acquire() == 0.0  # the only grant of this minute is gone

    call = FnStage("dep_call", policy=policy(breaker="dep", rate_limit="api"))
    engine = make_engine([call], clock=clock, resilience=registry, drain_timeout_s=0.0)
    run, starts = await start(engine, ["A"])
    task = asyncio.create_task(engine.run(run, starts))
    async with asyncio.timeout(HANG_GUARD_S):
        await clock.sleeping.wait()  # queued at the limiter, holding the trial permit
        assert breaker.state is BreakerState.HALF_OPEN
        engine.cancel()
        run, results = await task

    assert run.status is RunStatus.CANCELLED and call.calls == []
    assert results[0].status is SymbolStatus.CANCELLED
    try:
        breaker.acquire()  # the trial permit is available again
    except CallNotPermittedError as exc:  # pragma: no cover - the failure being guarded against
        raise AssertionError(f"the cancelled call kept the breaker's only trial permit: {exc}") from None


# ----------------------------------------------------------------------------- resume after cancel


PIPELINE = ["detect_events", "gate", "generate_trades", "calculate_risk", "allocate", "persist"]


def _settings(url: str, concurrency: int, constraints: Path | None = None) -> Settings:
    return Settings(
        database_url=url,
        pipeline=PIPELINE,
        engine=EngineConfig(concurrency=concurrency, queue_size=2, drain_timeout_s=3600),
        risk_constraints_path=constraints,
        metrics_enabled=False,
    )


def _trades(outcome: RunOutcome) -> set[tuple[str, int, bool]]:
    return {(t.setup.id, t.risk.position_size, t.risk.allowed) for r in outcome.results for t in r.trades}


async def _reference(settings: Settings, register_stages: Callable[..., Any]) -> RunOutcome:
    """The same pipeline, uninterrupted (gate always open)."""
    always_open = Gate()
    always_open.open.set()
    register_stages(gate=lambda: FnStage("gate", always_open, policy(after=["detect_events"])))
    async with Orchestrator(settings) as orch:
        outcome = await orch.start_run(RunRequest())
    assert outcome.run.status is RunStatus.COMPLETED and _trades(outcome)
    return outcome


async def _cancel_then_resume(
    settings: Settings, gate: Gate, entered: int, busy: int, register_stages: Callable[..., Any]
) -> tuple[Orchestrator, RunOutcome, RunOutcome]:
    register_stages(gate=lambda: FnStage("gate", gate, policy(after=["detect_events"])))
    orch = Orchestrator(settings)
    await orch.open()
    task = asyncio.create_task(orch.start_run(RunRequest()))
    await cancel_when_busy(lambda: orch.engine, gate, entered, busy)
    async with asyncio.timeout(HANG_GUARD_S):
        cancelled = await task
    assert cancelled.run.status is RunStatus.CANCELLED
    assert any(r.status is SymbolStatus.CANCELLED for r in cancelled.results)
    resumed = await orch.resume_run(cancelled.run.id)
    return orch, cancelled, resumed


async def test_resume_after_cancel_completes_without_duplicates(
    database_url: str, register_stages: Callable[..., Any], tmp_path: Path
) -> None:
    # Three symbols in flight when cancelled. Portfolio limits off, so risk decisions do not depend on
    # the order symbols reach calculate_risk and the runs compare exactly.
    constraints = order_independent_constraints(tmp_path / "constraints.json")
    reference = await _reference(
        _settings(f"sqlite+aiosqlite:///{tmp_path / 'ref.db'}", 3, constraints), register_stages
    )
    gate = Gate()
    orch, cancelled, resumed = await _cancel_then_resume(
        _settings(database_url, 3, constraints), gate, 3, 3, register_stages
    )
    try:
        repo = orch.repository
        assert repo is not None
        run_id = cancelled.run.id
        assert all(r.status is SymbolStatus.CANCELLED for r in cancelled.results)
        assert len(cancelled.results) == len(reference.results) == 20
        assert not _trades(cancelled)

        assert resumed.run.id == run_id and resumed.run.status is RunStatus.COMPLETED
        got = by_symbol(resumed.results)
        ref = by_symbol(reference.results)
        assert sorted(got) == sorted(ref)
        assert all(r.status in TERMINAL for r in resumed.results)
        assert {s: r.status for s, r in got.items()} == {s: r.status for s, r in ref.items()}
        assert resumed.run.counts == reference.run.counts
        # The symbols that were in flight resumed after their last checkpoint: the gate ran once each.
        assert Counter(gate.entered) == Counter({s: 1 for s in got})
        for sym in gate.entered[:3]:
            assert [s.stage for s in got[sym].stages] == PIPELINE

        # The same trades as the uninterrupted run, each stored once.
        assert _trades(resumed) == _trades(reference)
        stored = await repo.list_trades(limit=10_000)
        assert sorted(t.setup.id for t in stored) == sorted(t[0] for t in _trades(reference))

        # Audit: one record per (symbol, stage); every symbol's final outcome is on record, once.
        audit = await repo.list_audit(run_id=run_id, limit=100_000)
        per_stage = Counter((a.payload["symbol"], a.action) for a in audit if a.action.startswith("stage."))
        assert set(per_stage.values()) == {1}
        assert {action for (_, action) in per_stage} == {f"stage.{s}" for s in PIPELINE}
        finished = Counter(
            (a.payload["symbol"], a.payload["status"]) for a in audit if a.action == "symbol.finished"
        )
        assert set(finished.values()) == {1}
        for sym, r in got.items():
            assert (sym, r.status.value) in finished, f"{sym}: final outcome {r.status.value} not audited"
        checkpoints = await repo.load_checkpoints(run_id)
        assert all([c.stage for c in rows] == PIPELINE for rows in checkpoints.values())

        # Resuming a completed run is a no-op.
        again = await orch.resume_run(run_id)
        assert again.run.status is RunStatus.COMPLETED and len(gate.entered) == 20
    finally:
        await orch.close()


async def test_resume_books_against_the_portfolio_the_run_already_reserved(
    database_url: str, register_stages: Callable[..., Any], tmp_path: Path
) -> None:
    """The bundled (binding) portfolio limits apply. Allocation is a barrier: the six symbols that
    finished their per-symbol stages before the cancel wait at it and end `cancelled` with the rest; the
    resumed run allocates the whole watchlist once and must decide every setup exactly as the
    uninterrupted run did."""
    reference = await _reference(_settings(f"sqlite+aiosqlite:///{tmp_path / 'ref.db'}", 1), register_stages)
    portfolio_codes = {"SECTOR_EXPOSURE_TOO_HIGH", "TOO_MANY_OPEN_POSITIONS", "LEVERAGE_TOO_HIGH"}
    rejected_by_portfolio = [
        t
        for r in reference.results
        for t in r.trades
        if any(v.code in portfolio_codes for v in t.risk.constraints.violations)
    ]
    assert rejected_by_portfolio  # the book decides some setups, so the resume must rebuild it exactly

    symbols = [r.symbol for r in reference.results]
    gate = Gate(hold={symbols[6]})  # six symbols pass the gate, the seventh is in flight when cancelled
    orch, cancelled, resumed = await _cancel_then_resume(
        _settings(database_url, 1), gate, 7, 1, register_stages
    )
    try:
        assert {r.status for r in cancelled.results} == {SymbolStatus.CANCELLED}
        assert not any(ok for *_, ok in _trades(cancelled))  # candidates only: nothing allocated yet
        assert resumed.run.status is RunStatus.COMPLETED
        assert _trades(resumed) == _trades(reference)
    finally:
        await orch.close()


async def test_resumed_symbol_stays_degraded_by_an_optional_failure_before_the_cancel(
    register_stages: Callable[..., Any], tmp_path: Path
) -> None:
    async def unavailable(ctx: StageContext, item: WorkItem) -> None:
        raise ConnectionError("enrichment service down")

    gate = Gate()
    register_stages(
        enrich=lambda: FnStage("enrich", unavailable, policy(required=False)),
        gate=lambda: FnStage("gate", gate),
        last=lambda: FnStage("last"),
    )
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}",
        pipeline=["detect_events", "enrich", "gate", "last"],
        engine=EngineConfig(concurrency=2),
        metrics_enabled=False,
    )
    async with Orchestrator(settings) as orch:
        task = asyncio.create_task(orch.start_run(RunRequest(symbols=["ACME.SIM", "BOLT.SIM", "BREW.SIM"])))
        await cancel_when_busy(lambda: orch.engine, gate, entered=2, busy=2)
        async with asyncio.timeout(HANG_GUARD_S):
            cancelled = await task
        assert [r.status for r in cancelled.results] == [SymbolStatus.CANCELLED] * 3

        resumed = await orch.resume_run(cancelled.run.id)

    got = by_symbol(resumed.results)
    # All three went through the failed optional stage, two of them before the cancel.
    assert {s: r.status for s, r in got.items()} == {
        "ACME.SIM": SymbolStatus.DEGRADED,
        "BOLT.SIM": SymbolStatus.DEGRADED,
        "BREW.SIM": SymbolStatus.DEGRADED,
    }
    assert resumed.run.counts["degraded"] == 3
    for r in got.values():
        assert [(s.stage, s.status) for s in r.stages] == [
            ("detect_events", StageStatus.OK),
            ("enrich", StageStatus.FAILED),
            ("gate", StageStatus.OK),
            ("last", StageStatus.OK),
        ]
