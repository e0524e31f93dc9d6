"""Circuit breaker, rate limiter, bulkhead and the engine's own flow control, driven through the engine.

Virtual time (FakeClock) everywhere timing matters: a "slow" dependency advances the fake clock, the
rate limiter sleeps on it, and assertions are about virtual timestamps, never wall-clock durations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tests.engines.helpers import FnStage, make_engine, policy, run_symbols, stage_of, start

from jax_assistant.domain import StageStatus, SymbolStatus
from jax_assistant.engines.local import LocalEngine, StartPoint
from jax_assistant.pipeline.base import StageContext, WorkItem
from jax_assistant.pipeline.policy import BreakerConfig, BulkheadConfig, RateLimitConfig, ResilienceConfig
from jax_assistant.pipeline.resilience import BreakerState, FakeClock, ResilienceRegistry


def symbols(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


async def yield_a_few(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


# ----------------------------------------------------------------------------- 4. slow-call breaker


def _breaker_registry(clock: FakeClock) -> tuple[ResilienceRegistry, list[tuple[str, str, float]]]:
    config = ResilienceConfig(
        breakers={
            "dep": BreakerConfig(
                sliding_window_size=4,
                minimum_number_of_calls=4,
                slow_call_duration_threshold_s=1.0,
                slow_call_rate_threshold=100.0,
                wait_duration_in_open_s=30.0,
                permitted_number_of_calls_in_half_open=2,
            )
        }
    )
    registry = ResilienceRegistry(config, clock)
    transitions: list[tuple[str, str, float]] = []
    registry.on_breaker_state_change.append(
        lambda name, old, new: transitions.append((old.value, new.value, clock.monotonic()))
    )
    return registry, transitions


class SlowDependency:
    """The stage body of a call to dependency "dep": takes ``latency`` virtual seconds."""

    def __init__(self, clock: FakeClock, latency: float) -> None:
        self.clock = clock
        self.latency = latency

    async def __call__(self, ctx: StageContext, item: WorkItem) -> None:
        self.clock.advance(self.latency)
        await asyncio.sleep(0)


async def test_slow_calls_trip_the_breaker_and_half_open_trials_close_it(clock: FakeClock) -> None:
    registry, transitions = _breaker_registry(clock)
    dependency = SlowDependency(clock, latency=2.0)  # slower than the 1 s slow-call threshold
    # retry attempts > 1: a short-circuit must still not be retried (retrying an open breaker is pointless)
    dep = FnStage("dep_call", dependency, policy(breaker="dep", required=False, retry={"attempts": 3}))
    after = FnStage("after")

    def engine() -> LocalEngine:
        return make_engine([dep, after], clock=clock, resilience=registry, concurrency=1)

    # Phase 1: four slow (but successful) calls fill the window -> 100 % slow -> OPEN.
    first = symbols("S", 10)
    _, results = await run_symbols(engine(), first)
    assert dep.calls == first[:4]  # the stage body was never called once the breaker opened
    for sym in first[:4]:
        assert results[sym].status is SymbolStatus.SUCCEEDED
        assert stage_of(results[sym], "dep_call").status is StageStatus.OK
    for sym in first[4:]:
        r = results[sym]
        dep_result = stage_of(r, "dep_call")
        assert dep_result.status is StageStatus.SHORT_CIRCUITED and dep_result.attempts == 1
        assert (
            dep_result.reason
            == "optional stage short_circuited: circuit breaker 'dep' is open; call not permitted"
        )
        assert r.status is SymbolStatus.DEGRADED  # optional stage: the symbol goes on, degraded
        assert stage_of(r, "after").status is StageStatus.OK
    assert clock.sleeps == []  # no retry backoff was spent on short-circuits
    snap = registry.snapshot()["breakers"]["dep"]
    assert snap["state"] == "open"
    assert (snap["calls"], snap["slow"], snap["failed"], snap["not_permitted"]) == (4, 4, 0, 6)
    assert transitions == [("closed", "open", 1008.0)]

    # Still inside wait_duration_in_open: short-circuited at once, body not called.
    clock.advance(10.0)
    _, results = await run_symbols(engine(), ["EARLY"])
    assert stage_of(results["EARLY"], "dep_call").status is StageStatus.SHORT_CIRCUITED
    assert len(dep.calls) == 4

    # Phase 2: after the wait the breaker lets the permitted trial calls through; they are fast -> CLOSED.
    clock.advance(20.0)
    dependency.latency = 0.1
    later = symbols("T", 5)
    _, results = await run_symbols(engine(), later)
    assert dep.calls[4:] == later
    assert all(r.status is SymbolStatus.SUCCEEDED for r in results.values())
    assert [t[:2] for t in transitions] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    snap = registry.snapshot()["breakers"]["dep"]
    assert snap["state"] == "closed"
    assert (snap["calls"], snap["slow"]) == (3, 0)  # a fresh window after closing: T2..T4
    assert registry.breaker("dep").state is BreakerState.CLOSED


async def test_slow_half_open_trials_reopen_the_breaker(clock: FakeClock) -> None:
    registry, transitions = _breaker_registry(clock)
    dependency = SlowDependency(clock, latency=2.0)
    dep = FnStage("dep_call", dependency, policy(breaker="dep", required=True))
    engine = make_engine([dep], clock=clock, resilience=registry, concurrency=1)
    _, results = await run_symbols(engine, symbols("S", 6))
    assert len(dep.calls) == 4
    # A required stage that is short-circuited fails its symbol (and dead-letters it, see test_failures).
    assert results["S005"].status is SymbolStatus.FAILED
    assert results["S005"].error is not None and "open" in results["S005"].error

    clock.advance(30.0)
    engine = make_engine([dep], clock=clock, resilience=registry, concurrency=1)
    _, results = await run_symbols(engine, symbols("T", 4))
    assert dep.calls[4:] == ["T000", "T001"]  # the two trials, still slow
    assert [r.status for r in results.values()] == [SymbolStatus.SUCCEEDED] * 2 + [SymbolStatus.FAILED] * 2
    assert [t[:2] for t in transitions][-2:] == [("open", "half_open"), ("half_open", "open")]
    assert registry.snapshot()["breakers"]["dep"]["state"] == "open"


# ----------------------------------------------------------------------------- 5. rate limit


async def test_rate_limited_stage_never_exceeds_the_limit_in_any_window(clock: FakeClock) -> None:
    limit, period = 3, 10.0
    config = ResilienceConfig(rate_limits={"api": RateLimitConfig(limit=limit, period_s=period)})
    times: list[float] = []

    async def call(ctx: StageContext, item: WorkItem) -> None:
        times.append(clock.monotonic())
        await yield_a_few()

    api = FnStage("api_call", call, policy(rate_limit="api"))
    engine = make_engine([FnStage("before"), api], clock=clock, config=config, concurrency=6)
    _, results = await run_symbols(engine, symbols("R", 20))

    assert all(r.status is SymbolStatus.SUCCEEDED for r in results.values())
    assert len(times) == 20
    for t in times:
        in_window = [u for u in times if t <= u < t + period]
        assert len(in_window) <= limit, (t, in_window)
    # The limiter really held calls back: 20 calls at 3 per 10 s span at least six full periods.
    assert max(times) - min(times) >= 6 * period
    assert engine.resilience.snapshot()["rate_limits"]["api"]["granted"] == 20


# ----------------------------------------------------------------------------- 6. bulkheads & concurrency


class Gauge:
    """Counts concurrent executions and remembers the peak."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def hold(self, n: int = 3) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await yield_a_few(n)
        finally:
            self.now -= 1


