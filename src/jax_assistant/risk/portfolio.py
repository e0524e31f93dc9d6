"""The portfolio a run sizes against, and the in-memory book shared by its concurrent symbol tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from jax_assistant.domain import Direction, RiskResult, TradeRecord
from jax_assistant.risk.constraints import RiskConstraints, load_model_file

if TYPE_CHECKING:
    from jax_assistant.risk.allocation import Candidate, CorrelationLookup

DEFAULT_ACCOUNT_SIZE = 10_000.0


class Position(BaseModel):
    """An open position (or one reserved in this run)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    symbol: str = Field(min_length=1)
    sector: str | None = None
    direction: Direction
    entry: float = Field(gt=0)
    stop: float = Field(gt=0)
    size: int = Field(gt=0)
    opened_on: date
    setup_id: str | None = None

    @field_validator("symbol")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @property
    def value(self) -> float:
        return self.entry * self.size

    @property
    def risk(self) -> float:
        """Money lost if the stop is hit."""
        return abs(self.entry - self.stop) * self.size


class PortfolioState(BaseModel):
    """Account figures and open positions. ``equity`` defaults to ``account_size`` and ``peak_equity``
    to ``equity``. JSON files use these snake_case names (``load_portfolio_state``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    account_size: float = Field(default=DEFAULT_ACCOUNT_SIZE, gt=0)
    equity: float = Field(default_factory=lambda data: data.get("account_size", DEFAULT_ACCOUNT_SIZE), gt=0)
    peak_equity: float = Field(default_factory=lambda data: data.get("equity", DEFAULT_ACCOUNT_SIZE), gt=0)
    realised_pnl_today: float = 0.0
    open_positions: list[Position] = Field(default_factory=list)
    last_stop_out: dict[str, date] = Field(default_factory=dict, description="symbol -> last stop-out date")

    @classmethod
    def load(cls, path: str | Path) -> PortfolioState:
        """Read a portfolio JSON file (see :func:`load_portfolio_state`)."""
        return load_portfolio_state(path)

    @model_validator(mode="after")
    def _peak(self) -> PortfolioState:
        if self.peak_equity < self.equity:
            raise ValueError("peak_equity must be >= equity")
        return self

    @field_validator("last_stop_out")
    @classmethod
    def _upper_keys(cls, v: dict[str, date]) -> dict[str, date]:
        return {symbol.upper(): day for symbol, day in v.items()}

    def sector_value(self, sector: str | None) -> float:
        """Value of the open positions in ``sector`` (case-insensitive); 0 for an unknown sector."""
        if sector is None:
            return 0.0
        key = sector.casefold()
        return sum(p.value for p in self.open_positions if (p.sector or "").casefold() == key)

    @property
    def open_risk(self) -> float:
        return sum(p.risk for p in self.open_positions)


def load_portfolio_state(path: str | Path) -> PortfolioState:
    """Read a portfolio JSON file; errors name the file and the field."""
    return load_model_file(Path(path), PortfolioState)


class PortfolioBook:
    """The run's portfolio (one book per run, one event loop): the state file's positions plus what
    the run's allocation booked. ``allocate`` checks the limits and books in one critical section."""

    def __init__(self, state: PortfolioState | None = None, *, copy: bool = True) -> None:
        # copy=False: the book takes a state nobody else holds (just loaded or built) as its own; the
        # deep copy (6.7 µs) was ~1 % of a `POST /process` accept, which builds a book to validate the run.
        if state is None:
            state = PortfolioState()
        elif copy:
            state = state.model_copy(deep=True)
        self._state = state
        self._lock = asyncio.Lock()

    @classmethod
    def from_file(cls, path: str | Path) -> PortfolioBook:
        return cls(load_portfolio_state(path))

    @property
    def account_size(self) -> float:
        return self._state.account_size

    async def snapshot(self) -> PortfolioState:
        """A copy of the current state (later reservations do not change it)."""
        async with self._lock:
            return self._state.model_copy(deep=True)

    @property
    def equity(self) -> float:
        return self._state.equity

    async def allocate(
        self,
        candidates: Sequence[Candidate],
        constraints: RiskConstraints,
        *,
        as_of: date,
        correlation: CorrelationLookup | None = None,
    ) -> list[RiskResult]:
        """Allocate ``candidates`` (see :mod:`jax_assistant.risk.allocation`) and book the allowed ones,
        atomically: two callers can never both take the last slot of a limit."""
        from jax_assistant.risk.allocation import allocate  # allocation builds on this module's models

        async with self._lock:
            # Re-deciding a setup (a retried or re-run allocation) replaces its earlier booking instead
            # of competing with it, so running the same allocation twice books it once, the same way.
            again = {c.setup.id for c in candidates if c.risk.decision == "candidate"}
            base = self._state.model_copy(
                update={"open_positions": [p for p in self._state.open_positions if p.setup_id not in again]}
            )
            result = allocate(candidates, base, constraints, as_of=as_of, correlation=correlation)
            self._state = result.state
            return result.decisions

    def restore(self, trades: Iterable[TradeRecord], *, sector_of: Callable[[str], str | None]) -> int:
        """Re-book positions a run was already allocated before it was interrupted (called before it
        resumes or before a dead-letter retry, so nothing is allocating yet). Only allocated, allowed
        decisions take room, never mere candidates; setups already in the book are not added twice."""
        known = {p.setup_id for p in self._state.open_positions if p.setup_id}
        added = 0
        for t in trades:
            if (
                not t.risk.allowed
                or t.risk.decision != "allocated"
                or t.risk.position_size <= 0
                or t.setup.id in known
            ):
                continue
            self._state.open_positions.append(
                Position(
                    symbol=t.setup.symbol,
                    sector=sector_of(t.setup.symbol),
                    direction=t.setup.direction,
                    entry=t.setup.entry,
                    stop=t.setup.stop,
                    size=t.risk.position_size,
                    opened_on=(t.setup.time or t.created_at).date(),
                    setup_id=t.setup.id,
                )
            )
            known.add(t.setup.id)
            added += 1
        return added
