"""Resilience primitives the engine wraps around stage calls: circuit breaker, rate limiter, bulkhead, retry.

Why in-house rather than a library: the mature Python breakers (pybreaker, aiobreaker, circuitbreaker)
trip on a count of consecutive failures, not on failure/slow-call *rates* over a sliding window as
resilience4j does, and a dependency that answers every call in 30 s never trips a failure counter.
The one package we found with resilience4j-style rate and slow-call windows (interlock-cb) is very new;
tenacity covers retries only and aiolimiter is a leaky bucket without the window guarantee below.
The module is stdlib-only, uses one injectable ``Clock`` (so every behaviour is testable in
virtual time) and maps one-to-one onto the settings in ``pipeline/policy.py``.

Everything here is single-event-loop code: no locking beyond asyncio's, no threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import enum
import inspect
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, TypeVar

from jax_assistant.pipeline.policy import (
    BreakerConfig,
    BulkheadConfig,
    RateLimitConfig,
    ResilienceConfig,
    RetryPolicy,
)

__all__ = [
    "BreakerMetrics",
    "BreakerPermit",
    "BreakerState",
    "Bulkhead",
    "BulkheadFullError",
    "CallNotPermittedError",
    "CircuitBreaker",
    "Clock",
    "FakeClock",
    "LimiterStats",
    "RateLimiter",
    "ResilienceRegistry",
    "StateListener",
    "SystemClock",
    "call_with_retry",
    "compute_backoff",
    "is_retryable",
    "retry_after_of",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


# --------------------------------------------------------------------------------------------- clock


class Clock(Protocol):
    """Time source for every primitive here; tests swap in ``FakeClock`` to run in virtual time."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """Virtual time for tests: ``sleep`` advances the clock at once instead of waiting.

    Sleeps are serialised, not overlapped: two tasks that each sleep 5 s move the clock 10 s. That is
    exact for code that sleeps while holding a lock (the rate limiter) and for one sleeper at a time.
    ``sleeps`` records every requested sleep so tests can assert on backoff and Retry-After.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.sleeps.append(seconds)
        self._now += seconds
        # Still a suspension point, so other tasks get to run as they would around a real sleep.
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += seconds


# ------------------------------------------------------------------------------------ circuit breaker


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CallNotPermittedError(Exception):
    """The breaker is OPEN (or HALF_OPEN with every trial permit taken): the call was not made.

    ``retry_after`` is the time left in the OPEN wait, when known. Deliberately not a TransientError:
    retrying into an open breaker only burns attempts.
    """

    def __init__(self, name: str, *, state: BreakerState, retry_after: float | None = None) -> None:
        super().__init__(f"circuit breaker {name!r} is {state.value}; call not permitted")
        self.name = name
        self.state = state
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class BreakerMetrics:
    """Rates are percentages of the calls now in the window (0.0 when it is empty); they are compared
    with the thresholds only once ``minimum_number_of_calls`` are in the window."""

    failure_rate: float
    slow_call_rate: float
    calls: int
    failed: int
    slow: int
    not_permitted: int


class BreakerPermit:
    """Ties an outcome to the state episode it was acquired in, so a call that started before a
    transition (e.g. CLOSED, finishing after the breaker went HALF_OPEN) is not counted as a trial.
    One instance per episode: acquiring allocates nothing."""

    __slots__ = ("generation",)

    def __init__(self, generation: int) -> None:
        self.generation = generation


# Outcome codes stored in the windows: bit 0 = failed, bit 1 = slow.
_FAILED = 1
_SLOW = 2


