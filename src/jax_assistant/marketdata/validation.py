"""Turn raw OHLCV columns into a clean :class:`BarSeries`, reporting every row that was dropped and why.

All checks are vectorised numpy over the whole symbol at once: the real sp500 file has ~3,000 rows per
symbol and 505 symbols, so a per-row Python loop would dominate load time. Python only loops over the
(few) rows that are actually reported.

Rules (``DataIssue.rule``) and what is done:

=====================  ==========================================================  ============
rule                   meaning                                                     action
=====================  ==========================================================  ============
nan_value              NaN / inf / missing in a price, the volume or the date      row skipped
non_positive_price     open, high, low or close <= 0                               row skipped
negative_volume        volume < 0                                                  row skipped
high_below_low         high < low                                                  row skipped
price_outside_range    open or close outside [low, high] (decimal-shift glitches)  row skipped
duplicate_date         a date seen before (the first valid copy is kept)           row skipped
bad_tick               one price >= 80 % away from the same price of both          row skipped
                       neighbouring bars and back the next day (isolated glitch)
zero_volume            volume == 0 (e.g. 2010-04-26 in the stooq data)             reported
missing_days           two bars more than ``max_gap_weekdays`` weekdays apart      reported
=====================  ==========================================================  ============

``bad_tick`` needs the next bar to see the price come back, so the last bar of a series is never
judged by it, and a replay that stops on a glitch day (``BarSeries.upto``) does not see the glitch
either: the cleaning is done once on the whole history. That is the one place where a later bar
matters, and only to throw a corrupt price away, never to change one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt

from jax_assistant.marketdata.base import BarSeries, DataIssue, DateArray, FloatArray, MarketDataError

__all__ = [
    "BAD_TICK_JUMP",
    "MISSING_DAYS_THRESHOLD",
    "BadSymbolError",
    "clean_series",
]

PRICE_FIELDS = ("open", "high", "low", "close")
FIELDS = (*PRICE_FIELDS, "volume")

# A decimal shift is a x10 or x100 error, so 80 % (x0.2 or x1.8) separates it from real moves: the worst
# genuine one-day reversals in the data (2008 crisis, 2010 flash crash) stay well inside it.
BAD_TICK_JUMP = 0.8
# Weekdays between two consecutive bars above which a hole is reported: a holiday weekend gives 2,
# the 2012 Sandy closure 3, so 4 never fires on a normal exchange calendar.
MISSING_DAYS_THRESHOLD = 4

SKIPPED = "row skipped"
REPORTED = "reported"


class BadSymbolError(MarketDataError):
    """A symbol whose data has fewer than two usable bars after cleaning."""

    symbol: str  # always known here (DataError allows None)

    def __init__(self, symbol: str, issues: Sequence[DataIssue], n_rows: int = 0) -> None:
        self.symbol = symbol
        self.issues = tuple(issues)
        counts = Counter(i.rule for i in self.issues)
        summary = ", ".join(f"{n}x {rule}" for rule, n in counts.most_common()) or "no rows"
        examples = "; ".join(str(i) for i in self.issues[:3])
        msg = f"symbol {symbol!r} has fewer than 2 usable bars out of {n_rows} rows ({summary})"
        if examples:
            msg += f", e.g. {examples}"
        super().__init__(msg, symbol=symbol)  # DataError would reset .symbol


def _to_date(d: np.datetime64) -> date | None:
    if np.isnat(d):
        return None
    return d.astype("datetime64[D]").item()  # type: ignore[no-any-return]


def _fmt(x: Any) -> str:
    return f"{float(x):.6g}"


def _as_float(name: str, values: Any, n: int) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name} has shape {arr.shape}, expected ({n},) like dates")
    return arr


def _readonly(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    # The series are cached and shared between callers: make in-place edits fail loudly instead of
    # silently corrupting every later reader.
    a.flags.writeable = False
    return a


def clean_series(
    symbol: str,
    dates: Any,
    open: Any,  # shadows the builtin on purpose: the column names read best
    high: Any,
    low: Any,
    close: Any,
    volume: Any,
    *,
    prior_issues: Iterable[DataIssue] = (),
    max_gap_weekdays: int = MISSING_DAYS_THRESHOLD,
) -> BarSeries:
    """Sort, validate and clean one symbol's raw columns.

    ``dates`` may be anything ``np.asarray(..., "datetime64[D]")`` accepts (NaT marks an unknown
    date). ``prior_issues`` (e.g. unparseable rows found by a reader) are kept in the result and in the
    error. Raises :class:`BadSymbolError` if fewer than two valid bars remain.
    """
    d_raw: DateArray = np.asarray(dates, dtype="datetime64[D]")
    if d_raw.ndim != 1:
        raise ValueError(f"dates must be one-dimensional, got shape {d_raw.shape}")
    n = int(d_raw.shape[0])
    raw = {
        "open": _as_float("open", open, n),
        "high": _as_float("high", high, n),
        "low": _as_float("low", low, n),
        "close": _as_float("close", close, n),
        "volume": _as_float("volume", volume, n),
    }
    # Stable sort keeps the file order among equal dates, so "first" duplicate means first in the file.
    order = np.argsort(d_raw, kind="stable")  # NaT sorts last
    d = d_raw[order]
    col = {k: v[order] for k, v in raw.items()}
    o, h, lo, c, v = (col[k] for k in FIELDS)

    issues: list[DataIssue] = list(prior_issues)
    bad = np.zeros(n, dtype=bool)

    def flag(
        mask: npt.NDArray[np.bool_], rule: str, describe: Callable[[int], str], action: str = SKIPPED
    ) -> None:
        """Report rows in ``mask`` not already dropped; mark them bad unless only reported."""
        nonlocal bad
        new = mask & ~bad
        for i in np.flatnonzero(new):
            issues.append(DataIssue(symbol, _to_date(d[i]), rule, describe(int(i)), action))
        if action == SKIPPED:
            bad |= new

    # --- nan_value: any non-finite field, or no date
    nonfinite = {k: ~np.isfinite(a) for k, a in col.items()}
    nat = np.isnat(d)

    def why_nan(i: int) -> str:
        parts = [f"{k}={col[k][i]}" for k in FIELDS if nonfinite[k][i]]
        if nat[i]:
            parts.insert(0, "date missing")
        return "non-finite " + ", ".join(parts)

    flag(nat | np.logical_or.reduce([nonfinite[k] for k in FIELDS]), "nan_value", why_nan)

    # Comparisons below only run on finite rows; silence NaN warnings from the rows already dropped.
    with np.errstate(invalid="ignore"):
        nonpos = {k: col[k] <= 0 for k in PRICE_FIELDS}
        flag(
            np.logical_or.reduce([nonpos[k] for k in PRICE_FIELDS]),
            "non_positive_price",
            lambda i: ", ".join(f"{k}={_fmt(col[k][i])} <= 0" for k in PRICE_FIELDS if nonpos[k][i]),
        )
        flag(v < 0, "negative_volume", lambda i: f"volume={_fmt(v[i])} < 0")
        flag(h < lo, "high_below_low", lambda i: f"high={_fmt(h[i])} < low={_fmt(lo[i])}")
        out_o = (o < lo) | (o > h)
        out_c = (c < lo) | (c > h)

        def why_range(i: int) -> str:
            names = [k for k, m in (("open", out_o), ("close", out_c)) if m[i]]
            vals = ", ".join(f"{k}={_fmt(col[k][i])}" for k in names)
            return f"{vals} outside [low={_fmt(lo[i])}, high={_fmt(h[i])}]"

        flag(out_o | out_c, "price_outside_range", why_range)

    # --- duplicate_date among the rows that survived: a broken first copy must not hide a good second one
    ok = np.flatnonzero(~bad)
    dup = np.zeros(n, dtype=bool)
    if ok.size > 1:
        dup[ok[1:]] = d[ok[1:]] == d[ok[:-1]]
    flag(dup, "duplicate_date", lambda i: f"date {d[i]} already has a bar (first one kept)")

    # --- bad_tick: isolated decimal shifts that stay consistent within the bar (e.g. low=2.7272 for EIX
    # at 28). Neighbours are the surviving bars, so an already-dropped glitch does not hide its neighbour.
    ok = np.flatnonzero(~bad)
    if ok.size >= 3:
        mid_idx = ok[1:-1]
        hi_ratio, lo_ratio = 1.0 + BAD_TICK_JUMP, 1.0 - BAD_TICK_JUMP
        tick = np.zeros(n, dtype=bool)
        tick_fields: dict[int, list[str]] = {}
        for k in PRICE_FIELDS:
            x = col[k][ok]
            prev, mid, nxt = x[:-2], x[1:-1], x[2:]
            jump = ((mid >= hi_ratio * prev) & (mid >= hi_ratio * nxt)) | (
                (mid <= lo_ratio * prev) & (mid <= lo_ratio * nxt)
            )
            for j in np.flatnonzero(jump):
                tick_fields.setdefault(int(mid_idx[j]), []).append(
                    f"{k}={_fmt(mid[j])} vs {_fmt(prev[j])} before and {_fmt(nxt[j])} after"
                )
            tick[mid_idx[jump]] = True
        flag(
            tick,
            "bad_tick",
            lambda i: "; ".join(tick_fields[i]) + f" (>= {BAD_TICK_JUMP:.0%} jump and back)",
        )

    keep = ~bad
    flag(keep & (v == 0), "zero_volume", lambda i: "volume=0", action=REPORTED)

    kd = d[keep]
    if kd.size > 1:
        # busday_count counts the weekdays in [prev, cur): 1 for consecutive sessions or Fri->Mon.
        span = np.busday_count(kd[:-1], kd[1:])
        for j in np.flatnonzero(span > max_gap_weekdays):
            issues.append(
                DataIssue(
                    symbol,
                    _to_date(kd[j + 1]),
                    "missing_days",
                    f"date: no bars for {int(span[j]) - 1} weekdays between {kd[j]} and {kd[j + 1]}",
                    REPORTED,
                )
            )

    issues.sort(key=lambda i: (i.date or date.max, i.rule))
    if int(keep.sum()) < 2:
        issues.append(
            DataIssue(symbol, None, "too_few_bars", f"{int(keep.sum())} valid of {n} rows", "symbol skipped")
        )
        raise BadSymbolError(symbol, issues, n_rows=n)
    return BarSeries(
        symbol,
        _readonly(kd),
        _readonly(o[keep]),
        _readonly(h[keep]),
        _readonly(lo[keep]),
        _readonly(c[keep]),
        _readonly(v[keep]),
        tuple(issues),
    )
