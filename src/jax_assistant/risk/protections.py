"""Protections: account- and symbol-level locks that block new trades regardless of their sizing.

Checked in this order (the first one becomes the decision's reason):

1. ``DRAWDOWN_HALT``: ``(peak_equity - equity) / peak_equity >= max_drawdown`` halts every new trade.
2. ``DAILY_LOSS_EXCEEDED``: today's realised loss ``>= max_daily_loss * account_size``.
3. ``TOO_MANY_OPEN_POSITIONS``: ``max_positions`` already open.
4. ``COOLDOWN_ACTIVE``: the symbol was stopped out within ``cooldown_sessions_after_stop`` sessions of
   ``as_of``. Sessions are NYSE sessions (``domain.sessions``: weekdays minus exchange holidays
   and closures). A stop-out dated after ``as_of`` is ignored: a replay must not see the future.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from jax_assistant.domain import Violation
from jax_assistant.domain import sessions as exchange
from jax_assistant.risk.sizing import fraction_of

if TYPE_CHECKING:
    from jax_assistant.risk.constraints import RiskConstraints
    from jax_assistant.risk.portfolio import PortfolioState


class ViolationCode(StrEnum):
    """Constraint violation codes: the contract's list plus the codes this package adds."""

    STOP_TOO_TIGHT = "STOP_TOO_TIGHT"
    STOP_TOO_WIDE = "STOP_TOO_WIDE"
    RISK_PER_TRADE_TOO_HIGH = "RISK_PER_TRADE_TOO_HIGH"
    RISK_PER_TRADE_TOO_LOW = "RISK_PER_TRADE_TOO_LOW"
    POSITION_VALUE_TOO_LARGE = "POSITION_VALUE_TOO_LARGE"
    TOO_MANY_OPEN_POSITIONS = "TOO_MANY_OPEN_POSITIONS"
    DAILY_LOSS_EXCEEDED = "DAILY_LOSS_EXCEEDED"
    ACCOUNT_TOO_SMALL = "ACCOUNT_TOO_SMALL"
    DRAWDOWN_HALT = "DRAWDOWN_HALT"
    # Added (the contract's list is a minimum):
    COOLDOWN_ACTIVE = "COOLDOWN_ACTIVE"
    SECTOR_EXPOSURE_TOO_HIGH = "SECTOR_EXPOSURE_TOO_HIGH"
    PORTFOLIO_RISK_TOO_HIGH = "PORTFOLIO_RISK_TOO_HIGH"
    POSITION_SIZE_ZERO = "POSITION_SIZE_ZERO"
    LEVERAGE_TOO_HIGH = "LEVERAGE_TOO_HIGH"
    CORRELATED_EXPOSURE_TOO_HIGH = "CORRELATED_EXPOSURE_TOO_HIGH"
    STRATEGY_SUSPENDED = "STRATEGY_SUSPENDED"  # its beliefs' expectancy is negative (strategies/weighting)


def violation(code: ViolationCode, message: str, *, limit: float, actual: float) -> Violation:
    return Violation(code=code.value, message=message, limit=limit, actual=actual)


def sessions_between(start: date, end: date) -> int:
    """NYSE sessions in ``(start, end]`` (0 when ``end <= start``); holidays are not sessions."""
    return exchange.sessions_between(start, end)


def nth_session_after(start: date, n: int) -> date:
    """The ``n``-th NYSE session after ``start`` (``start`` itself for ``n == 0``)."""
    return exchange.nth_session_after(start, n)


def drawdown(state: PortfolioState) -> float:
    """Current drawdown from the equity peak as a positive fraction (0 at a new high)."""
    return max(0.0, (state.peak_equity - state.equity) / state.peak_equity)


def check_drawdown(state: PortfolioState, constraints: RiskConstraints) -> Violation | None:
    limit = constraints.portfolio_constraints.max_drawdown
    dd = drawdown(state)
    if dd < limit:
        return None
    return violation(
        ViolationCode.DRAWDOWN_HALT,
        f"drawdown {dd:.2%} reached max_drawdown {limit:.2%}: new trades are halted",
        limit=limit,
        actual=dd,
    )


def check_daily_loss(state: PortfolioState, constraints: RiskConstraints) -> Violation | None:
    limit = constraints.protections.max_daily_loss
    loss = -state.realised_pnl_today / state.account_size
    if state.realised_pnl_today >= 0 or -state.realised_pnl_today < fraction_of(limit, state.account_size):
        return None
    return violation(
        ViolationCode.DAILY_LOSS_EXCEEDED,
        f"realised loss today {-state.realised_pnl_today:.2f} ({loss:.2%} of the account) reached "
        f"max_daily_loss {limit:.2%}",
        limit=limit,
        actual=loss,
    )


def check_open_positions(state: PortfolioState, constraints: RiskConstraints) -> Violation | None:
    limit = constraints.portfolio_constraints.max_positions
    count = len(state.open_positions)
    if count < limit:
        return None
    return violation(
        ViolationCode.TOO_MANY_OPEN_POSITIONS,
        f"{count} positions already open (max_positions {limit})",
        limit=limit,
        actual=count + 1,
    )


