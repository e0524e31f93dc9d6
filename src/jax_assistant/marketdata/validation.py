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
bad_tick (unconfirmed) the last bar, with a price >= 80 % away from the last good  row skipped
                       bar and no next bar yet to show whether it comes back
zero_volume            volume == 0 (e.g. 2010-04-26 in the stooq data)             reported
missing_days           NYSE sessions with no row between two consecutive rows      reported
=====================  ==========================================================  ============

Cleaning is causal: the result for a series cut at a date D depends only on the rows up to D, so
providers clean ``raw[<= as_of]`` (not the whole file) for a run as of D. The one rule that wants a
later bar is ``bad_tick``: an interior bar is judged with its next bar (which is <= D), and the last
bar -- no next bar yet -- is judged with what D knows: a >= 80 % jump from the last good bar is
dropped as an *unconfirmed* bad tick. A later as-of that sees the price stay there accepts the bar
(it is then an interior bar that did not come back). ``missing_days`` counts exchange sessions
(``domain.sessions``), so weekends, holidays and closures such as Sandy are not holes, while a single
missing Thursday (2011-02-17 in the stooq data) is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt

from jax_assistant.domain.sessions import sessions_between_arrays
from jax_assistant.marketdata.base import BarSeries, DataIssue, DateArray, FloatArray, MarketDataError

__all__ = [
    "BAD_TICK_JUMP",
    "MAX_MISSING_SESSIONS",
    "BadSymbolError",
    "clean_series",
]

PRICE_FIELDS = ("open", "high", "low", "close")
FIELDS = (*PRICE_FIELDS, "volume")

# A decimal shift is a x10 or x100 error, so 80 % (x0.2 or x1.8) separates it from real moves: the worst
# genuine one-day reversals in the data (2008 crisis, 2010 flash crash) stay well inside it.
BAD_TICK_JUMP = 0.8
# Missing sessions between two consecutive bars above which a hole is reported. Holidays and closures
# are not sessions, so on a complete series this is always 0 and any missing session is reported.
MAX_MISSING_SESSIONS = 0

SKIPPED = "row skipped"
REPORTED = "reported"


class BadSymbolError(MarketDataError):
    """A symbol whose data has fewer than two usable bars after cleaning."""

    symbol: str  # always known here (DataError allows None)

    def __init__(self, symbol: str, issues: Sequence[DataIssue], n_rows: int = 0) -> None:
        self.symbol = symbol
        self.n_rows = n_rows
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
    max_missing_sessions: int = MAX_MISSING_SESSIONS,
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
    if ok.size >= 2:
        hi_ratio, lo_ratio = 1.0 + BAD_TICK_JUMP, 1.0 - BAD_TICK_JUMP
        tick = np.zeros(n, dtype=bool)
        tick_fields: dict[int, list[str]] = {}
        last = int(ok[-1])
        for k in PRICE_FIELDS:
            x = col[k][ok]
            if ok.size >= 3:
                prev, mid, nxt = x[:-2], x[1:-1], x[2:]
                jump = ((mid >= hi_ratio * prev) & (mid >= hi_ratio * nxt)) | (
                    (mid <= lo_ratio * prev) & (mid <= lo_ratio * nxt)
                )
                for j in np.flatnonzero(jump):
                    tick_fields.setdefault(int(ok[j + 1]), []).append(
                        f"{k}={_fmt(mid[j])} vs {_fmt(prev[j])} before and {_fmt(nxt[j])} after"
                    )
                tick[ok[1:-1][jump]] = True
        # The last bar has no next bar yet: a jump from the previous good bar (not a glitch that the
        # last bar itself just exposed) is not trusted until a later bar confirms the level; the run
        # that sees that later bar keeps this one.
        good_before = ok[:-1][~tick[ok[:-1]]]
        if good_before.size:
            ref = int(good_before[-1])
            for k in PRICE_FIELDS:
                before, now = col[k][ref], col[k][last]
                if now >= hi_ratio * before or now <= lo_ratio * before:
                    tick_fields.setdefault(last, []).append(
                        f"{k}={_fmt(now)} vs {_fmt(before)} before, no next bar yet (unconfirmed)"
                    )
                    tick[last] = True

        def why_tick(i: int) -> str:
            what = "jump" if i == last else "jump and back"
            return "; ".join(tick_fields[i]) + f" (>= {BAD_TICK_JUMP:.0%} {what})"

        flag(tick, "bad_tick", why_tick)

    keep = ~bad
    flag(keep & (v == 0), "zero_volume", lambda i: "volume=0", action=REPORTED)

    # A hole is a session with no row at all; a row dropped above is already reported under its rule.
    dated = d[~nat]  # sorted (NaT sorted last), so distinct dates are where the value changes
    seen = dated[np.concatenate(([True], dated[1:] != dated[:-1]))] if dated.size else dated
    if seen.size > 1:
        # Sessions in (prev, cur] minus the current row itself: 0 for consecutive sessions. Only
        # pairs more than a calendar day apart can hide one (the calendar lookup is the costly part).
        missing = np.zeros(seen.size - 1, dtype=np.int64)
        wide = np.flatnonzero((seen[1:] - seen[:-1]) > np.timedelta64(1, "D"))
        missing[wide] = sessions_between_arrays(seen[:-1][wide], seen[1:][wide]) - 1
        for j in np.flatnonzero(missing > max_missing_sessions):
            issues.append(
                DataIssue(
                    symbol,
                    _to_date(seen[j + 1]),
                    "missing_days",
                    f"date: no rows for {int(missing[j])} session(s) between {seen[j]} and {seen[j + 1]}",
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
        _readonly(d[keep]),
        _readonly(o[keep]),
        _readonly(h[keep]),
        _readonly(lo[keep]),
        _readonly(c[keep]),
        _readonly(v[keep]),
        tuple(issues),
    )
