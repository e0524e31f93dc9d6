"""Portfolio allocation: one pass over every candidate of a run, best first, into the portfolio's room.

Per-symbol risk (:meth:`RiskManager.candidate`) sizes a setup and applies the checks that need no
portfolio (stop distance, risk per trade, position value); the result is a *candidate*. ``allocate``
then sees all candidates at once:

1. Rank. ``score = round(confidence x rMultiple, 6)`` (the expected R of the first target,
   weighted by how sure the strategy is; the registry has already multiplied ``confidence`` by the
   strategy's weight, so the weight counts once). Higher score first; ties go to the smaller setup
   id, then symbol, so the order never depends on the order candidates arrive in.
2. Fill, in rank order, each candidate against the book as it stands (open positions plus the
   candidates placed before it):

   a. ``TOO_MANY_OPEN_POSITIONS`` when ``max_positions`` are open;
   b. sector exposure: clamp to ``max_sector_exposure`` x equity (``SECTOR_EXPOSURE_TOO_HIGH`` if no
      unit fits; not applied to an unknown sector);
   c. leverage: gross value of all positions clamped to ``max_leverage`` x equity
      (``LEVERAGE_TOO_HIGH`` if no unit fits);
   d. correlated exposure: when booked positions have a return correlation >= ``correlation_threshold``
      with the candidate (the same symbol counts as correlated), their value plus the candidate's is
      clamped to ``max_correlated_exposure`` x equity (``CORRELATED_EXPOSURE_TOO_HIGH`` if no unit fits);
   e. after any cut, the minimum risk per trade again, on the final position
      (``RISK_PER_TRADE_TOO_LOW``);
   f. ``PORTFOLIO_RISK_TOO_HIGH``: open risk plus this trade's above ``max_portfolio_risk`` x equity;
   g. the protections enabled by name in ``protections.enabled`` (default ``drawdown_halt``,
      ``daily_loss``, ``cooldown``: ``DRAWDOWN_HALT``, ``DAILY_LOSS_EXCEEDED``, ``COOLDOWN_ACTIVE``).

   Every cut is an :class:`Adjustment` (``position_size``, from -> to, the rule). Any violation rejects
   the candidate (size 0); an allowed one is booked before the next candidate is looked at.

Pure: the input state is not changed; the result holds the decisions (input order) and the new state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from jax_assistant.domain import Adjustment, ConstraintResult, RiskResult, TradeSetup, Violation
from jax_assistant.risk.constraints import RiskConstraints
from jax_assistant.risk.portfolio import PortfolioState, Position
from jax_assistant.risk.protections import (
    Protection,
    ViolationCode,
    build_protections,
    check_open_positions,
    violation,
)
from jax_assistant.risk.sizing import (
    as_decimal,
    as_percent,
    fraction_of,
    percent_of,
    risk_of,
    room_in,
    units_in,
)

CorrelationLookup = Callable[[str, str], float | None]
"""Return correlation of two symbols as of the run's date, or None when it is not known."""


