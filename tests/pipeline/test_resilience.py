"""Resilience primitives, in virtual time (FakeClock): breaker, rate limiter, bulkhead, retry, registry."""

from __future__ import annotations

import asyncio
import bisect
import email.utils
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from jax_assistant.pipeline.base import TransientError
from jax_assistant.pipeline.policy import (
    BreakerConfig,
    BulkheadConfig,
    RateLimitConfig,
    ResilienceConfig,
    RetryPolicy,
)
from jax_assistant.pipeline.resilience import (
    BreakerState,
    Bulkhead,
    BulkheadFullError,
    CallNotPermittedError,
    CircuitBreaker,
    FakeClock,
    RateLimiter,
    ResilienceRegistry,
    call_with_retry,
    compute_backoff,
    is_retryable,
    retry_after_of,
)

# ------------------------------------------------------------------------------------------- helpers


def breaker(clock: FakeClock, **cfg: Any) -> CircuitBreaker:
    defaults: dict[str, Any] = {
        "sliding_window_size": 10,
        "minimum_number_of_calls": 5,
        "failure_rate_threshold": 50.0,
        "wait_duration_in_open_s": 30.0,
        "permitted_number_of_calls_in_half_open": 3,
    }
    return CircuitBreaker("dep", BreakerConfig(**{**defaults, **cfg}), clock)


def succeed(b: CircuitBreaker, n: int = 1, duration: float = 0.0) -> None:
    for _ in range(n):
        b.on_success(duration, b.acquire())


def fail(b: CircuitBreaker, n: int = 1, duration: float = 0.0) -> None:
    for _ in range(n):
        b.on_error(duration, RuntimeError("boom"), b.acquire())


def open_breaker(b: CircuitBreaker) -> None:
    fail(b, b.config.minimum_number_of_calls)
    assert b.state is BreakerState.OPEN


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# ------------------------------------------------------------------------------------ circuit breaker


def test_breaker_opens_on_failure_rate_only_once_minimum_calls_are_in(clock: FakeClock) -> None:
    b = breaker(clock, minimum_number_of_calls=5)
    fail(b, 4)  # 100 % failures, but only 4 calls: not evaluated yet
    assert b.state is BreakerState.CLOSED
    fail(b)
    assert b.state is BreakerState.OPEN
    assert b.metrics().failure_rate == 100.0


def test_breaker_stays_closed_below_the_failure_threshold(clock: FakeClock) -> None:
    b = breaker(clock, minimum_number_of_calls=5, failure_rate_threshold=50.0)
    succeed(b, 3)
    fail(b, 2)  # 40 %
    assert b.state is BreakerState.CLOSED
    fail(b)  # 3 of 6 = 50 % >= threshold
    assert b.state is BreakerState.OPEN


def test_count_window_forgets_outcomes_older_than_its_size(clock: FakeClock) -> None:
    b = breaker(clock, sliding_window_size=4, minimum_number_of_calls=4, failure_rate_threshold=75.0)
    fail(b, 2)
    succeed(b, 4)  # the two failures roll out of the 4-call window
    assert b.metrics().calls == 4
    assert b.metrics().failed == 0
    fail(b, 2)  # S S F F: 50 %
    assert b.state is BreakerState.CLOSED
    fail(b)  # S F F F: 75 %
    assert b.state is BreakerState.OPEN


async def test_breaker_opens_on_slow_call_rate_with_only_successes(clock: FakeClock) -> None:
    b = breaker(
        clock, minimum_number_of_calls=4, slow_call_duration_threshold_s=1.0, slow_call_rate_threshold=50.0
    )
    for _ in range(2):
        async with b.guard():
            clock.advance(0.5)  # fast
    for _ in range(1):
        async with b.guard():
            clock.advance(2.0)  # slow, but a success
    assert b.state is BreakerState.CLOSED  # 3 calls < minimum
    async with b.guard():
        clock.advance(1.5)
    m = b.metrics()
    assert (m.failed, m.slow, m.calls) == (0, 2, 4)
    assert m.slow_call_rate == 50.0
    assert b.state is BreakerState.OPEN