async def test_per_stage_concurrency_limit(clock: FakeClock) -> None:
    inside = Gauge()
    reported: list[int] = []
    engine: LocalEngine | None = None

    async def narrow_body(ctx: StageContext, item: WorkItem) -> None:
        assert engine is not None
        reported.append(engine.status.stage_in_flight["narrow"])
        await inside.hold()

    narrow = FnStage("narrow", narrow_body, policy(concurrency=2))
    engine = make_engine([FnStage("wide"), narrow, FnStage("after")], clock=clock, concurrency=8)
    _, results = await run_symbols(engine, symbols("C", 30))

    assert all(r.status is SymbolStatus.SUCCEEDED for r in results.values())
    assert inside.peak == 2  # reached, never exceeded
    # The status the engine reports (GET /status) counts symbols *inside* the stage, not those queued for it.
    assert max(reported) <= 2
    assert engine.status.stage_in_flight["narrow"] == 0


async def test_bulkhead_caps_concurrent_calls_across_every_stage_sharing_it(clock: FakeClock) -> None:
    config = ResilienceConfig(bulkheads={"db": BulkheadConfig(max_concurrent=3)})
    in_db = Gauge()

    async def use_db(ctx: StageContext, item: WorkItem) -> None:
        await in_db.hold()

    read = FnStage("read", use_db, policy(bulkhead="db"))
    write = FnStage("write", use_db, policy(bulkhead="db"))
    engine = make_engine([read, FnStage("mid"), write], clock=clock, config=config, concurrency=8)
    _, results = await run_symbols(engine, symbols("B", 30))

    assert all(r.status is SymbolStatus.SUCCEEDED for r in results.values())
    assert in_db.peak == 3
    assert engine.resilience.snapshot()["bulkheads"]["db"] == {
        "in_use": 0,
        "max_concurrent": 3,
        "rejected": 0,
    }