class _CountWindow:
    """The last ``size`` outcomes in a ring buffer, with running totals: O(1) per call."""

    __slots__ = ("_buf", "_full", "_pos", "_size", "calls", "failed", "slow")

    def __init__(self, size: int) -> None:
        self._size = size
        self._buf = bytearray(size)
        self._pos = 0
        self._full = False
        self.calls = 0
        self.failed = 0
        self.slow = 0

    def record(self, code: int, now: float) -> None:
        pos = self._pos
        if self._full:
            old = self._buf[pos]
            self.failed -= old & _FAILED
            self.slow -= old >> 1
        else:
            self.calls += 1
        self._buf[pos] = code
        self.failed += code & _FAILED
        self.slow += code >> 1
        pos += 1
        if pos == self._size:
            pos = 0
            self._full = True
        self._pos = pos

    def totals(self, now: float) -> tuple[int, int, int]:
        return self.calls, self.failed, self.slow


class _TimeWindow:
    """Outcomes of the last ``size`` seconds, aggregated into 1-second buckets with running totals.

    Recording touches one bucket; moving to a new second evicts the buckets that fell out of the
    window, at most ``size`` of them however long the gap, so the cost per call is O(1) amortised.
    """

    __slots__ = ("_calls", "_failed", "_head", "_size", "_slow", "calls", "failed", "slow")

    def __init__(self, size: int) -> None:
        self._size = size
        self._calls = [0] * size
        self._failed = [0] * size
        self._slow = [0] * size
        self._head: int | None = None  # the latest epoch second seen
        self.calls = 0
        self.failed = 0
        self.slow = 0

    def _advance(self, now: float) -> int:
        """Evict buckets that left the window by ``now``; returns the index of ``now``'s bucket."""
        sec = math.floor(now)
        size = self._size
        head = self._head
        if head is not None:
            if sec <= head:
                # Same second (or a clock that stepped back): the current bucket takes it.
                return head % size
            for s in range(head + 1, head + 1 + min(sec - head, size)):
                i = s % size
                self.calls -= self._calls[i]
                self.failed -= self._failed[i]
                self.slow -= self._slow[i]
                self._calls[i] = self._failed[i] = self._slow[i] = 0
        self._head = sec
        return sec % size

    def record(self, code: int, now: float) -> None:
        i = self._advance(now)
        failed = code & _FAILED
        slow = code >> 1
        self._calls[i] += 1
        self._failed[i] += failed
        self._slow[i] += slow
        self.calls += 1
        self.failed += failed
        self.slow += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        self._advance(now)
        return self.calls, self.failed, self.slow


StateListener = Callable[[str, BreakerState, BreakerState], None]
"""Called as ``listener(breaker_name, old_state, new_state)`` on every transition."""


