"""The risk manager: sizes a trade setup and applies the portfolio constraints to it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from jax_assistant.domain import Adjustment, ConstraintResult, RiskResult, TradeSetup, Violation
from jax_assistant.risk.allocation import Candidate, CorrelationLookup
from jax_assistant.risk.constraints import RiskConstraints, load_risk_constraints
from jax_assistant.risk.portfolio import PortfolioBook, PortfolioState
from jax_assistant.risk.protections import ViolationCode, violation
from jax_assistant.risk.sizing import (
    PositionSizing,
    RiskInputError,
    as_decimal,
    as_percent,
    check_position_inputs,
    exact_budget,
    exact_stop_distance,
    fraction_of,
    max_units,
    percent_of,
    risk_of,
    size_exactly,
)

DEFAULT_RISK_PERCENT = 3.0


class RiskManager:
    """Sizes setups (contract formulas) and checks what needs no portfolio; the run's allocation decides.

    ``candidate`` (per symbol, stateless: nothing is reserved) applies, in this order (every check runs
    so the result lists all violations; the first violation is the ``reason``; any violation rejects
    the setup: ``allowed`` False, ``positionSize`` 0):

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
    8. After a clamp of step 7, ``RISK_PER_TRADE_TOO_LOW`` again on the clamped position's effective risk.

    The result is a ``decision="candidate"``: never ``allowed`` until :func:`allocation.allocate` (the
    run's ``allocate`` stage) ranks it against every other candidate and books it. ``assess`` does
    both for one setup at once (a single live event, the old one-call API).

    ``risk_metrics`` describe the evaluated size (after clamps) even when the setup is rejected, so a
    rejection can be explained; ``position_risk`` is relative to the account size, ``leverage`` and the
    portfolio fractions the allocation adds to equity.
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
        self._limits: _Limits | None = None

    def _limits_for(self, equity: float) -> _Limits:
        """The constraints' figures every setup is checked against, kept while the constraints object
        (frozen) and the equity stay the same: thousands of setups per run share them."""
        known = self._limits
        if known is None or known.constraints is not self.constraints or known.equity != equity:
            known = self._limits = _Limits(self.constraints, equity)
        return known

    def candidate(self, setup: TradeSetup, *, strategy_max_risk_percent: float | None = None) -> RiskResult:
        """Size ``setup`` and apply the per-symbol checks (steps 1-8 of the class docstring)."""
        limits = self.constraints.position_limits
        account = self.account_size
        equity = self.book.equity
        figures = self._limits_for(equity)
        violations: list[Violation] = []
        adjustments: list[Adjustment] = []

        requested = self.risk_percent
        if strategy_max_risk_percent is not None:
            _positive("strategy_max_risk_percent", strategy_max_risk_percent)
            requested = min(requested, strategy_max_risk_percent)
        applied = requested
        cap = figures.cap
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

        # The prices as typed decimals once, for the stop distance and the sizing.
        entry, stop = as_decimal(setup.entry), as_decimal(setup.stop)
        distance = exact_stop_distance(entry, stop)
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

        floor_pct = figures.floor_pct
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
        check_position_inputs(account, applied, setup.entry, setup.stop, target)
        sizing = size_exactly(figures.budget(account, applied), entry, stop, target)
        if not sizing.risk_per_unit > 0:
            # A price difference below the smallest float: refused as ``calculate_position`` refuses it.
            PositionSizing(**sizing._asdict())
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

        value = sizing.position_size * setup.entry
        value_cap, rule = figures.value_cap
        # The final size and risk, tracked as plain numbers: what ``PositionSizing.with_size`` gives.
        size, total = sizing.position_size, sizing.total_risk
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
            else:
                effective = percent_of(risk_of(fits, sizing.risk_per_unit), account)
                if effective < floor_pct and applied >= floor_pct:
                    violations.append(
                        violation(
                            ViolationCode.RISK_PER_TRADE_TOO_LOW,
                            f"after the {rule} clamp {fits} unit(s) risk {effective:.4g}% of the account, "
                            f"below min_risk_per_trade {floor_pct:g}%",
                            limit=limits.min_risk_per_trade,
                            actual=effective / 100,
                        )
                    )
            size, total = fits, risk_of(fits, sizing.risk_per_unit)

        allowed = not violations
        # A rejection keeps the evaluated size in its metrics but sizes nothing (no unit: no risk, the
        # 0.0 the decimals give since the risk per unit and the account are > 0).
        final_size, final_total = (size, total) if allowed else (0, 0.0)
        return RiskResult(
            position_size=final_size,
            risk_per_unit=sizing.risk_per_unit,
            total_risk=final_total,
            r_multiple=sizing.r_multiple,
            risk_percent=applied,
            effective_risk_percent=percent_of(final_total, account) if allowed else 0.0,
            account_size=account,
            decision="candidate",
            constraints=ConstraintResult(
                allowed=allowed,
                reason=violations[0].message if violations else "candidate: awaiting portfolio allocation",
                violations=violations,
                adjustments=adjustments,
                risk_metrics={
                    "position_risk": total / account,
                    "position_size": float(size),
                    "dollar_risk": total,
                    "risk_per_unit": sizing.risk_per_unit,
                    "leverage": size * setup.entry / equity,
                    "stop_distance": distance,
                },
            ),
        )

    async def assess(
        self,
        setup: TradeSetup,
        *,
        sector: str | None,
        as_of: date,
        strategy_max_risk_percent: float | None = None,
        correlation: CorrelationLookup | None = None,
    ) -> RiskResult:
        """``candidate`` then allocation of that one setup into the book (booked if allowed)."""
        risk = self.candidate(setup, strategy_max_risk_percent=strategy_max_risk_percent)
        [decision] = await self.book.allocate(
            [Candidate(setup=setup, risk=risk, sector=sector)],
            self.constraints,
            as_of=as_of,
            correlation=correlation,
        )
        return decision

    async def allocate(
        self, candidates: Sequence[Candidate], *, as_of: date, correlation: CorrelationLookup | None = None
    ) -> list[RiskResult]:
        """Allocate a run's candidates into the book under this manager's constraints."""
        return await self.book.allocate(candidates, self.constraints, as_of=as_of, correlation=correlation)


class _Limits:
    """Figures of one constraints object at one equity (see ``RiskManager._limits_for``)."""

    def __init__(self, constraints: RiskConstraints, equity: float) -> None:
        limits, pc = constraints.position_limits, constraints.portfolio_constraints
        self.constraints = constraints
        self.equity = equity
        self.cap = as_percent(limits.max_risk_per_trade)
        self.floor_pct = as_percent(limits.min_risk_per_trade)
        self.value_cap: tuple[float, str] = min(
            (pc.max_position_size, "max_position_size"),
            (fraction_of(limits.max_leverage, equity), "max_leverage"),
        )
        self._budgets: dict[tuple[float, float], Decimal] = {}

    def budget(self, account: float, percent: float) -> Decimal:
        """:func:`exact_budget` of checked (positive, finite) inputs, kept per account and percent."""
        known = self._budgets.get((account, percent))
        if known is None:
            known = self._budgets[(account, percent)] = exact_budget(account, percent)
        return known


def _positive(field: str, value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise RiskInputError(field, f"must be a finite number greater than 0, got {value!r}")