async def test_global_concurrency_limit(clock: FakeClock) -> None:
    symbols_inside = Gauge()
    reported: list[int] = []
    engine: LocalEngine | None = None

    async def enter(ctx: StageContext, item: WorkItem) -> None:
        assert engine is not None
        symbols_inside.now += 1
        symbols_inside.peak = max(symbols_inside.peak, symbols_inside.now)
        reported.append(engine.status.in_flight)
        await yield_a_few()

    async def leave(ctx: StageContext, item: WorkItem) -> None:
        await yield_a_few()
        symbols_inside.now -= 1

    engine = make_engine(
        [FnStage("enter", enter), FnStage("work"), FnStage("leave", leave)], clock=clock, concurrency=5
    )
    _, results = await run_symbols(engine, symbols("G", 40))

    assert len(results) == 40
    assert symbols_inside.peak == 5
    assert max(reported) == 5
    assert engine.status.in_flight == 0


class RecordingStarts(Sequence[StartPoint]):
    """The start points, calling ``on_pull(i)`` whenever the engine's producer takes item ``i``."""

    def __init__(self, starts: list[StartPoint], on_pull: Callable[[int], None]) -> None:
        self._starts = starts
        self._on_pull = on_pull
        self._iterated = False

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, i: Any) -> Any:
        return self._starts[i]

    def __iter__(self) -> Iterator[StartPoint]:
        first = not self._iterated
        self._iterated = True
        for i, sp in enumerate(self._starts):
            if first:
                self._on_pull(i)
            yield sp


async def test_bounded_queue_holds_the_producer_back(clock: FakeClock) -> None:
    queue_size, concurrency = 3, 2
    entered: list[str] = []
    ahead: list[int] = []
    depths: list[int] = []

    async def first_body(ctx: StageContext, item: WorkItem) -> None:
        entered.append(item.symbol)
        await yield_a_few(5)

    engine = make_engine(
        [FnStage("first", first_body), FnStage("second")],
        clock=clock,
        concurrency=concurrency,
        queue_size=queue_size,
    )
    run, starts = await start(engine, symbols("Q", 40))
    recording = RecordingStarts(starts, lambda i: ahead.append(i + 1 - len(entered)))

    async def watch() -> None:
        while True:
            depths.append(engine.status.queue_depth)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        run, results = await engine.run(run, recording)
    finally:
        watcher.cancel()

    assert len(results) == 40 and all(r.status is SymbolStatus.SUCCEEDED for r in results)
    # Pulled but not started: at most the queue's capacity plus the one the producer is trying to put.
    assert max(ahead) == queue_size + 1
    assert len(depths) > 40 and max(depths) <= queue_size
    assert max(depths) == queue_size
