"""Token and cost budgets of a paid provider, per run and per UTC day.

A call reserves the most it may spend before it is made (prompt estimate + max completion tokens);
one that could overshoot any limit is not made, so the budget is never exceeded even with calls in
flight at once. Once refused, the run's research with that provider stops (same reason every time).
The day's spend is read from the ledger when first needed, so a new process knows what was spent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date

from jax_assistant.research.config import LLMBudget
from jax_assistant.research.http import BudgetExhaustedError
from jax_assistant.research.store import Spend


@dataclass
class Reservation:
    tokens: int
    cost: float
    day: date


class Budget:
    def __init__(
        self, limits: LLMBudget, *, provider: str, day_spend: Callable[[date], Awaitable[Spend]]
    ) -> None:
        self.limits = limits
        self.provider = provider
        self._day_spend = day_spend
        self._lock = asyncio.Lock()
        self.day: date | None = None
        self.day_spent = Spend()
        self.run_spent: dict[str, Spend] = {}
        self._reserved: dict[str, tuple[int, float]] = {}
        self._day_reserved = (0, 0.0)
        self.stopped: dict[str, str] = {}  # run id -> why research with this provider stopped

    async def reserve(self, run_id: str, today: date, tokens: int, cost: float) -> Reservation:
        if run_id in self.stopped:
            raise BudgetExhaustedError(self.stopped[run_id])
        async with self._lock:
            if self.day != today:
                self.day, self.day_spent, self._day_reserved = today, await self._day_spend(today), (0, 0.0)
        run = self.run_spent.setdefault(run_id, Spend())
        rt, rc = self._reserved.get(run_id, (0, 0.0))
        dt, dc = self._day_reserved
        lim = self.limits
        checks = (
            ("run token", lim.run_tokens, run.tokens + rt, tokens),
            ("run cost", lim.run_cost, run.cost + rc, cost),
            ("daily token", lim.day_tokens, self.day_spent.tokens + dt, tokens),
            ("daily cost", lim.day_cost, self.day_spent.cost + dc, cost),
        )
        for label, limit, used, need in checks:
            if limit is not None and used + need > limit:
                reason = (
                    f"{self.provider}: {label} budget spent ({_fmt(used)} of {_fmt(limit)} used, "
                    f"a call may need {_fmt(need)}); research stopped for this run"
                )
                self.stopped[run_id] = reason
                raise BudgetExhaustedError(reason)
        self._reserved[run_id] = (rt + tokens, rc + cost)
        self._day_reserved = (dt + tokens, dc + cost)
        return Reservation(tokens, cost, today)

    def settle(self, run_id: str, reservation: Reservation, tokens: int, cost: float) -> None:
        """Replace a reservation by what the call really spent (0 for a call that failed)."""
        rt, rc = self._reserved.get(run_id, (0, 0.0))
        self._reserved[run_id] = (rt - reservation.tokens, rc - reservation.cost)
        dt, dc = self._day_reserved
        self._day_reserved = (dt - reservation.tokens, dc - reservation.cost)
        run = self.run_spent.setdefault(run_id, Spend())
        for spend in (run, self.day_spent) if reservation.day == self.day else (run,):
            spend.calls += 1 if tokens or cost else 0
            spend.tokens += tokens
            spend.cost += cost


def _fmt(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