async def test_duration_exactly_at_the_slow_threshold_is_not_slow(clock: FakeClock) -> None:
    b = breaker(
        clock, minimum_number_of_calls=1, slow_call_duration_threshold_s=1.0, slow_call_rate_threshold=1.0
    )
    async with b.guard():
        clock.advance(1.0)
    assert b.metrics().slow == 0
    assert b.state is BreakerState.CLOSED


async def test_guard_records_failures_and_propagates(clock: FakeClock) -> None:
    b = breaker(clock, minimum_number_of_calls=2)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="down"):
            async with b.guard():
                raise RuntimeError("down")
    assert b.metrics().failed == 2
    assert b.state is BreakerState.OPEN


async def test_open_breaker_short_circuits_without_calling(clock: FakeClock) -> None:
    b = breaker(clock)
    open_breaker(b)
    called = False
    with pytest.raises(CallNotPermittedError) as info:
        async with b.guard():
            called = True
    assert not called
    assert info.value.name == "dep"
    assert info.value.retry_after == pytest.approx(30.0)
    assert b.metrics().not_permitted == 1


async def test_half_open_after_the_wait_permits_exactly_n_trial_calls(clock: FakeClock) -> None:
    b = breaker(clock, wait_duration_in_open_s=30.0, permitted_number_of_calls_in_half_open=3)
    open_breaker(b)
    clock.advance(29.9)
    with pytest.raises(CallNotPermittedError):
        b.acquire()
    assert b.state is BreakerState.OPEN
    clock.advance(0.1)
    permits = [b.acquire() for _ in range(3)]  # the first one moves it to HALF_OPEN
    assert b.state is BreakerState.HALF_OPEN
    with pytest.raises(CallNotPermittedError):
        b.acquire()  # the N+1th trial
    b.on_success(0.0, permits[0])
    b.on_success(0.0, permits[1])
    assert b.state is BreakerState.HALF_OPEN  # the third trial is still out
    with pytest.raises(CallNotPermittedError):
        b.acquire()  # completed trials do not hand their permits back
    assert b.metrics().not_permitted == 3


async def test_half_open_trials_that_succeed_close_with_a_fresh_window(clock: FakeClock) -> None:
    b = breaker(clock, permitted_number_of_calls_in_half_open=3)
    open_breaker(b)
    clock.advance(30.0)
    for _ in range(3):
        async with b.guard():
            pass
    assert b.state is BreakerState.CLOSED
    assert b.metrics().calls == 0
    fail(b, 4)  # a fresh window: the old failures are gone, so 4 more do not reopen it
    assert b.state is BreakerState.CLOSED


async def test_half_open_trials_that_fail_reopen_and_restart_the_wait(clock: FakeClock) -> None:
    b = breaker(clock, permitted_number_of_calls_in_half_open=2, failure_rate_threshold=50.0)
    open_breaker(b)
    clock.advance(30.0)
    succeed(b)
    fail(b)  # 1 of 2 = 50 %
    assert b.state is BreakerState.OPEN
    clock.advance(29.0)
    with pytest.raises(CallNotPermittedError):
        b.acquire()  # the wait restarted at the re-open, not at the first open
    clock.advance(1.0)
    b.acquire()
    assert b.state is BreakerState.HALF_OPEN


async def test_slow_half_open_trials_reopen(clock: FakeClock) -> None:
    b = breaker(
        clock,
        permitted_number_of_calls_in_half_open=2,
        slow_call_duration_threshold_s=1.0,
        slow_call_rate_threshold=100.0,
    )
    open_breaker(b)
    clock.advance(30.0)
    succeed(b, 2, duration=5.0)
    assert b.state is BreakerState.OPEN


def test_time_window_forgets_old_outcomes(clock: FakeClock) -> None:
    b = breaker(clock, sliding_window_type="time", sliding_window_size=10, minimum_number_of_calls=3)
    fail(b, 2)  # second 0
    clock.advance(5.0)
    fail(b)  # second 5: 3 failures in the window, would open ...
    assert b.state is BreakerState.OPEN
    b.reset()

    fail(b, 2)  # at t=5
    clock.advance(9.9)  # t=14.9: second 5 is still inside seconds 5..14
    assert b.metrics().calls == 2
    clock.advance(0.2)  # t=15.1: it has left the window
    assert b.metrics().calls == 0
    fail(b)
    succeed(b, 2)  # 1 of 3: had the old failures stayed, 3 of 5 = 60 % would open it
    assert b.state is BreakerState.CLOSED
    clock.advance(1000.0)  # a long idle gap empties every bucket
    assert b.metrics().calls == 0