def check_cooldown(
    state: PortfolioState, symbol: str, as_of: date, constraints: RiskConstraints
) -> Violation | None:
    sessions = constraints.protections.cooldown_sessions_after_stop
    stopped_on = state.last_stop_out.get(symbol.upper())
    if sessions == 0 or stopped_on is None or stopped_on > as_of:
        return None
    elapsed = sessions_between(stopped_on, as_of)
    if elapsed > sessions:
        return None
    return violation(
        ViolationCode.COOLDOWN_ACTIVE,
        f"{symbol.upper()} was stopped out on {stopped_on.isoformat()}: cooldown of {sessions} sessions "
        f"lasts through {nth_session_after(stopped_on, sessions).isoformat()}",
        limit=sessions,
        actual=elapsed,
    )


def check_protections(
    state: PortfolioState, symbol: str, as_of: date, constraints: RiskConstraints
) -> list[Violation]:
    """Every protection that blocks a new trade in ``symbol`` on ``as_of`` (module docstring order)."""
    found = (
        check_drawdown(state, constraints),
        check_daily_loss(state, constraints),
        check_open_positions(state, constraints),
        check_cooldown(state, symbol, as_of, constraints),
    )
    return [v for v in found if v is not None]


# --------------------------------------------------------------------------- pluggable protections


@runtime_checkable
class Protection(Protocol):
    """One lock on new trades, configured by name (``protections.enabled`` in risk-constraints.json).

    A new protection is a new class registered in :data:`PROTECTIONS`, not an edit of a shared check.
    ``check`` depends only on its arguments: the allocation asks about a symbol once while the book
    stays the same (a symbol let through is not asked again until a position is booked)."""

    @property
    def name(self) -> str: ...

    def check(self, state: PortfolioState, symbol: str, as_of: date) -> Violation | None: ...


@dataclass(frozen=True)
class DrawdownHalt:
    constraints: RiskConstraints
    name: str = "drawdown_halt"

    def check(self, state: PortfolioState, symbol: str, as_of: date) -> Violation | None:
        return check_drawdown(state, self.constraints)


@dataclass(frozen=True)
class DailyLossLimit:
    constraints: RiskConstraints
    name: str = "daily_loss"

    def check(self, state: PortfolioState, symbol: str, as_of: date) -> Violation | None:
        return check_daily_loss(state, self.constraints)


@dataclass(frozen=True)
class StopOutCooldown:
    constraints: RiskConstraints
    name: str = "cooldown"

    def check(self, state: PortfolioState, symbol: str, as_of: date) -> Violation | None:
        return check_cooldown(state, symbol, as_of, self.constraints)


PROTECTIONS: dict[str, Callable[[RiskConstraints], Protection]] = {
    "drawdown_halt": DrawdownHalt,
    "daily_loss": DailyLossLimit,
    "cooldown": StopOutCooldown,
}


def build_protections(constraints: RiskConstraints) -> list[Protection]:
    """The enabled protections, in their configured order (the first violation becomes the reason)."""
    return [PROTECTIONS[name](constraints) for name in constraints.protections.enabled]


# --------------------------------------------------------------------------- fed by realised outcomes


@dataclass(frozen=True)
class RealisedTrade:
    """A closed, sized trade as the protections need it (from ``trade_outcomes``)."""

    symbol: str
    exit_on: date
    pnl: float
    stopped: bool


def state_from_outcomes(
    base: PortfolioState, trades: Iterable[RealisedTrade], *, as_of: date
) -> PortfolioState:
    """``base`` moved on by the realised trades that closed on or before ``as_of``.

    Equity grows by their P&L, the peak follows the equity path in exit order (so a drawdown halt sees
    the real peak, not just today's level), today's realised P&L is the sum of trades closed on
    ``as_of``, and every stop-out updates the symbol's cooldown date. Trades closing after ``as_of``
    are ignored: a replay must not see the future. Feeding yesterday's result (its
    ``realised_pnl_today`` reset to 0) as ``base`` with only today's trades gives the same state as
    feeding the whole history at once.
    """
    closed = sorted((t for t in trades if t.exit_on <= as_of), key=lambda t: (t.exit_on, t.symbol))
    equity, peak = base.equity, base.peak_equity
    today = base.realised_pnl_today  # the file's own figure for today, if it states one
    stops = dict(base.last_stop_out)
    day_pnl: dict[date, float] = {}
    for t in closed:
        day_pnl[t.exit_on] = day_pnl.get(t.exit_on, 0.0) + t.pnl
        if t.stopped and (t.symbol not in stops or stops[t.symbol] < t.exit_on):
            stops[t.symbol.upper()] = t.exit_on
    for day in sorted(day_pnl):
        equity += day_pnl[day]
        peak = max(peak, equity)
    today += day_pnl.get(as_of, 0.0)
    # Equity must stay positive for the model (an account wiped out halts through the drawdown check).
    equity = max(equity, 0.01)
    return base.model_copy(
        update={
            "equity": round(equity, 6),
            "peak_equity": round(max(peak, equity), 6),
            "realised_pnl_today": round(today, 6),
            "last_stop_out": stops,
        }
    )
