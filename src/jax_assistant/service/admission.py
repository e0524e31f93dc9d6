"""Admission control: one global cap on symbols in flight across every run, and a bounded run queue.

Each run takes ``weight`` slots (the symbols it can have in flight at once: its symbol count, at most
the engine's per-run concurrency), so the cap holds however many runs are executing. A run that does
not fit waits in a FIFO queue (no later, smaller run overtakes it, so none starves); when the queue is
full the request is refused with 429 and a ``Retry-After`` estimate, and while the service shuts down
with 503.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

from jax_assistant.domain.errors import UnavailableError


class AdmissionRejectedError(UnavailableError):
    """No capacity for another run now: ``status`` 429 (queue full) or 503 (shutting down)."""

    def __init__(self, message: str, *, status: int, retry_after_s: int) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class Ticket:
    """A run's place: granted at once or queued; ``release`` frees it (idempotent, also when queued)."""

    def __init__(self, admission: Admission, weight: int) -> None:
        self._admission = admission
        self.weight = weight
        self.granted = asyncio.Event()
        self.released = False
        self.started_at: float | None = None

    async def wait(self) -> None:
        await self.granted.wait()
        self.started_at = time.monotonic()

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._admission._release(self)


class Admission:
    def __init__(self, max_in_flight: int, max_queued: int) -> None:
        self.capacity = max_in_flight
        self.max_queued = max_queued
        self.in_flight = 0
        self.admitted = 0
        self.rejected = 0
        self.resumed = 0
        self.closing = False
        self._queue: deque[Ticket] = deque()
        self._avg_run_s = 1.0  # until a run has finished: a guess, refined by each one that does
        # Bumped by every change to what snapshot() shows, so /status can keep its body until then.
        self.version = 0

    def admit(self, weight: int) -> Ticket:
        """A ticket for a run of ``weight`` slots, or AdmissionRejectedError. Never awaits."""
        self.version += 1  # whatever the outcome, a counter below changes
        self.refuse_if_full()
        ticket = Ticket(self, max(1, min(weight, self.capacity)))
        if not self._queue and self.in_flight + ticket.weight <= self.capacity:
            self._grant(ticket)
        elif len(self._queue) < self.max_queued:
            self._queue.append(ticket)
        else:  # only with max_queued 0: the queue is empty and full at once
            self._refuse()
        self.admitted += 1
        return ticket

    def refuse_if_full(self) -> None:
        """Raise what :meth:`admit` would for any run now that none can get a place (shutting down, or
        the queue full), whatever its weight. Called before validating a request, so a refusal in a
        burst costs no validation work; with a place possible it does nothing."""
        if self.closing:
            self.rejected += 1
            self.version += 1
            raise AdmissionRejectedError("the service is shutting down", status=503, retry_after_s=5)
        # Queue full: a new run would have to queue (a non-empty queue is never overtaken) or, with no
        # queue at all, fit beside what runs, which nothing does once the cap is reached.
        if len(self._queue) >= self.max_queued and (self._queue or self.in_flight >= self.capacity):
            self._refuse()

    def _refuse(self) -> None:
        self.rejected += 1
        self.version += 1
        retry = self.retry_after_s()
        raise AdmissionRejectedError(
            f"busy: {self.in_flight}/{self.capacity} symbols in flight and {len(self._queue)} run(s)"
            f" queued (the limit); retry in {retry} s",
            status=429,
            retry_after_s=retry,
        )

    def enqueue_resumed(self, weight: int) -> Ticket:
        """A ticket for a resumed run (one interrupted elsewhere, picked up at start-up): it counts
        against the same cap as a new one, but it is never refused, since its row exists already and
        refusing would only leave it for the next start-up. Queued behind earlier runs like any other."""
        self.version += 1
        ticket = Ticket(self, max(1, min(weight, self.capacity)))
        if not self._queue and self.in_flight + ticket.weight <= self.capacity:
            self._grant(ticket)
        else:
            self._queue.append(ticket)
        self.resumed += 1
        return ticket

    def retry_after_s(self) -> int:
        """Seconds until a queue place is likely free: one average run per queued run ahead, spread over
        the runs executing side by side."""
        parallel = max(1, self.capacity // max(1, self._avg_weight()))
        return max(1, math.ceil(self._avg_run_s * (len(self._queue) + 1) / parallel))

    def close(self) -> None:
        self.closing = True
        self.version += 1

    def snapshot(self) -> dict[str, object]:
        return {
            "symbolsInFlight": self.in_flight,
            "symbolCap": self.capacity,
            "queuedRuns": len(self._queue),
            "queueLimit": self.max_queued,
            "admitted": self.admitted,
            "rejected": self.rejected,
            "resumed": self.resumed,
            "retryAfterS": self.retry_after_s(),
        }

    def _avg_weight(self) -> int:
        weights = [t.weight for t in self._queue]
        return max(1, round(sum(weights) / len(weights))) if weights else 1

    def _grant(self, ticket: Ticket) -> None:
        self.in_flight += ticket.weight
        ticket.granted.set()

    def _release(self, ticket: Ticket) -> None:
        self.version += 1
        if not ticket.granted.is_set():
            self._queue.remove(ticket)  # cancelled while waiting
            return
        self.in_flight -= ticket.weight
        if ticket.started_at is not None:
            elapsed = time.monotonic() - ticket.started_at
            self._avg_run_s = 0.8 * self._avg_run_s + 0.2 * elapsed
        while self._queue and self.in_flight + self._queue[0].weight <= self.capacity:
            self._grant(self._queue.popleft())