def test_ignored_exceptions_do_not_count_and_return_trial_permits(clock: FakeClock) -> None:
    b = CircuitBreaker(
        "dep",
        BreakerConfig(
            sliding_window_size=4, minimum_number_of_calls=1, permitted_number_of_calls_in_half_open=1
        ),
        clock,
        ignore_exceptions=(asyncio.CancelledError, KeyError),
    )
    b.on_error(0.0, KeyError("not the dependency's fault"), b.acquire())
    b.on_error(0.0, asyncio.CancelledError(), b.acquire())
    assert b.metrics().calls == 0
    assert b.state is BreakerState.CLOSED
    fail(b)
    assert b.state is BreakerState.OPEN
    clock.advance(30.0)
    b.on_error(0.0, asyncio.CancelledError(), b.acquire())  # the only trial, cancelled: permit back
    assert b.state is BreakerState.HALF_OPEN
    succeed(b)
    assert b.state is BreakerState.CLOSED


async def test_guard_ignores_cancellation(clock: FakeClock) -> None:
    b = breaker(clock, minimum_number_of_calls=1)
    with pytest.raises(asyncio.CancelledError):
        async with b.guard():
            raise asyncio.CancelledError
    assert b.metrics().calls == 0
    assert b.state is BreakerState.CLOSED


def test_outcome_of_a_call_from_an_earlier_state_is_not_a_trial(clock: FakeClock) -> None:
    b = breaker(clock, permitted_number_of_calls_in_half_open=1)
    straggler = b.acquire()  # taken while CLOSED
    open_breaker(b)
    clock.advance(30.0)
    trial = b.acquire()
    assert b.state is BreakerState.HALF_OPEN
    b.on_success(0.0, straggler)  # finishes late: must not decide the trial
    assert b.state is BreakerState.HALF_OPEN
    b.on_error(0.0, RuntimeError(), trial)
    assert b.state is BreakerState.OPEN


