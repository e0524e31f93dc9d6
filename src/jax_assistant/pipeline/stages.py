"""The built-in stages: detect_events -> generate_trades -> calculate_risk -> allocate (run-level) -> persist.

Each is plain domain code over the shared services; timeouts, retries, breakers, metrics and audit
are the engine's job. They are registered through the same ``jax_assistant.stages`` entry-point group
as third-party stages.
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar, ParamSpec, TypeVar

from jax_assistant.analysis.correlation import CorrelationMatrix, return_correlations
from jax_assistant.analysis.detectors import detect_events
from jax_assistant.domain import Event, TradeRecord
from jax_assistant.marketdata.base import BarSeries, MarketDataProvider
from jax_assistant.pipeline.base import (
    BaseRunStage,
    BaseStage,
    RunStageOutput,
    StageContext,
    StageOutput,
    WorkItem,
)
from jax_assistant.pipeline.memory_stages import MEMORY_STAGES
from jax_assistant.pipeline.policy import RetryPolicy, StagePolicy
from jax_assistant.risk.allocation import Candidate

# Data issues older than this many sessions before the scanned window are summarised, not listed:
# a 12-year series can carry dozens of handled bad ticks that say nothing about today's scan.
_ISSUE_HORIZON_SESSIONS = 250


_P = ParamSpec("_P")
_R = TypeVar("_R")
# One lane per event loop (see off_loop); weak, so a closed loop's semaphore goes with it.
_LANES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
# Inline on the loop: a function whose first _WARMUP_CALLS calls (on the thread) and every call since
# used under _INLINE_MAX_CPU_S of CPU and waited (sleep, I/O, locks) under _INLINE_MAX_WAIT_S. CPU
# time, not wall time: a busy machine preempting a call must not make it look slow. Measured: the
# thread hand-off and the GIL convoy between the loop and the worker thread cost more than the work
# itself for the built-in stages (~0.2-4 ms per call).
_WARMUP_CALLS = 2
_INLINE_MAX_CPU_S = 0.05
_INLINE_MAX_WAIT_S = 0.1


@dataclass(slots=True)
class _Cost:
    calls: int = 0
    slow: bool = False  # once a call was too slow to run inline, always on the thread

    def record(self, wall: float, cpu: float) -> None:
        self.calls += 1
        # The first call is not judged: it pays the process's one-off warm-up (lazy imports, caches).
        if self.calls > 1 and (cpu >= _INLINE_MAX_CPU_S or wall - cpu >= _INLINE_MAX_WAIT_S):
            self.slow = True


def _timed(call: Callable[[], _R]) -> tuple[_R, float, float]:
    """``call()``'s result, its wall and its CPU seconds (of the thread it ran on)."""
    w0, c0 = time.perf_counter(), time.thread_time()
    out = call()
    return out, time.perf_counter() - w0, time.thread_time() - c0


_COSTS: weakref.WeakKeyDictionary[Callable[..., Any], _Cost] = weakref.WeakKeyDictionary()


def _cost_of(func: Callable[..., Any]) -> _Cost | None:
    # Keyed by the function itself: a bound method is a new object on every access.
    key = getattr(func, "__func__", func)
    try:
        cost = _COSTS.get(key)
        if cost is None:
            cost = _COSTS[key] = _Cost()
    except TypeError:  # not weak-referenceable (a builtin): no record, always on the thread
        return None
    return cost