class CircuitBreaker:
    """A circuit breaker with resilience4j semantics (CLOSED / OPEN / HALF_OPEN, rate-based windows).

    Use ``async with breaker.guard(): ...`` or the low-level ``acquire`` + ``on_success`` / ``on_error``.
    Exceptions in ``ignore_exceptions`` (and any BaseException that is not an Exception) are neither
    successes nor failures; in HALF_OPEN they hand their trial permit back.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        clock: Clock | None = None,
        *,
        ignore_exceptions: tuple[type[BaseException], ...] = (asyncio.CancelledError,),
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self.clock: Clock = clock or SystemClock()
        self.ignore_exceptions = ignore_exceptions
        self.on_state_change: list[StateListener] = []
        self._now = self.clock.monotonic
        self._slow_threshold = self.config.slow_call_duration_threshold_s
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._permit = BreakerPermit(0)
        self._window: _CountWindow | _TimeWindow = self._closed_window()
        self._min_calls = self.config.minimum_number_of_calls
        self._opened_at = 0.0
        self._trial_permits = 0
        self._not_permitted = 0

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state.value})"

    @property
    def state(self) -> BreakerState:
        return self._state

    # -- low-level API

    def acquire(self) -> BreakerPermit:
        """Permission to make one call, or ``CallNotPermittedError``. Report the outcome afterwards."""
        state = self._state
        if state is BreakerState.CLOSED:
            return self._permit
        if state is BreakerState.OPEN:
            remaining = self._opened_at + self.config.wait_duration_in_open_s - self._now()
            if remaining > 0:
                self._not_permitted += 1
                raise CallNotPermittedError(self.name, state=state, retry_after=remaining)
            self._transition(BreakerState.HALF_OPEN)
        # HALF_OPEN: a fixed budget of trial calls per episode; permits are not returned on completion.
        if self._trial_permits > 0:
            self._trial_permits -= 1
            return self._permit
        self._not_permitted += 1
        raise CallNotPermittedError(self.name, state=BreakerState.HALF_OPEN)

    def on_success(self, duration_s: float, permit: BreakerPermit | None = None) -> None:
        """Record a successful call (still counted slow if it took too long)."""
        self._record(duration_s, 0, permit)

    def on_error(self, duration_s: float, exc: BaseException, permit: BreakerPermit | None = None) -> None:
        """Record a failed call, unless ``exc`` is one of the ignored kinds."""
        if not isinstance(exc, Exception) or isinstance(exc, self.ignore_exceptions):
            self.release(permit)
            return
        self._record(duration_s, _FAILED, permit)

    def release(self, permit: BreakerPermit | None = None) -> None:
        """Give a permit back without recording an outcome (the call was never really made)."""
        if self._state is BreakerState.HALF_OPEN and (permit is None or permit is self._permit):
            self._trial_permits = min(
                self._trial_permits + 1, self.config.permitted_number_of_calls_in_half_open
            )

    def guard(self) -> _Guard:
        """``async with breaker.guard():`` times the block and records its outcome; exceptions propagate."""
        return _Guard(self)

    def metrics(self) -> BreakerMetrics:
        calls, failed, slow = self._window.totals(self._now())
        return BreakerMetrics(
            failure_rate=failed * 100.0 / calls if calls else 0.0,
            slow_call_rate=slow * 100.0 / calls if calls else 0.0,
            calls=calls,
            failed=failed,
            slow=slow,
            not_permitted=self._not_permitted,
        )

    def reset(self) -> None:
        """Back to CLOSED with an empty window (an operator's override)."""
        self._transition(BreakerState.CLOSED)

    # -- internals

    def _closed_window(self) -> _CountWindow | _TimeWindow:
        cfg = self.config
        if cfg.sliding_window_type == "time":
            return _TimeWindow(cfg.sliding_window_size)
        return _CountWindow(cfg.sliding_window_size)

    def _record(
        self, duration_s: float, code: int, permit: BreakerPermit | None, now: float | None = None
    ) -> None:
        if permit is not None and permit is not self._permit:
            return  # acquired in an earlier state episode: its outcome says nothing about this one
        if duration_s > self._slow_threshold:
            code |= _SLOW
        window = self._window
        window.record(code, self._now() if now is None else now)
        state = self._state
        if state is BreakerState.CLOSED:
            if window.calls >= self._min_calls and self._over_threshold(window):
                self._transition(BreakerState.OPEN)
        elif state is BreakerState.HALF_OPEN and window.calls >= self._min_calls:
            # Every trial call has reported: decide.
            self._transition(BreakerState.OPEN if self._over_threshold(window) else BreakerState.CLOSED)
        # OPEN: recorded (a call without a permit) but never evaluated, as in resilience4j.

    def _over_threshold(self, window: _CountWindow | _TimeWindow) -> bool:
        # Compared as products to stay exact: failed / calls * 100 >= threshold.
        calls = window.calls
        cfg = self.config
        return (
            window.failed * 100.0 >= cfg.failure_rate_threshold * calls
            or window.slow * 100.0 >= cfg.slow_call_rate_threshold * calls
        )

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._permit = BreakerPermit(self._generation)
        cfg = self.config
        if new is BreakerState.OPEN:
            self._opened_at = self._now()
            # The window that tripped stays visible in metrics() while OPEN.
        elif new is BreakerState.HALF_OPEN:
            n = cfg.permitted_number_of_calls_in_half_open
            self._window = _CountWindow(n)
            self._min_calls = n
            self._trial_permits = n
        else:
            self._window = self._closed_window()
            self._min_calls = cfg.minimum_number_of_calls
        log.info("circuit breaker %s: %s -> %s", self.name, old.value, new.value)
        for listener in list(self.on_state_change):
            try:
                listener(self.name, old, new)
            except Exception:  # a broken metrics hook must not break the breaker
                log.exception("circuit breaker %s: state listener failed", self.name)


class _Guard:
    """The ``guard()`` context manager, a plain class: cheaper than an ``asynccontextmanager``."""

    __slots__ = ("_breaker", "_permit", "_start")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._permit: BreakerPermit | None = None
        self._start = 0.0

    async def __aenter__(self) -> BreakerPermit:
        permit = self._breaker.acquire()
        self._permit = permit
        self._start = self._breaker._now()
        return permit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        breaker = self._breaker
        end = breaker._now()
        if exc is None:
            breaker._record(end - self._start, 0, self._permit, end)
        elif isinstance(exc, Exception) and not isinstance(exc, breaker.ignore_exceptions):
            breaker._record(end - self._start, _FAILED, self._permit, end)
        else:
            breaker.release(self._permit)


# --------------------------------------------------------------------------------------- rate limiter


@dataclass(frozen=True, slots=True)
class LimiterStats:
    granted: int
    rejected: int  # try_acquire() refusals
    waited_total_s: float
    waiters: int


# Waits shorter than this count as zero, so float rounding (now + wait landing a hair before the
# target) cannot loop forever on vanishing sleeps. A nanosecond is far below any clock we run on.
_EPSILON_S = 1e-9


class RateLimiter:
    """At most ``limit`` grants in any window of ``period_s``; up to ``burst`` of them back to back.

    Two mechanisms, both needed:

    * a token bucket of capacity ``burst`` refilled at ``limit / period_s`` spaces grants out and
      allows short bursts;
    * a sliding-window log of the last ``limit`` grant times enforces the hard cap. A bucket alone
      does not: starting full it grants ``burst`` at once and then refills another ``limit`` tokens
      over the next ``period_s``, so one window can hold ``burst + limit - 1`` grants - nearly twice
      a provider's "60 per minute", enough to get throttled.

    Waiters are served strictly in arrival order (an ``asyncio.Lock`` is FIFO, and nobody may take
    the fast path while anyone is queued), so a steady stream of new callers cannot starve old ones.
    """

    def __init__(self, name: str, config: RateLimitConfig, clock: Clock | None = None) -> None:
        self.name = name
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._now = self.clock.monotonic
        self._limit = config.limit
        self._period = config.period_s
        self._capacity = float(config.burst or config.limit)
        self._rate = config.limit / config.period_s  # tokens per second
        self._tokens = self._capacity
        self._refilled_at = self._now()
        self._log: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()
        self._waiters = 0
        self._granted = 0
        self._rejected = 0
        self._waited_total = 0.0

    def __repr__(self) -> str:
        return f"RateLimiter({self.name!r}, limit={self._limit}/{self._period}s)"

    def _wait_time(self, now: float) -> float:
        """Seconds until a grant is allowed at ``now`` (0 if allowed now). Refills the bucket."""
        tokens = self._tokens + (now - self._refilled_at) * self._rate
        self._tokens = tokens if tokens < self._capacity else self._capacity
        self._refilled_at = now
        log_ = self._log
        cutoff = now - self._period + _EPSILON_S
        while log_ and log_[0] <= cutoff:
            log_.popleft()
        bucket_wait = 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self._rate
        window_wait = log_[0] + self._period - now if len(log_) >= self._limit else 0.0
        return bucket_wait if bucket_wait > window_wait else window_wait

    def _grant(self, now: float) -> None:
        self._tokens -= 1.0
        self._log.append(now)
        self._granted += 1

    def try_acquire(self) -> bool:
        """Take a grant now if one is free and nobody is queued; never waits."""
        if self._waiters == 0:
            now = self._now()
            if self._wait_time(now) <= _EPSILON_S:
                self._grant(now)
                return True
        self._rejected += 1
        return False

    async def acquire(self) -> float:
        """Wait for a grant in FIFO order; returns the seconds waited (0.0 on the fast path)."""
        if self._waiters == 0:
            now = self._now()
            if self._wait_time(now) <= _EPSILON_S:
                self._grant(now)
                return 0.0
        start = self._now()
        self._waiters += 1
        try:
            # The head of the queue sleeps while holding the lock; the rest wait their turn on it.
            # Cancelled while waiting or sleeping: nothing was taken, the next waiter moves up.
            async with self._lock:
                while True:
                    now = self._now()
                    wait = self._wait_time(now)
                    if wait <= _EPSILON_S:
                        self._grant(now)
                        break
                    await self.clock.sleep(wait)
        finally:
            self._waiters -= 1
        waited = now - start
        self._waited_total += waited
        return waited

    def stats(self) -> LimiterStats:
        return LimiterStats(
            granted=self._granted,
            rejected=self._rejected,
            waited_total_s=self._waited_total,
            waiters=self._waiters,
        )


# ------------------------------------------------------------------------------------------- bulkhead


class BulkheadFullError(Exception):
    """No slot freed up within the bulkhead's ``max_wait_s``."""

    def __init__(self, name: str, max_concurrent: int, max_wait_s: float) -> None:
        super().__init__(f"bulkhead {name!r} is full ({max_concurrent} in use; waited {max_wait_s}s)")
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_wait_s = max_wait_s


class Bulkhead:
    """Caps concurrent calls to one dependency: ``async with bulkhead: ...``.

    ``max_wait_s=None`` waits as long as it takes; otherwise a caller that gets no slot within
    ``max_wait_s`` (0 = only if one is free now) gets ``BulkheadFullError``. The wait uses the event
    loop's real time: a bulkhead only ever waits on other tasks, never on virtual time.
    """

    def __init__(self, name: str, config: BulkheadConfig, *, max_wait_s: float | None = None) -> None:
        if max_wait_s is not None and max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")
        self.name = name
        self.config = config
        self.max_wait_s = max_wait_s
        self._sem = asyncio.Semaphore(config.max_concurrent)
        self._in_use = 0
        self._rejected = 0

    def __repr__(self) -> str:
        return f"Bulkhead({self.name!r}, {self._in_use}/{self.max_concurrent})"

    @property
    def max_concurrent(self) -> int:
        return self.config.max_concurrent

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def rejected(self) -> int:
        return self._rejected

    async def __aenter__(self) -> Bulkhead:
        sem = self._sem
        max_wait = self.max_wait_s
        if max_wait is None or not sem.locked():
            await sem.acquire()  # returns without suspending when a slot is free
        elif max_wait == 0:
            self._rejected += 1
            raise BulkheadFullError(self.name, self.max_concurrent, max_wait)
        else:
            try:
                # Semaphore.acquire gives the slot back itself if the timeout lands after the handover.
                async with asyncio.timeout(max_wait):
                    await sem.acquire()
            except TimeoutError:
                self._rejected += 1
                raise BulkheadFullError(self.name, self.max_concurrent, max_wait) from None
        self._in_use += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._in_use -= 1
        self._sem.release()


# ---------------------------------------------------------------------------------------------- retry


def compute_backoff(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (1 = after the first call failed).

    ``initial * multiplier**(attempt-1)`` capped at ``max_backoff_s``, then spread uniformly by
    +/- ``jitter`` of itself so that callers failing together do not retry in lockstep. The result lies
    in ``[d * (1 - jitter), d * (1 + jitter)]`` for the capped delay ``d``.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    try:
        delay = policy.initial_backoff_s * policy.multiplier ** (attempt - 1)
    except OverflowError:  # e.g. multiplier 100, attempt 100: far past any cap
        delay = math.inf
    delay = min(delay, policy.max_backoff_s)
    if policy.jitter:
        delay *= 1.0 + policy.jitter * rng.uniform(-1.0, 1.0)
    return max(0.0, delay)


def is_retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    """True if any class in ``exc``'s MRO is named in ``policy.retry_on``.

    Names, not classes, so config can name exceptions from libraries that are not imported here
    (``HTTPError`` matches httpx's ``HTTPStatusError`` and ``ConnectError`` through their bases).
    """
    wanted = policy.retry_on
    return any(cls.__name__ in wanted for cls in type(exc).__mro__)


def _parse_retry_after(value: str, now: datetime | None) -> float | None:
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)  # RFC 9110 says integer delay-seconds; accept "1.5" too
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT by definition
        when = when.replace(tzinfo=UTC)
    reference = now or datetime.now(UTC)
    return max(0.0, (when - reference).total_seconds())


def retry_after_of(exc: BaseException, *, now: datetime | None = None) -> float | None:
    """Seconds the failing dependency asked us to wait, or None.

    Looks at a numeric ``retry_after`` attribute (``TransientError``, ``CallNotPermittedError``), then at
    an HTTP response on ``exc.response`` (the httpx ``HTTPStatusError`` shape, duck-typed) whose status
    is 429 or 503 and that carries ``Retry-After`` as delay-seconds or an HTTP-date. ``now`` (UTC) is
    the reference for HTTP-dates; the wall clock by default.
    """
    direct = getattr(exc, "retry_after", None)
    if isinstance(direct, int | float) and not isinstance(direct, bool) and math.isfinite(direct):
        return max(0.0, float(direct))
    try:
        # Some libraries raise from the property when no response is attached.
        response = getattr(exc, "response", None)
    except Exception:
        return None
    if response is None:
        return None
    status = getattr(response, "status_code", None)
    if status is None:
        status = getattr(response, "status", None)
    if status not in (429, 503):
        return None
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("Retry-After")
        if value is None:
            value = headers.get("retry-after")  # a plain dict is case-sensitive
    except Exception:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    return _parse_retry_after(value, now)


OnRetry = Callable[[int, Exception, float], Awaitable[None] | None]
"""``on_retry(failed_attempt, exc, delay_s)``: called before each backoff sleep (sync or async)."""


def _set_attempts(exc: BaseException, attempts: int) -> None:
    # An exception type with __slots__ and no __dict__ has nowhere to put it; the error still propagates.
    with contextlib.suppress(AttributeError):
        exc.attempts = attempts  # type: ignore[attr-defined]


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    clock: Clock,
    rng: random.Random,
    on_retry: OnRetry | None = None,
) -> tuple[T, int]:
    """Call ``fn`` until it succeeds; returns ``(result, attempts)``.

    Retries only errors ``is_retryable`` accepts, sleeping ``compute_backoff`` (or the server's
    Retry-After if longer, when ``policy.honour_retry_after``). Gives up after ``policy.attempts``
    calls, or when the next sleep would end past ``policy.max_elapsed_s`` since the first call - no
    point sleeping only to be out of time. The last error is re-raised with ``exc.attempts`` set.
    Cancellation is never retried (it is not an ``Exception``).
    """
    start = clock.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn(), attempt
        except Exception as exc:
            if attempt >= policy.attempts or not is_retryable(exc, policy):
                _set_attempts(exc, attempt)
                raise
            delay = compute_backoff(policy, attempt, rng)
            if policy.honour_retry_after:
                server_delay = retry_after_of(exc)
                if server_delay is not None and server_delay > delay:
                    delay = server_delay
            if policy.max_elapsed_s is not None and clock.monotonic() - start + delay > policy.max_elapsed_s:
                _set_attempts(exc, attempt)
                raise
            if on_retry is not None:
                pending = on_retry(attempt, exc, delay)
                if inspect.isawaitable(pending):
                    await pending
            await clock.sleep(delay)


