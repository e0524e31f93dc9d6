"""Fixed-fractional position sizing (the contract's RiskResult formulas)::

riskPerUnit  = |entry - stop|
positionSize = floor(accountSize * riskPercent / 100 / riskPerUnit)
totalRisk    = positionSize * riskPerUnit
rMultiple    = |target - entry| / riskPerUnit   (0 without a target)
"""

from __future__ import annotations

import math
from decimal import ROUND_FLOOR, Context, Decimal
from typing import NamedTuple

from pydantic import ConfigDict, Field

from jax_assistant.domain import CamelModel
from jax_assistant.domain.errors import InputError


class RiskInputError(InputError):
    """Invalid sizing input. ``field`` names the offending input (contract name, snake_case)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class PositionSizing(CamelModel):
    """Result of :func:`calculate_position` (camelCase on the wire, like the old ``/risk/calc``)."""

    model_config = ConfigDict(frozen=True)

    position_size: int = Field(ge=0)
    risk_per_unit: float = Field(gt=0)
    total_risk: float = Field(ge=0)
    r_multiple: float = Field(ge=0)
    risk_budget: float = Field(ge=0, description="accountSize * riskPercent / 100")

    def with_size(self, size: int) -> PositionSizing:
        """The same sizing with a smaller (clamped) position; total risk follows the size."""
        if size < 0 or size > self.position_size:
            raise ValueError(f"size must be in 0..{self.position_size}, got {size}")
        total = _dec(self.risk_per_unit) * size
        return self.model_copy(update={"position_size": size, "total_risk": float(total)})


# The context of the exact steps (50 digits: any sum, difference or quotient of two typed decimals is
# exact or rounded far below a cent). One shared object instead of a ``localcontext()`` per call: its
# methods take the context explicitly, so nothing depends on the thread's current context, and entering
# one per call was a good part of sizing's time (~120 k calls in a 505-symbol run at lookback 60).
_EXACT = Context(prec=50)
_HUNDRED = Decimal(100)


def as_decimal(x: float) -> Decimal:
    """``x`` as the decimal it was typed as, e.g. a price read once for several :func:`units_in`."""
    # Decimal(repr(x)) reads a float as the shortest decimal that round-trips to it, i.e. the number the
    # user typed: 1.1 - 1.0 is exactly 0.1 here, not 0.10000000000000009 as in binary floating point.
    return Decimal(repr(float(x)))


_dec = as_decimal


def _require_finite(field: str, value: float) -> None:
    if not math.isfinite(value):
        raise RiskInputError(field, f"must be a finite number, got {value!r}")


def _check_inputs(
    account_size: float, risk_percent: float, entry: float, stop: float, target: float | None
) -> None:
    for name, value in (("account_size", account_size), ("risk_percent", risk_percent)):
        _require_finite(name, value)
        if value <= 0:
            raise RiskInputError(name, f"must be greater than 0, got {value!r}")
    for name, value in (("entry", entry), ("stop", stop)):
        _require_finite(name, value)
        if value <= 0:
            raise RiskInputError(name, f"must be a price greater than 0, got {value!r}")
    if entry == stop:
        raise RiskInputError("stop", f"must differ from entry (both {entry!r}): the risk per unit would be 0")
    if target is not None:
        _require_finite("target", target)
        if target <= 0:
            raise RiskInputError("target", f"must be a price greater than 0, got {target!r}")


class Sized(NamedTuple):
    """:class:`PositionSizing`'s figures as plain numbers: what :meth:`RiskManager.candidate` works
    with (thousands of setups per run; the model is built where a caller wants one)."""

    position_size: int
    risk_per_unit: float
    total_risk: float
    r_multiple: float
    risk_budget: float


def check_position_inputs(
    account_size: float, risk_percent: float, entry: float, stop: float, target: float | None = None
) -> None:
    """Raise :class:`RiskInputError` for the inputs :func:`calculate_position` refuses."""
    # One comparison chain for the usual, valid inputs (NaN fails every comparison); only a failing
    # one goes through the checks that name the first bad input.
    if not (
        0 < account_size < math.inf
        and 0 < risk_percent < math.inf
        and 0 < entry < math.inf
        and 0 < stop < math.inf
        and entry != stop
        and (target is None or 0 < target < math.inf)
    ):
        _check_inputs(account_size, risk_percent, entry, stop, target)


def exact_budget(account_size: float, risk_percent: float) -> Decimal:
    """``account_size * risk_percent / 100`` on the typed decimals: the money one trade may lose."""
    return _EXACT.divide(_EXACT.multiply(_dec(account_size), _dec(risk_percent)), _HUNDRED)


def size_exactly(budget: Decimal, entry: Decimal, stop: Decimal, target: float | None) -> Sized:
    """The sizing formulas on decimals already read (:func:`as_decimal`, :func:`exact_budget`) of
    inputs already checked (:func:`check_position_inputs`)."""
    # Exact decimal arithmetic so the floor is not off by one on binary rounding noise: in floats
    # 10000 * 1 / 100 / (1.1 - 1.0) is 999.999..., which would floor to 999 instead of 1000.
    risk_per_unit = _EXACT.abs(_EXACT.subtract(entry, stop))
    size = int(_EXACT.divide(budget, risk_per_unit).to_integral_value(rounding=ROUND_FLOOR))
    total_risk = _EXACT.multiply(risk_per_unit, size)
    r_multiple = (
        _EXACT.divide(_EXACT.abs(_EXACT.subtract(_dec(target), entry)), risk_per_unit)
        if target is not None
        else Decimal(0)
    )
    return Sized(size, float(risk_per_unit), float(total_risk), float(r_multiple), float(budget))


def calculate_position(
    account_size: float,
    risk_percent: float,
    entry: float,
    stop: float,
    target: float | None = None,
) -> PositionSizing:
    """Size a position so that hitting ``stop`` loses ``risk_percent`` % of ``account_size``.

    Raises :class:`RiskInputError` (its ``field`` names the input) for non-finite numbers,
    ``account_size <= 0``, ``risk_percent <= 0``, ``entry``/``stop`` <= 0, ``entry == stop``
    and a non-positive ``target``.
    """
    check_position_inputs(account_size, risk_percent, entry, stop, target)
    sized = size_exactly(exact_budget(account_size, risk_percent), _dec(entry), _dec(stop), target)
    return PositionSizing(**sized._asdict())


def max_units(budget: float, price: float, used: float = 0.0) -> int:
    """Whole units of ``price`` that fit in ``budget - used`` (never negative), on the typed decimals."""
    return units_in(room_in(budget, used), price)


def room_in(budget: float, used: float = 0.0) -> Decimal:
    """``budget - used`` on the typed decimals: what :func:`units_in` fills (kept while both stay put)."""
    return _EXACT.subtract(_dec(budget), _dec(used))


def units_in(room: Decimal, price: float | Decimal) -> int:
    """Whole units of ``price`` that fit in ``room`` (never negative): ``max_units`` in two steps.
    ``price`` may already be :func:`as_decimal` of the price."""
    if room <= 0:
        return 0
    exact = price if isinstance(price, Decimal) else _dec(price)
    return int(_EXACT.divide(room, exact).to_integral_value(rounding=ROUND_FLOOR))


def fraction_of(fraction: float, amount: float) -> float:
    """``fraction * amount`` on the typed decimals (0.3 of 10 000 is exactly 3 000)."""
    return float(_dec(fraction) * _dec(amount))


def as_percent(fraction: float) -> float:
    """A fraction as a percent on the typed decimals (0.02 -> exactly 2.0)."""
    return float(_dec(fraction) * 100)


def stop_distance(entry: float, stop: float) -> float:
    """``|entry - stop| / entry`` computed on the typed decimals (so 1 % is exactly 0.01)."""
    return exact_stop_distance(_dec(entry), _dec(stop))


def exact_stop_distance(entry: Decimal, stop: Decimal) -> float:
    """:func:`stop_distance` of prices already read with :func:`as_decimal`."""
    return float(_EXACT.divide(_EXACT.abs(_EXACT.subtract(entry, stop)), entry))


def percent_of(amount: float, base: float) -> float:
    """``amount / base`` as a percent on the typed decimals (200 of 10 000 is exactly 2.0)."""
    return float(_EXACT.divide(_EXACT.multiply(_dec(amount), _HUNDRED), _dec(base)))


def risk_of(size: int, risk_per_unit: float) -> float:
    """Money lost at the stop by ``size`` units (``size x riskPerUnit`` on the typed decimals)."""
    return float(_dec(risk_per_unit) * size)
