"""The risk manager: sizes a trade setup and applies the portfolio constraints to it."""

from __future__ import annotations

import math
from datetime import date

from jax_assistant.domain import Adjustment, ConstraintResult, RiskResult, TradeSetup, Violation
from jax_assistant.risk.constraints import RiskConstraints, load_risk_constraints
from jax_assistant.risk.portfolio import PortfolioBook, PortfolioState
from jax_assistant.risk.protections import ViolationCode, violation
from jax_assistant.risk.sizing import (
    RiskInputError,
    as_percent,
    calculate_position,
    fraction_of,
    max_units,
    stop_distance,
)

DEFAULT_RISK_PERCENT = 3.0


class RiskManager:
    """Sizes setups (contract formulas) and decides whether the portfolio may take them.

    ``assess`` applies, in this order (every check runs so the result lists all violations; the first
    violation is the ``reason``; any violation rejects the setup: ``allowed`` False, ``positionSize`` 0):

    1. Requested risk percent = min(run ``risk_percent``, strategy ``maxRiskPercent`` if given).
    2. Above ``position_limits.max_risk_per_trade``: clamped to the cap and recorded as an
       ``Adjustment(field="risk_percent", rule="max_risk_per_trade")`` when ``clamp_risk`` (default);
       with ``clamp_risk=False`` it is a ``RISK_PER_TRADE_TOO_HIGH`` violation instead.
    3. ``ACCOUNT_TOO_SMALL``: account size below ``min_account_size``.
    4. ``STOP_TOO_TIGHT`` / ``STOP_TOO_WIDE``: ``|entry - stop| / entry`` outside
       [``min_stop_distance``, ``max_stop_distance``] (bounds allowed).
    5. ``RISK_PER_TRADE_TOO_LOW``: applied risk percent below ``min_risk_per_trade``.
    6. Size = floor(account x percent / 100 / riskPerUnit); ``POSITION_SIZE_ZERO`` if not one unit fits.
    7. ``POSITION_VALUE_TOO_LARGE``: value above min(``max_position_size``, ``max_leverage`` x equity)
       clamps the size (recorded ``Adjustment(field="position_size")``); a violation only if 0 would remain.
    8. Under the book's lock, atomically with the reservation: sector exposure (clamp, recorded;
       ``SECTOR_EXPOSURE_TOO_HIGH`` if nothing fits; skipped when the sector is unknown), portfolio risk
       (``PORTFOLIO_RISK_TOO_HIGH``), protections (``DRAWDOWN_HALT``, ``DAILY_LOSS_EXCEEDED``,
       ``TOO_MANY_OPEN_POSITIONS``, ``COOLDOWN_ACTIVE``); if nothing was violated the position is
       added to the book, so concurrent symbols see it.

    ``risk_metrics`` describe the evaluated size (after clamps) even when the setup is rejected, so a
    rejection can be explained; ``position_risk`` is relative to the account size, ``portfolio_risk``,
    ``leverage`` and ``sector_exposure`` to equity.
    """

    def __init__(
        self,
        constraints: RiskConstraints | None = None,
        book: PortfolioBook | None = None,
        *,
        account_size: float | None = None,
        risk_percent: float = DEFAULT_RISK_PERCENT,
        clamp_risk: bool = True,
    ) -> None:
        """``account_size`` is the sizing base (contract ``accountSize``, also checked against
        ``min_account_size``); it defaults to the book's account size (10 000 for a new book). The book
        supplies equity (for leverage, sector and portfolio fractions) and the protections' inputs; a new
        book is created from ``account_size`` when ``book`` is None. ``constraints`` defaults to the
        bundled ``risk-constraints.json``."""
        _positive("risk_percent", risk_percent)
        if account_size is not None:
            _positive("account_size", account_size)
        if book is None:
            book = PortfolioBook(
                PortfolioState() if account_size is None else PortfolioState(account_size=account_size)
            )
        self.constraints = constraints if constraints is not None else load_risk_constraints()
        self.book = book
        self.account_size = account_size if account_size is not None else book.account_size
        self.risk_percent = risk_percent
        self.clamp_risk = clamp_risk

    async def assess(
        self,
        setup: TradeSetup,
        *,
        sector: str | None,
        as_of: date,
        strategy_max_risk_percent: float | None = None,
    ) -> RiskResult:
        """Size ``setup`` and apply the constraints (order in the class docstring); reserves it if allowed."""
        limits = self.constraints.position_limits
        account = self.account_size
        violations: list[Violation] = []
        adjustments: list[Adjustment] = []

        requested = self.risk_percent
        if strategy_max_risk_percent is not None:
            _positive("strategy_max_risk_percent", strategy_max_risk_percent)
            requested = min(requested, strategy_max_risk_percent)
        applied = requested
        cap = as_percent(limits.max_risk_per_trade)
        if requested > cap:
            if self.clamp_risk:
                applied = cap
                adjustments.append(
                    Adjustment(
                        field="risk_percent", requested=requested, applied=cap, rule="max_risk_per_trade"
                    )
                )
            else:
                violations.append(
                    violation(
                        ViolationCode.RISK_PER_TRADE_TOO_HIGH,
                        f"risk per trade {requested}% exceeds max_risk_per_trade {cap}%",
                        limit=limits.max_risk_per_trade,
                        actual=requested / 100,
                    )
                )

        pc = self.constraints.portfolio_constraints
        if account < pc.min_account_size:
            violations.append(
                violation(
                    ViolationCode.ACCOUNT_TOO_SMALL,
                    f"account size {account:,.2f} is below min_account_size {pc.min_account_size:,.2f}",
                    limit=pc.min_account_size,
                    actual=account,
                )
            )

        distance = stop_distance(setup.entry, setup.stop)
        if distance < limits.min_stop_distance:
            violations.append(
                violation(
                    ViolationCode.STOP_TOO_TIGHT,
                    f"stop distance {distance:.2%} is below min_stop_distance {limits.min_stop_distance:.2%}",
                    limit=limits.min_stop_distance,
                    actual=distance,
                )
            )
        elif distance > limits.max_stop_distance:
            violations.append(
                violation(
                    ViolationCode.STOP_TOO_WIDE,
                    f"stop distance {distance:.2%} is above max_stop_distance {limits.max_stop_distance:.2%}",
                    limit=limits.max_stop_distance,
                    actual=distance,
                )
            )

        floor_pct = as_percent(limits.min_risk_per_trade)
        if applied < floor_pct:
            violations.append(
                violation(
                    ViolationCode.RISK_PER_TRADE_TOO_LOW,
                    f"risk per trade {applied}% is below min_risk_per_trade {floor_pct}%",
                    limit=limits.min_risk_per_trade,
                    actual=applied / 100,
                )
            )

        target = setup.targets[0] if setup.targets else None
        sizing = calculate_position(account, applied, setup.entry, setup.stop, target)
        if sizing.position_size == 0:
            violations.append(
                violation(
                    ViolationCode.POSITION_SIZE_ZERO,
                    f"risk budget {sizing.risk_budget:,.2f} is less than the risk of one unit "
                    f"{sizing.risk_per_unit:,.2f}",
                    limit=sizing.risk_budget,
                    actual=sizing.risk_per_unit,
                )
            )

        equity = (await self.book.snapshot()).equity
        value = sizing.position_size * setup.entry
        value_cap, rule = min(
            (pc.max_position_size, "max_position_size"),
            (fraction_of(limits.max_leverage, equity), "max_leverage"),
        )
        if value > value_cap:
            fits = max_units(value_cap, setup.entry)
            adjustments.append(
                Adjustment(field="position_size", requested=sizing.position_size, applied=fits, rule=rule)
            )
            if fits == 0:
                violations.append(
                    violation(
                        ViolationCode.POSITION_VALUE_TOO_LARGE,
                        f"one unit at {setup.entry:,.2f} exceeds the {rule} cap of {value_cap:,.2f}",
                        limit=value_cap,
                        actual=setup.entry,
                    )
                )
            sizing = sizing.with_size(fits)

        reservation = await self.book.reserve(
            setup, sizing, sector, constraints=self.constraints, as_of=as_of, dry_run=bool(violations)
        )
        violations.extend(reservation.violations)
        adjustments.extend(reservation.adjustments)
        evaluated = reservation.sizing
        allowed = not violations and reservation.reserved
        final = evaluated if allowed else evaluated.with_size(0)

        return RiskResult(
            position_size=final.position_size,
            risk_per_unit=final.risk_per_unit,
            total_risk=final.total_risk,
            r_multiple=final.r_multiple,
            risk_percent=applied,
            account_size=account,
            constraints=ConstraintResult(
                allowed=allowed,
                reason=violations[0].message if violations else "ok",
                violations=violations,
                adjustments=adjustments,
                risk_metrics={
                    "position_risk": evaluated.total_risk / account,
                    "portfolio_risk": reservation.portfolio_risk,
                    "position_size": float(evaluated.position_size),
                    "dollar_risk": evaluated.total_risk,
                    "risk_per_unit": evaluated.risk_per_unit,
                    "leverage": evaluated.position_size * setup.entry / equity,
                    "stop_distance": distance,
                    "sector_exposure": reservation.sector_exposure,
                },
            ),
        )


def _positive(field: str, value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise RiskInputError(field, f"must be a finite number greater than 0, got {value!r}")
