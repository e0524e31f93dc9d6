"""The portfolio a run sizes against, and the in-memory book shared by its concurrent symbol tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from jax_assistant.domain import Adjustment, Direction, TradeRecord, TradeSetup, Violation
from jax_assistant.risk.constraints import RiskConstraints, load_model_file
from jax_assistant.risk.protections import ViolationCode, check_protections, violation
from jax_assistant.risk.sizing import PositionSizing, fraction_of, max_units

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


class Reservation(BaseModel):
    """The portfolio-level decision for one setup, taken under the book's lock."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed: bool = Field(description="no portfolio-level violation")
    reserved: bool = Field(description="the position was added to the book")
    sizing: PositionSizing = Field(description="sizing after the sector clamp")
    violations: list[Violation] = Field(default_factory=list)
    adjustments: list[Adjustment] = Field(default_factory=list)
    sector_exposure: float = 0.0
    portfolio_risk: float = 0.0


def evaluate_portfolio(
    state: PortfolioState,
    setup: TradeSetup,
    sizing: PositionSizing,
    sector: str | None,
    *,
    constraints: RiskConstraints,
    as_of: date,
) -> Reservation:
    """Portfolio-level checks, in order: sector exposure (clamp the size, reject if nothing fits),
    portfolio risk (reject), then the protections. Pure: does not change ``state``."""
    limits = constraints.portfolio_constraints
    sector = sector.strip() or None if sector is not None else None
    violations: list[Violation] = []
    adjustments: list[Adjustment] = []
    size = sizing.position_size

    # Sector exposure (a position without a known sector is not counted against any sector).
    in_sector = state.sector_value(sector)
    if sector is not None and size > 0:
        cap = fraction_of(limits.max_sector_exposure, state.equity)
        fits = min(size, max_units(cap, setup.entry, used=in_sector))
        if fits < size:
            adjustments.append(
                Adjustment(field="position_size", requested=size, applied=fits, rule="max_sector_exposure")
            )
            if fits == 0:
                violations.append(
                    violation(
                        ViolationCode.SECTOR_EXPOSURE_TOO_HIGH,
                        f"sector {sector!r} exposure {(in_sector + size * setup.entry) / state.equity:.2%} "
                        f"would exceed max_sector_exposure {limits.max_sector_exposure:.2%} at any size",
                        limit=limits.max_sector_exposure,
                        actual=(in_sector + size * setup.entry) / state.equity,
                    )
                )
            size = fits
    final = sizing.with_size(size)
    sector_exposure = (in_sector + size * setup.entry) / state.equity if sector is not None else 0.0

    # Portfolio risk: open risk plus this trade's, against equity.
    portfolio_risk = (state.open_risk + final.total_risk) / state.equity
    if portfolio_risk > limits.max_portfolio_risk * (1 + 1e-12):
        violations.append(
            violation(
                ViolationCode.PORTFOLIO_RISK_TOO_HIGH,
                f"portfolio risk {portfolio_risk:.2%} with this trade exceeds max_portfolio_risk "
                f"{limits.max_portfolio_risk:.2%}",
                limit=limits.max_portfolio_risk,
                actual=portfolio_risk,
            )
        )

    violations.extend(check_protections(state, setup.symbol, as_of, constraints))
    return Reservation(
        allowed=not violations,
        reserved=False,
        sizing=final,
        violations=violations,
        adjustments=adjustments,
        sector_exposure=sector_exposure,
        portfolio_risk=portfolio_risk,
    )


class PortfolioBook:
    """The run's portfolio, shared by its concurrent symbol tasks (one book per run, one event loop).

    ``reserve`` checks the portfolio-level limits and adds the position in one critical section, so
    the next symbol's check sees it: N tasks racing for ``max_positions`` slots get exactly that many.
    """

    def __init__(self, state: PortfolioState | None = None) -> None:
        self._state = state.model_copy(deep=True) if state is not None else PortfolioState()
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

    async def reserve(
        self,
        setup: TradeSetup,
        sizing: PositionSizing,
        sector: str | None,
        *,
        constraints: RiskConstraints,
        as_of: date,
        dry_run: bool = False,
    ) -> Reservation:
        """Check the portfolio-level limits for ``setup`` and, if they allow it (and not ``dry_run``),
        add the position to the book, atomically."""
        # The lock keeps check-then-add atomic even if this section ever awaits (e.g. a persistent book).
        async with self._lock:
            decision = evaluate_portfolio(
                self._state, setup, sizing, sector, constraints=constraints, as_of=as_of
            )
            if dry_run or not decision.allowed or decision.sizing.position_size == 0:
                return decision
            self._state.open_positions.append(
                Position(
                    symbol=setup.symbol,
                    sector=sector,
                    direction=setup.direction,
                    entry=setup.entry,
                    stop=setup.stop,
                    size=decision.sizing.position_size,
                    opened_on=as_of,
                    setup_id=setup.id,
                )
            )
            return decision.model_copy(update={"reserved": True})

    def restore(self, trades: Iterable[TradeRecord], *, sector_of: Callable[[str], str | None]) -> int:
        """Re-book positions a run already reserved before it was interrupted (called before it resumes,
        so no symbol task is running yet). Setups already in the book are not added twice."""
        known = {p.setup_id for p in self._state.open_positions if p.setup_id}
        added = 0
        for t in trades:
            if not t.risk.allowed or t.risk.position_size <= 0 or t.setup.id in known:
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

    async def release(self, setup_id: str) -> bool:
        """Drop a reservation (e.g. the symbol's run failed after sizing). True if one was removed."""
        async with self._lock:
            before = len(self._state.open_positions)
            self._state.open_positions = [p for p in self._state.open_positions if p.setup_id != setup_id]
            return len(self._state.open_positions) < before