async def off_loop(func: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """``func(*args, **kwargs)`` on a worker thread, one such call at a time per event loop -- or
    inline on the loop when it is known to be tiny.

    CPU work leaves the loop so a stage timeout can fire at the await (asyncio.timeout cannot
    interrupt running code). But it is pure-Python/numpy work under the GIL: several worker threads
    at once only fight over it (measured: every call 10-20x slower, the whole run ~1 s slower at
    505 symbols, bench/README.md). The lane is released when the awaiting stage is cancelled (its
    timeout), even though the abandoned thread runs on, so a stuck call never blocks other symbols.

    Trade-off of the inline path: a function runs inline only after its first calls ran on the
    thread and every call since the first used under 50 ms of CPU and waited under 100 ms; one slower
    call (or one abandoned by a timeout) sends it back to the thread for good. A stage timeout that
    expires during an inline call fires right after it (the ``sleep(0)`` below), so the stage still
    ends ``timed_out``, only late by at most that call; a call that suddenly never returns, after many
    fast ones, would hold the loop. For the built-in stages (bounded, vectorised work over one series)
    that is the price of not paying a thread hand-off and a GIL convoy per call, which cost more than
    the work itself.
    """
    loop = asyncio.get_running_loop()
    lane = _LANES.get(loop)
    if lane is None:
        lane = _LANES[loop] = asyncio.Semaphore(1)
    cost = _cost_of(func)
    # Not gated on the lane being free: with several symbols in flight one of them nearly always holds
    # it, and every caller would then queue for the thread behind it.
    if cost is not None and not cost.slow and cost.calls >= _WARMUP_CALLS:
        w0, c0 = time.perf_counter(), time.thread_time()
        try:
            return func(*args, **kwargs)
        finally:
            cost.record(time.perf_counter() - w0, time.thread_time() - c0)
            # A timeout that expired during the call fires here. Two passes: the loop runs this task's
            # wake-up before the timer that expired meanwhile, so only the second await sees its cancel.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
    async with lane:
        try:
            result, wall, cpu = await asyncio.to_thread(_timed, functools.partial(func, *args, **kwargs))
        except asyncio.CancelledError:
            if cost is not None:
                cost.slow = True  # abandoned (a timeout): it may run away again, keep it on the thread
            raise
        if cost is not None:
            cost.record(wall, cpu)
        return result


def _session_series(ctx: StageContext, item: WorkItem) -> tuple[BarSeries, str | None]:
    """The symbol's bars up to the run's as-of date, and why it cannot be scanned (or None)."""
    series = ctx.services.provider.bars(item.symbol, item.as_of)
    if len(series) == 0:
        return series, f"no bars on or before {item.as_of.isoformat()}"
    if series.last_date != item.as_of:
        last = series.last_date.isoformat() if series.last_date else "none"
        return series, f"no bar for {item.as_of.isoformat()} (last bar {last}); nothing to scan"
    return series, None


class DetectEventsStage(BaseStage):
    name = "detect_events"
    leaves_input_intact = True  # built-in: returns changes through model_copy
    default_policy: ClassVar[StagePolicy] = StagePolicy(timeout_s=30.0)

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        # CPU work runs on a thread: asyncio.timeout can only interrupt at an await point, so a
        # pathological series would otherwise overrun the stage timeout unnoticed. Cleaning (the first
        # bars() of a symbol and as-of) and detection share one hop: each hop costs a thread handoff.
        series, stale, events = await off_loop(_detect, ctx, item)
        issues = _relevant_issues(series, item.lookback)
        if stale:
            return StageOutput(
                item=item.model_copy(update={"data_issues": [*issues, stale]}), status="skipped", reason=stale
            )
        return StageOutput(item=item.model_copy(update={"events": events, "data_issues": issues}))


def _detect(ctx: StageContext, item: WorkItem) -> tuple[BarSeries, str | None, list[Event]]:
    series, stale = _session_series(ctx, item)
    if stale:
        return series, stale, []
    earnings = ctx.services.provider.earnings_reports(item.symbol)  # with release times
    events = detect_events(series, earnings, ctx.services.detectors, lookback=item.lookback, as_of=item.as_of)
    return series, None, merge_pushed(events, item.pushed_events, series, item)


def merge_pushed(
    detected: Sequence[Event], pushed: Sequence[Event], series: BarSeries, item: WorkItem
) -> list[Event]:
    """Detected events plus the pushed ones of the scanned sessions (the last ``lookback`` bars up to
    as_of: never one after it), one per id, ordered by time, type and id so any arrival order of the
    pushes gives the same stored result."""
    if not pushed:
        return list(detected)
    first = series.date_at(max(0, len(series) - item.lookback))
    window = [e for e in pushed if first <= e.session <= item.as_of]
    merged = {e.id: e for e in window}
    merged.update({e.id: e for e in detected})  # a detected event wins over a push of the same id
    return sorted(merged.values(), key=lambda e: (e.time, e.type, e.id))


def _relevant_issues(series: BarSeries, lookback: int) -> list[str]:
    if not series.issues:
        return []
    horizon = max(0, len(series) - lookback - _ISSUE_HORIZON_SESSIONS)
    cutoff = series.date_at(horizon) if len(series) else None
    recent = [str(i) for i in series.issues if i.date is None or cutoff is None or i.date >= cutoff]
    older = len(series.issues) - len(recent)
    if older:
        recent.append(f"{series.symbol}: {older} older data issue(s) handled (see `jax data check`)")
    return recent


class GenerateTradesStage(BaseStage):
    name = "generate_trades"
    leaves_input_intact = True  # built-in: returns changes through model_copy
    default_policy: ClassVar[StagePolicy] = StagePolicy(timeout_s=30.0, after=["detect_events"])

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        series, stale = _session_series(ctx, item)
        if stale:
            return StageOutput(item=item, status="skipped", reason=stale)
        setups = await off_loop(
            ctx.services.strategies.generate, series, item.events, as_of=item.as_of, lookback=item.lookback
        )
        return StageOutput(item=item.model_copy(update={"setups": setups}))


class CalculateRiskStage(BaseStage):
    """Sizes every setup of the symbol and applies the checks that need no portfolio: a candidate
    decision per setup. Stateless (nothing is reserved), so a retry is harmless."""

    name = "calculate_risk"
    leaves_input_intact = True  # built-in: returns changes through model_copy
    default_policy: ClassVar[StagePolicy] = StagePolicy(timeout_s=30.0, after=["generate_trades"])

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        if not item.setups:
            return StageOutput(item=item, status="skipped", reason="no setups to size")
        events = {e.id: e for e in item.events}
        trades: list[TradeRecord] = []
        for setup in sorted(item.setups, key=lambda s: (-s.confidence, s.strategy_id, s.id)):
            strategy = ctx.services.strategies.get(setup.strategy_id)
            risk = ctx.services.risk.candidate(
                setup, strategy_max_risk_percent=getattr(strategy, "max_risk_percent", None)
            )
            risk = ctx.services.strategies.admit(setup, risk)  # a suspended strategy only paper-trades
            trades.append(
                TradeRecord(
                    setup=setup, risk=risk, event=events.get(setup.event_id) if setup.event_id else None
                )
            )
        return StageOutput(item=item.model_copy(update={"trades": trades}))


class AllocateStage(BaseRunStage):
    """The run-level portfolio allocation: every candidate of every symbol, ranked by score and filled
    into the book under the portfolio limits (:mod:`jax_assistant.risk.allocation`). Correlations are
    computed from the provider's bars up to the run's date (never after it)."""

    name = "allocate"
    leaves_input_intact = True  # built-in: returns changes through model_copy
    default_policy: ClassVar[StagePolicy] = StagePolicy(timeout_s=120.0, after=["calculate_risk"])

    async def run_all(self, ctx: StageContext, items: Sequence[WorkItem]) -> RunStageOutput:
        provider, risk = ctx.services.provider, ctx.services.risk
        candidates: list[Candidate] = []
        owner: list[tuple[int, int]] = []  # (item index, trade index) of each candidate
        sectors: dict[str, str | None] = {}
        for i, item in enumerate(items):
            for j, trade in enumerate(item.trades):
                if trade.risk.decision != "candidate":
                    continue
                symbol = trade.setup.symbol
                if symbol not in sectors:
                    sectors[symbol] = provider.sector(symbol)
                candidates.append(Candidate(setup=trade.setup, risk=trade.risk, sector=sectors[symbol]))
                owner.append((i, j))
        if not candidates:
            return RunStageOutput(items=list(items), status="skipped", reason="no candidates to allocate")
        held = [p.symbol for p in (await risk.book.snapshot()).open_positions]
        symbols = sorted({c.setup.symbol for c in candidates if c.eligible} | set(held))
        window = risk.constraints.portfolio_constraints.correlation_window
        matrix = await off_loop(_correlations, provider, symbols, ctx.as_of, window)
        decisions = await risk.allocate(candidates, as_of=ctx.as_of, correlation=matrix.get)
        trades = [list(item.trades) for item in items]
        for (i, j), decision in zip(owner, decisions, strict=True):
            trades[i][j] = trades[i][j].model_copy(update={"risk": decision})
        return RunStageOutput(
            items=[item.model_copy(update={"trades": t}) for item, t in zip(items, trades, strict=True)]
        )


def _correlations(
    provider: MarketDataProvider, symbols: Sequence[str], as_of: date, window: int
) -> CorrelationMatrix:
    known = set(provider.symbols())
    # A booked position in a symbol the provider does not carry has no known correlation.
    series = {s: provider.bars(s, as_of) for s in symbols if s in known}
    return return_correlations(series, as_of, window=window)


class PersistStage(BaseStage):
    name = "persist"
    leaves_input_intact = True  # built-in: returns changes through model_copy
    default_policy: ClassVar[StagePolicy] = StagePolicy(
        timeout_s=30.0,
        after=["calculate_risk"],
        retry=RetryPolicy(
            attempts=3, initial_backoff_s=0.1, retry_on=["OperationalError", "InterfaceError", "OSError"]
        ),
    )

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        storage = ctx.services.storage
        if storage is not None:
            # Through the run's group-commit writer: one commit shared with every symbol in flight, and
            # the symbol's final result then need not write the same records again.
            await storage.save_records(item.run_id, item.symbol, item.events, item.trades)
            return StageOutput(item=item)
        repo = ctx.services.repository
        if repo is None:
            return StageOutput(item=item, status="skipped", reason="no storage configured")
        simulated = ctx.services.simulated
        # Both writes are idempotent (keyed by event and setup ids), so a retry or a resumed run
        # never stores anything twice.
        await repo.save_events(item.events, run_id=item.run_id, simulated=simulated)
        await repo.save_trades(item.trades, run_id=item.run_id, simulated=simulated)
        return StageOutput(item=item)


def _research_stage() -> type[BaseStage]:
    # Imported here: the research package imports the pipeline base, not this module.
    from jax_assistant.pipeline.research_stage import ResearchStage

    return ResearchStage


BUILTIN_STAGES: dict[str, type[BaseStage] | type[BaseRunStage]] = {
    s.name: s
    for s in (
        DetectEventsStage,
        GenerateTradesStage,
        CalculateRiskStage,
        AllocateStage,
        _research_stage(),
        PersistStage,
    )
}
# memsvc: recall_memory / retain_memory are built-ins too (pipeline/memory_stages.py).
BUILTIN_STAGES.update(MEMORY_STAGES)