def test_state_change_listeners_hear_every_transition_even_if_one_raises(clock: FakeClock) -> None:
    b = breaker(clock, permitted_number_of_calls_in_half_open=1)
    seen: list[tuple[str, BreakerState, BreakerState]] = []

    def broken(*_: object) -> None:
        raise RuntimeError("metrics backend down")

    b.on_state_change.append(broken)
    b.on_state_change.append(lambda name, old, new: seen.append((name, old, new)))
    open_breaker(b)
    clock.advance(30.0)
    succeed(b)
    assert seen == [
        ("dep", BreakerState.CLOSED, BreakerState.OPEN),
        ("dep", BreakerState.OPEN, BreakerState.HALF_OPEN),
        ("dep", BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


# --------------------------------------------------------------------------------------- rate limiter


def assert_no_window_over_limit(times: list[float], period: float, limit: int, slack: float = 0.0) -> None:
    """Every grant starts a window [t, t + period): none may hold more than ``limit`` grants."""
    times = sorted(times)
    for i, t in enumerate(times):
        inside = bisect.bisect_left(times, t + period - slack) - i
        assert inside <= limit, f"{inside} grants in [{t}, {t + period}) > {limit}"


async def _hammer(limiter: RateLimiter, clock: FakeClock, tasks: int, per_task: int) -> list[float]:
    grants: list[float] = []

    async def worker() -> None:
        for _ in range(per_task):
            await limiter.acquire()
            grants.append(clock.monotonic())

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return grants


async def test_limiter_never_exceeds_limit_in_any_window(clock: FakeClock) -> None:
    limiter = RateLimiter("api", RateLimitConfig(limit=60, period_s=60.0), clock)
    grants = await _hammer(limiter, clock, tasks=20, per_task=25)
    assert len(grants) == 500
    assert_no_window_over_limit(grants, 60.0, 60)
    # A full bucket of 60, then 1/s - but the window holds each next 60 until the first 60 age out,
    # so grants come in blocks of 60 a minute: the 500th lands at 8 * 60 s.
    assert max(grants) == pytest.approx(480.0)
    assert (500 - 60) / 1.0 <= max(grants) <= 500 / 1.0
    stats = limiter.stats()
    assert stats.granted == 500
    assert stats.waiters == 0
    assert stats.waited_total_s > 0


@pytest.mark.parametrize(("limit", "period", "burst"), [(7, 3.3, 2), (5, 1.0, None), (3, 0.7, 1)])
async def test_limiter_window_and_rate_with_fractional_periods(
    clock: FakeClock, limit: int, period: float, burst: int | None
) -> None:
    limiter = RateLimiter("api", RateLimitConfig(limit=limit, period_s=period, burst=burst), clock)
    grants = await _hammer(limiter, clock, tasks=10, per_task=20)
    assert_no_window_over_limit(grants, period, limit, slack=1e-6)
    rate = limit / period
    capacity = burst or limit
    # Never faster than the bucket allows ...
    assert max(grants) >= (200 - capacity) / rate - 1e-6
    # ... and no slower than one full window per `limit` grants.
    assert max(grants) <= (200 / limit) * period + 1e-6


async def test_limiter_burst_then_steady_rate(clock: FakeClock) -> None:
    limiter = RateLimiter("api", RateLimitConfig(limit=10, period_s=10.0, burst=3), clock)
    assert [await limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.try_acquire() is False
    assert await limiter.acquire() == pytest.approx(1.0)  # refill at 1 token/s
    assert await limiter.acquire() == pytest.approx(1.0)
    clock.advance(100.0)  # the bucket refills to its capacity, not beyond
    assert [limiter.try_acquire() for _ in range(4)] == [True, True, True, False]


async def test_limiter_default_burst_is_limit_and_window_caps_the_refill(clock: FakeClock) -> None:
    limiter = RateLimiter("api", RateLimitConfig(limit=10, period_s=10.0), clock)
    assert all(limiter.try_acquire() for _ in range(10))
    # A bucket alone would grant the 11th at t=1 (one token refilled); the window holds it to t=10.
    assert await limiter.acquire() == pytest.approx(10.0)


async def test_limiter_serves_waiters_in_arrival_order(clock: FakeClock) -> None:
    limiter = RateLimiter("api", RateLimitConfig(limit=1, period_s=1.0), clock)
    order: list[tuple[int, float]] = []

    async def waiter(i: int) -> None:
        await limiter.acquire()
        order.append((i, clock.monotonic()))

    tasks = [asyncio.create_task(waiter(i)) for i in range(10)]
    await asyncio.gather(*tasks)
    assert order == [(i, float(i)) for i in range(10)]


async def test_limiter_does_not_let_newcomers_jump_the_queue(clock: FakeClock) -> None:
    limiter = RateLimiter("api", RateLimitConfig(limit=1, period_s=10.0), clock)
    assert await limiter.acquire() == 0.0
    queued = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)  # it queues and sleeps (virtual time jumps to when its grant is due)
    assert clock.monotonic() == pytest.approx(10.0)
    assert limiter.stats().waiters == 1
    assert limiter.try_acquire() is False  # a grant is due, but it belongs to the queued caller
    assert await queued == pytest.approx(10.0)
    assert limiter.stats().rejected == 1


async def test_cancelled_waiter_takes_no_grant(clock: FakeClock) -> None:
    limiter = RateLimiter("api", RateLimitConfig(limit=1, period_s=10.0), clock)
    await limiter.acquire()
    queued = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert limiter.stats().waiters == 0
    assert limiter.stats().granted == 1
    assert limiter.try_acquire() is True  # the grant it was waiting for is still there


# ------------------------------------------------------------------------------------------- bulkhead


async def test_bulkhead_never_exceeds_max_concurrency() -> None:
    bh = Bulkhead("db", BulkheadConfig(max_concurrent=7))
    active = 0
    peak = 0

    async def call() -> None:
        nonlocal active, peak
        async with bh:
            active += 1
            peak = max(peak, active)
            assert bh.in_use <= bh.max_concurrent
            for _ in range(3):
                await asyncio.sleep(0)
            active -= 1

    await asyncio.gather(*(call() for _ in range(100)))
    assert peak == 7  # reached the cap (so it is not serialising everything) and never passed it
    assert bh.in_use == 0


async def test_bulkhead_max_wait_zero_rejects_when_full() -> None:
    bh = Bulkhead("db", BulkheadConfig(max_concurrent=1), max_wait_s=0)
    async with bh:
        with pytest.raises(BulkheadFullError):
            async with bh:
                pass
    assert bh.rejected == 1
    async with bh:  # free again
        assert bh.in_use == 1


async def test_bulkhead_max_wait_times_out_or_gets_a_freed_slot() -> None:
    bh = Bulkhead("db", BulkheadConfig(max_concurrent=1), max_wait_s=0.01)
    async with bh:
        with pytest.raises(BulkheadFullError):
            async with bh:
                pass
    release = asyncio.Event()

    async def holder() -> None:
        async with bh:
            await release.wait()

    task = asyncio.create_task(holder())
    await asyncio.sleep(0)
    assert bh.in_use == 1
    asyncio.get_running_loop().call_soon(release.set)  # the holder leaves while we wait
    bh.max_wait_s = 5.0
    async with bh:
        assert bh.in_use == 1
    await task
    assert bh.in_use == 0


async def test_bulkhead_releases_on_error_and_on_cancelled_wait() -> None:
    bh = Bulkhead("db", BulkheadConfig(max_concurrent=1))
    with pytest.raises(ValueError):
        async with bh:
            raise ValueError("stage bug")
    assert bh.in_use == 0
    async with bh:
        waiter = asyncio.create_task(bh.__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert bh.in_use == 0
    async with bh:  # the cancelled waiter left no slot taken
        assert bh.in_use == 1


# ---------------------------------------------------------------------------------------------- retry


def test_compute_backoff_grows_and_caps_without_jitter() -> None:
    policy = RetryPolicy(initial_backoff_s=0.5, multiplier=2.0, max_backoff_s=5.0, jitter=0.0)
    rng = random.Random(1)
    assert [compute_backoff(policy, n, rng) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    huge = RetryPolicy(initial_backoff_s=1.0, multiplier=100.0, max_backoff_s=7.0, jitter=0.0)
    assert compute_backoff(huge, 100, rng) == 7.0  # 100**99 overflows a float: still the cap
    with pytest.raises(ValueError):
        compute_backoff(policy, 0, rng)


def test_compute_backoff_jitter_stays_within_bounds_and_spreads() -> None:
    policy = RetryPolicy(initial_backoff_s=1.0, multiplier=3.0, max_backoff_s=6.0, jitter=0.25)
    rng = random.Random(42)
    for attempt, base in [(1, 1.0), (2, 3.0), (3, 6.0), (10, 6.0)]:
        samples = [compute_backoff(policy, attempt, rng) for _ in range(2000)]
        assert all(base * 0.75 <= s <= base * 1.25 for s in samples)
        assert min(samples) < base * 0.8 and max(samples) > base * 1.2  # really jittered
    again = [compute_backoff(policy, 2, random.Random(7)) for _ in range(2)]
    assert again[0] == again[1]  # deterministic for a seeded rng


def test_is_retryable_matches_class_names_anywhere_in_the_mro() -> None:
    policy = RetryPolicy()
    assert is_retryable(TransientError("x"), policy)
    assert is_retryable(ConnectionResetError(), policy)  # via ConnectionError / OSError
    assert is_retryable(TimeoutError(), policy)
    request = httpx.Request("GET", "https://example.test")
    status_error = httpx.HTTPStatusError("x", request=request, response=httpx.Response(502, request=request))
    assert is_retryable(status_error, policy)  # via httpx.HTTPError
    assert not is_retryable(ValueError("bad input"), policy)
    assert not is_retryable(KeyError("k"), policy)
    assert not is_retryable(TransientError("x"), RetryPolicy(retry_on=["OSError"]))


class _Response:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code = status
        self.headers = headers


class _HTTPFailure(Exception):
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__(f"HTTP {status}")
        self.response = _Response(status, headers)


NOW = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC)


def test_retry_after_from_attributes() -> None:
    assert retry_after_of(TransientError("slow down", retry_after=3.5)) == 3.5
    assert retry_after_of(TransientError("hiccup")) is None
    assert retry_after_of(ValueError()) is None


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_header_in_seconds_and_http_date(status: int) -> None:
    assert retry_after_of(_HTTPFailure(status, {"Retry-After": "120"}), now=NOW) == 120.0
    assert retry_after_of(_HTTPFailure(status, {"retry-after": " 7 "}), now=NOW) == 7.0
    date = email.utils.format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert retry_after_of(_HTTPFailure(status, {"Retry-After": date}), now=NOW) == pytest.approx(30.0)
    past = email.utils.format_datetime(NOW - timedelta(seconds=30), usegmt=True)
    assert retry_after_of(_HTTPFailure(status, {"Retry-After": past}), now=NOW) == 0.0


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (500, {"Retry-After": "5"}),  # only 429 and 503 carry a meaningful Retry-After
        (502, {"Retry-After": "5"}),
        (429, {}),
        (429, {"Retry-After": "soon"}),
        (503, {"Retry-After": ""}),
    ],
)
def test_retry_after_ignored_otherwise(status: int, headers: dict[str, str]) -> None:
    assert retry_after_of(_HTTPFailure(status, headers), now=NOW) is None


def test_retry_after_from_a_real_httpx_error() -> None:
    request = httpx.Request("GET", "https://example.test")
    response = httpx.Response(429, headers={"retry-after": "9"}, request=request)
    exc = httpx.HTTPStatusError("too many", request=request, response=response)
    assert retry_after_of(exc) == 9.0
    assert retry_after_of(httpx.ConnectError("refused", request=request)) is None


def _flaky(failures: list[BaseException]) -> tuple[Any, list[int]]:
    calls: list[int] = []

    async def fn() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "ok"

    return fn, calls


NO_JITTER = {"initial_backoff_s": 1.0, "multiplier": 2.0, "max_backoff_s": 60.0, "jitter": 0.0}


async def test_call_with_retry_retries_transient_errors_then_succeeds(clock: FakeClock) -> None:
    fn, calls = _flaky([TransientError("a"), ConnectionResetError("b")])
    seen: list[tuple[int, str, float]] = []

    async def on_retry(attempt: int, exc: Exception, delay: float) -> None:
        seen.append((attempt, type(exc).__name__, delay))

    policy = RetryPolicy(attempts=5, **NO_JITTER)
    result = await call_with_retry(fn, policy, clock=clock, rng=random.Random(0), on_retry=on_retry)
    assert result == ("ok", 3)
    assert len(calls) == 3
    assert clock.sleeps == [1.0, 2.0]
    assert seen == [(1, "TransientError", 1.0), (2, "ConnectionResetError", 2.0)]


async def test_call_with_retry_does_not_retry_a_value_error(clock: FakeClock) -> None:
    fn, calls = _flaky([ValueError("bad symbol")])
    with pytest.raises(ValueError, match="bad symbol") as info:
        await call_with_retry(fn, RetryPolicy(attempts=5), clock=clock, rng=random.Random(0))
    assert len(calls) == 1
    assert info.value.attempts == 1  # type: ignore[attr-defined]
    assert clock.sleeps == []


async def test_call_with_retry_gives_up_after_the_attempts(clock: FakeClock) -> None:
    fn, calls = _flaky([TransientError(f"#{i}") for i in range(10)])
    with pytest.raises(TransientError, match="#2") as info:
        await call_with_retry(fn, RetryPolicy(attempts=3, **NO_JITTER), clock=clock, rng=random.Random(0))
    assert len(calls) == 3
    assert info.value.attempts == 3  # type: ignore[attr-defined]
    assert clock.sleeps == [1.0, 2.0]


async def test_call_with_retry_stops_before_sleeping_past_max_elapsed(clock: FakeClock) -> None:
    async def slow_failure() -> str:
        clock.advance(0.5)  # each call itself takes time, which counts too
        raise TransientError("still down")

    policy = RetryPolicy(attempts=50, max_elapsed_s=5.0, **NO_JITTER)
    with pytest.raises(TransientError) as info:
        await call_with_retry(slow_failure, policy, clock=clock, rng=random.Random(0))
    # t=0.5 fail, sleep 1 -> t=2.0 fail, sleep 2 -> t=4.5 fail; sleeping 4 would end at 8.5 > 5: stop.
    assert info.value.attempts == 3  # type: ignore[attr-defined]
    assert clock.sleeps == [1.0, 2.0]
    assert clock.monotonic() <= 5.0


async def test_call_with_retry_honours_retry_after(clock: FakeClock) -> None:
    fn, _ = _flaky([TransientError("throttled", retry_after=7.0), _HTTPFailure(429, {"Retry-After": "11"})])
    policy = RetryPolicy(attempts=3, retry_on=["TransientError", "_HTTPFailure"], **NO_JITTER)
    assert await call_with_retry(fn, policy, clock=clock, rng=random.Random(0)) == ("ok", 3)
    assert clock.sleeps[0] >= 7.0
    assert clock.sleeps[1] >= 11.0
    # A Retry-After shorter than the backoff does not shorten it.
    fn, _ = _flaky([TransientError("x", retry_after=0.1)])
    clock.sleeps.clear()
    await call_with_retry(fn, policy, clock=clock, rng=random.Random(0))
    assert clock.sleeps == [1.0]


async def test_call_with_retry_can_ignore_retry_after(clock: FakeClock) -> None:
    fn, _ = _flaky([TransientError("throttled", retry_after=7.0)])
    policy = RetryPolicy(attempts=2, honour_retry_after=False, **NO_JITTER)
    await call_with_retry(fn, policy, clock=clock, rng=random.Random(0))
    assert clock.sleeps == [1.0]


async def test_call_with_retry_gives_up_when_retry_after_exceeds_max_elapsed(clock: FakeClock) -> None:
    fn, calls = _flaky([TransientError("come back in an hour", retry_after=3600.0)])
    policy = RetryPolicy(attempts=5, max_elapsed_s=60.0, **NO_JITTER)
    with pytest.raises(TransientError):
        await call_with_retry(fn, policy, clock=clock, rng=random.Random(0))
    assert len(calls) == 1
    assert clock.sleeps == []


# ------------------------------------------------------------------------------------------- registry


def test_registry_creates_caches_and_validates_keys(clock: FakeClock) -> None:
    config = ResilienceConfig(
        breakers={"memory": BreakerConfig(minimum_number_of_calls=2, sliding_window_size=2)},
        rate_limits={"news": RateLimitConfig(limit=5), "quotes": RateLimitConfig(limit=9)},
        bulkheads={"db": BulkheadConfig(max_concurrent=4)},
    )
    reg = ResilienceRegistry(config, clock)
    assert reg.breaker("memory") is reg.breaker("memory")
    assert reg.breaker("memory").config.minimum_number_of_calls == 2
    assert reg.breaker("unlisted").config == BreakerConfig()
    assert reg.limiter("news") is reg.limiter("news")
    assert reg.bulkhead("db").max_concurrent == 4
    with pytest.raises(KeyError, match=r"'nope'.*news, quotes"):
        reg.limiter("nope")
    with pytest.raises(KeyError, match=r"'nope'.*db"):
        reg.bulkhead("nope")


def test_registry_snapshot_and_state_listeners(clock: FakeClock) -> None:
    config = ResilienceConfig(
        breakers={"memory": BreakerConfig(minimum_number_of_calls=2, sliding_window_size=2)},
        rate_limits={"news": RateLimitConfig(limit=5)},
        bulkheads={"db": BulkheadConfig(max_concurrent=4)},
    )
    reg = ResilienceRegistry(config, clock)
    changes: list[tuple[str, BreakerState, BreakerState]] = []
    reg.on_breaker_state_change.append(lambda *change: changes.append(change))
    fail(reg.breaker("memory"), 2)
    fail(reg.breaker("late"), 10)  # created after the listener was added
    assert reg.limiter("news").try_acquire()
    snap = reg.snapshot()
    assert snap["breakers"]["memory"]["state"] == "open"
    assert snap["breakers"]["memory"]["failure_rate"] == 100.0
    assert snap["breakers"]["late"]["state"] == "open"
    assert snap["rate_limits"]["news"]["granted"] == 1
    assert snap["bulkheads"]["db"] == {"in_use": 0, "max_concurrent": 4, "rejected": 0}
    assert changes == [
        ("memory", BreakerState.CLOSED, BreakerState.OPEN),
        ("late", BreakerState.CLOSED, BreakerState.OPEN),
    ]