class Candidate(BaseModel):
    """A sized setup waiting for room: the setup, its candidate risk result and its sector."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    setup: TradeSetup
    risk: RiskResult
    sector: str | None = None

    @property
    def eligible(self) -> bool:
        """Passed the per-symbol checks with at least one unit, and not decided yet."""
        return (
            self.risk.decision == "candidate"
            and self.risk.constraints.allowed
            and self.risk.position_size > 0
        )


class Allocation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decisions: list[RiskResult]  # one per candidate, in input order
    booked: list[Position]  # in rank order
    state: PortfolioState  # the input state plus ``booked``


SCORE_DIGITS = 6


def score(candidate: Candidate) -> float:
    """The ranking score: confidence x expected R (first target's R multiple), to 6 decimals.

    Rounded because R is recomputed from prices: two 1.75R setups at confidence 0.5 must tie (and go
    to the stable key), not be ordered by binary noise such as 0.8749999999999986 vs ...967."""
    return round(candidate.setup.confidence * candidate.risk.r_multiple, SCORE_DIGITS)


def rank_key(candidate: Candidate) -> tuple[float, str, str]:
    return (-score(candidate), candidate.setup.id, candidate.setup.symbol)


def allocate(
    candidates: Sequence[Candidate],
    state: PortfolioState,
    constraints: RiskConstraints,
    *,
    as_of: date,
    correlation: CorrelationLookup | None = None,
) -> Allocation:
    """Rank ``candidates`` and fill the book with them (module docstring). ``correlation`` None skips
    the correlated-exposure limit (no return data)."""
    book = state.model_copy(deep=True)
    decisions: list[RiskResult | None] = [None] * len(candidates)
    keys: dict[int, tuple[float, str, str]] = {}  # rank key of each eligible candidate
    for i, c in enumerate(candidates):
        if c.risk.decision == "allocated":
            decisions[i] = c.risk  # decided earlier (e.g. before a resume): kept as it is
        elif not c.eligible:
            decisions[i] = c.risk.model_copy(
                update={"decision": "allocated", "position_size": 0, "total_risk": 0.0}
            )
        else:
            keys[i] = rank_key(c)
    order = sorted(keys, key=keys.__getitem__)
    booked: list[Position] = []
    protections = build_protections(constraints)
    figures = _Figures(book, constraints, correlation, protections, as_of)
    for rank, i in enumerate(order, start=1):
        decision, position = _place(candidates[i], figures, rank=rank, score=-keys[i][0])
        decisions[i] = decision
        if position is not None:
            book.open_positions.append(position)
            booked.append(position)
            # The book changed: its sums and the protections' verdicts too.
            figures = _Figures(book, constraints, correlation, protections, as_of)
    return Allocation(decisions=[d for d in decisions if d is not None], booked=booked, state=book)


class _Figures:
    """What every candidate is checked against while the book stays put: the book's sums and rooms,
    the run's constants, and which symbols the protections let through. Kept until a position is
    booked (a few times per run, while thousands of candidates are checked): each figure is computed
    as ``_place`` computed it per candidate, in the same order, so the results are the same floats."""

    def __init__(
        self,
        book: PortfolioState,
        constraints: RiskConstraints,
        correlation: CorrelationLookup | None,
        protections: Sequence[Protection],
        as_of: date,
    ) -> None:
        pc = constraints.portfolio_constraints
        self.book = book
        self.constraints = constraints
        self.correlation = correlation
        self.protections = protections
        self.as_of = as_of
        self.threshold = pc.correlation_threshold
        self.equity = equity = book.equity
        self.too_many = check_open_positions(book, constraints) is not None
        self.gross = sum(p.value for p in book.open_positions)
        self.open_risk = book.open_risk
        self.max_leverage = max_leverage = constraints.position_limits.max_leverage
        self.leverage_room = room_in(fraction_of(max_leverage, equity), self.gross)
        self.floor_pct = as_percent(constraints.position_limits.min_risk_per_trade)
        self._sector_budget = fraction_of(pc.max_sector_exposure, equity)
        self._correlated_budget = fraction_of(pc.max_correlated_exposure, equity)
        self._sectors: dict[str, tuple[float, Decimal]] = {}
        self._related: dict[str, tuple[float, list[str], Decimal]] = {}
        self._unprotected: set[str] = set()  # symbols no protection blocks under this book

    def sector(self, sector: str) -> tuple[float, Decimal]:
        """The sector's open value and the room left under ``max_sector_exposure``."""
        known = self._sectors.get(sector)
        if known is None:
            value = self.book.sector_value(sector)
            known = self._sectors[sector] = (value, room_in(self._sector_budget, value))
        return known

    def related(self, symbol: str) -> tuple[float, list[str], Decimal]:
        """Value of the positions correlated with ``symbol``, their symbols, and the room left."""
        known = self._related.get(symbol)
        if known is None:
            value = 0.0
            names: list[str] = []
            if self.correlation is not None:
                upper = symbol.upper()
                for p in self.book.open_positions:
                    r = 1.0 if p.symbol == upper else self.correlation(symbol, p.symbol)
                    if r is not None and r >= self.threshold:
                        value += p.value
                        names.append(p.symbol)
            known = self._related[symbol] = (value, names, room_in(self._correlated_budget, value))
        return known

    def protect(self, symbol: str, violations: list[Violation]) -> None:
        """Append what the enabled protections say against ``symbol``, in their order. A protection
        is a function of the book, the symbol and the as-of date (all fixed here), so a symbol they all
        let through once is not asked about again; a blocked one is, so every decision gets its own
        violation objects."""
        if symbol in self._unprotected:
            return
        blocked = False
        for protection in self.protections:
            if (v := protection.check(self.book, symbol, self.as_of)) is not None:
                violations.append(v)
                blocked = True
        if not blocked:
            self._unprotected.add(symbol)


def _place(c: Candidate, figures: _Figures, *, rank: int, score: float) -> tuple[RiskResult, Position | None]:
    # Hot: called for every eligible candidate of a run (~18 k at lookback 60 over 505 symbols), most
    # of them cut to nothing by a full book. So the run's constants come from ``figures``, the entry
    # is read as a decimal once for the three room checks, and a cut's records and message are built
    # only when the cut happens.
    constraints = figures.constraints
    pc = constraints.portfolio_constraints
    setup, risk = c.setup, c.risk
    equity, entry = figures.equity, setup.entry
    exact_entry = as_decimal(entry)
    sector = (c.sector.strip() or None) if c.sector is not None else None
    violations: list[Violation] = []
    adjustments: list[Adjustment] = list(risk.constraints.adjustments)
    requested = risk.position_size
    size = requested

    if figures.too_many and (v := check_open_positions(figures.book, constraints)) is not None:
        violations.append(v)

    in_sector = 0.0
    if sector is not None:
        in_sector, sector_room = figures.sector(sector)
        fits = _shrink(size, sector_room, exact_entry, "max_sector_exposure", adjustments)
        if fits == 0 < size:
            wanted = (in_sector + size * entry) / equity
            violations.append(
                violation(
                    ViolationCode.SECTOR_EXPOSURE_TOO_HIGH,
                    f"sector {sector!r} exposure {wanted:.2%} would exceed max_sector_exposure "
                    f"{pc.max_sector_exposure:.2%} at any size",
                    limit=pc.max_sector_exposure,
                    actual=wanted,
                )
            )
        size = fits

    gross = figures.gross
    fits = _shrink(size, figures.leverage_room, exact_entry, "max_leverage", adjustments)
    if fits == 0 < size:
        wanted = (gross + size * entry) / equity
        violations.append(
            violation(
                ViolationCode.LEVERAGE_TOO_HIGH,
                f"gross leverage {wanted:.2f}x would exceed max_leverage {figures.max_leverage:g}x "
                "at any size",
                limit=figures.max_leverage,
                actual=wanted,
            )
        )
    size = fits

    correlated_value, related, correlated_room = figures.related(setup.symbol)
    if related:
        fits = _shrink(size, correlated_room, exact_entry, "max_correlated_exposure", adjustments)
        if fits == 0 < size:
            wanted = (correlated_value + size * entry) / equity
            violations.append(
                violation(
                    ViolationCode.CORRELATED_EXPOSURE_TOO_HIGH,
                    f"exposure correlated with {', '.join(sorted(set(related)))} (correlation >= "
                    f"{pc.correlation_threshold:g}) {wanted:.2%} would exceed max_correlated_exposure "
                    f"{pc.max_correlated_exposure:.2%} at any size",
                    limit=pc.max_correlated_exposure,
                    actual=wanted,
                )
            )
        size = fits

    if size == 0 and risk.risk_per_unit > 0:
        total = effective = 0.0  # what the decimals give for no unit (the account size is > 0)
    else:
        total = risk_of(size, risk.risk_per_unit)
        effective = percent_of(total, risk.account_size)
    floor_pct = figures.floor_pct
    if 0 < size < requested and effective < floor_pct:
        violations.append(
            violation(
                ViolationCode.RISK_PER_TRADE_TOO_LOW,
                f"after the cuts {size} unit(s) risk {effective:.4g}% of the account, below "
                f"min_risk_per_trade {floor_pct:g}%",
                limit=constraints.position_limits.min_risk_per_trade,
                actual=effective / 100,
            )
        )

    portfolio_risk = (figures.open_risk + total) / equity
    if portfolio_risk > pc.max_portfolio_risk * (1 + 1e-12):
        violations.append(
            violation(
                ViolationCode.PORTFOLIO_RISK_TOO_HIGH,
                f"portfolio risk {portfolio_risk:.2%} with this trade exceeds max_portfolio_risk "
                f"{pc.max_portfolio_risk:.2%}",
                limit=pc.max_portfolio_risk,
                actual=portfolio_risk,
            )
        )

    figures.protect(setup.symbol, violations)

    allowed = not violations and size > 0
    value = size * entry
    metrics = {
        **risk.constraints.risk_metrics,
        "position_risk": total / risk.account_size,
        "portfolio_risk": portfolio_risk,
        "position_size": float(size),
        "dollar_risk": total,
        "leverage": value / equity,
        "gross_leverage": (gross + value) / equity,
        "sector_exposure": (in_sector + value) / equity if sector is not None else 0.0,
        "correlated_exposure": (correlated_value + value) / equity,
    }
    decision = risk.model_copy(
        update={
            "decision": "allocated",
            "position_size": size if allowed else 0,
            "total_risk": total if allowed else 0.0,
            "effective_risk_percent": effective if allowed else 0.0,
            "constraints": ConstraintResult(
                allowed=allowed,
                reason=violations[0].message if violations else "ok",
                violations=violations,
                adjustments=adjustments,
                risk_metrics=metrics,
            ),
            "rank": rank,
            "score": score,
        }
    )
    if not allowed:
        return decision, None
    return decision, Position(
        symbol=setup.symbol,
        sector=sector,
        direction=setup.direction,
        entry=entry,
        stop=setup.stop,
        size=size,
        opened_on=figures.as_of,
        setup_id=setup.id,
    )


def _shrink(size: int, room: Decimal, entry: Decimal, rule: str, adjustments: list[Adjustment]) -> int:
    """``size`` cut to the whole units of ``entry`` that ``room`` holds, the cut recorded under ``rule``."""
    fits = min(size, units_in(room, entry))
    if fits < size:
        adjustments.append(_cut(size, fits, rule))
    return fits


def _cut(size: int, fits: int, rule: str) -> Adjustment:
    return Adjustment(field="position_size", requested=size, applied=fits, rule=rule)