# ------------------------------------------------------------------------------------------- registry


class ResilienceRegistry:
    """One breaker / limiter / bulkhead per dependency key, created on first use and shared.

    Breakers fall back to default settings for unconfigured keys (any dependency deserves one); a
    limiter or bulkhead has no sensible default, so an unknown key is a configuration error.
    ``on_breaker_state_change`` listeners hear about every breaker, including ones created later.
    """

    def __init__(
        self,
        config: ResilienceConfig,
        clock: Clock | None = None,
        *,
        breaker_ignore_exceptions: tuple[type[BaseException], ...] = (asyncio.CancelledError,),
        bulkhead_max_wait_s: float | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.breaker_ignore_exceptions = breaker_ignore_exceptions
        self.bulkhead_max_wait_s = bulkhead_max_wait_s
        self.on_breaker_state_change: list[StateListener] = []
        self._breakers: dict[str, CircuitBreaker] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._bulkheads: dict[str, Bulkhead] = {}

    def breaker(self, key: str) -> CircuitBreaker:
        found = self._breakers.get(key)
        if found is None:
            found = CircuitBreaker(
                key,
                self.config.breakers.get(key) or BreakerConfig(),
                self.clock,
                ignore_exceptions=self.breaker_ignore_exceptions,
            )
            found.on_state_change.append(self._fan_out)
            self._breakers[key] = found
        return found

    def limiter(self, key: str) -> RateLimiter:
        found = self._limiters.get(key)
        if found is None:
            cfg = self.config.rate_limits.get(key)
            if cfg is None:
                raise KeyError(_unknown(key, "rate limit", self.config.rate_limits))
            found = self._limiters[key] = RateLimiter(key, cfg, self.clock)
        return found

    def bulkhead(self, key: str) -> Bulkhead:
        found = self._bulkheads.get(key)
        if found is None:
            cfg = self.config.bulkheads.get(key)
            if cfg is None:
                raise KeyError(_unknown(key, "bulkhead", self.config.bulkheads))
            found = self._bulkheads[key] = Bulkhead(key, cfg, max_wait_s=self.bulkhead_max_wait_s)
        return found

    def snapshot(self) -> dict[str, Any]:
        """Every configured (or already used) breaker, limiter and bulkhead, JSON-ready."""
        for key in self.config.breakers:
            self.breaker(key)
        for key in self.config.rate_limits:
            self.limiter(key)
        for key in self.config.bulkheads:
            self.bulkhead(key)
        return {
            "breakers": {
                key: {"state": b.state.value, **_flat(b.metrics())}
                for key, b in sorted(self._breakers.items())
            },
            "rate_limits": {key: _flat(lim.stats()) for key, lim in sorted(self._limiters.items())},
            "bulkheads": {
                key: {"in_use": bh.in_use, "max_concurrent": bh.max_concurrent, "rejected": bh.rejected}
                for key, bh in sorted(self._bulkheads.items())
            },
        }

    def _fan_out(self, name: str, old: BreakerState, new: BreakerState) -> None:
        for listener in list(self.on_breaker_state_change):
            try:
                listener(name, old, new)
            except Exception:
                log.exception("circuit breaker %s: registry state listener failed", name)


def _flat(obj: Any) -> dict[str, Any]:
    """A flat dataclass as a dict: what ``asdict`` gives for these, without its deep copy (``/status``
    calls this for every breaker and limiter on every request)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _unknown(key: str, kind: str, configured: Iterable[str]) -> str:
    known = ", ".join(sorted(configured)) or "none"
    return f"no {kind} configured for {key!r} (configured: {known})"
