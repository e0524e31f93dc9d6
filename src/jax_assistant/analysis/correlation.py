"""Return correlations between symbols as of a date (for the correlated-exposure limit).

``return_correlations`` aligns the symbols' daily closes on the union of their session dates up to
``as_of`` (bars after ``as_of`` are dropped here too, so a caller cannot leak the future), takes the
last ``window`` close-to-close returns of that calendar and computes Pearson correlations pairwise over
the sessions where both symbols have a return (a return needs the close of the session and of the
calendar session before it). A pair with fewer than ``min_overlap`` common returns, or a flat series,
has no correlation (``None``): too little evidence to tie two positions together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import numpy as np
import numpy.typing as npt


class CloseSeries(Protocol):
    """What the correlation needs of a bar series (``marketdata.BarSeries`` has it)."""

    @property
    def dates(self) -> npt.NDArray[np.datetime64]: ...

    @property
    def close(self) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class CorrelationMatrix:
    """Pairwise return correlations; ``get(a, b)`` is None for an unknown symbol or too little data."""

    symbols: tuple[str, ...]
    values: npt.NDArray[np.float64]  # NaN where undefined
    as_of: date
    window: int
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {s: i for i, s in enumerate(self.symbols)})

    def get(self, a: str, b: str) -> float | None:
        i, j = self._index.get(a.upper()), self._index.get(b.upper())
        if i is None or j is None:
            return None
        v = float(self.values[i, j])
        return None if np.isnan(v) else v


def return_correlations(
    series: Mapping[str, CloseSeries], as_of: date, *, window: int = 60, min_overlap: int | None = None
) -> CorrelationMatrix:
    """Correlations of daily close-to-close returns over the ``window`` sessions ending at ``as_of``.

    ``min_overlap`` defaults to half the window (at least 2).
    """
    if window < 2:
        raise ValueError(f"window must be at least 2 sessions, got {window}")
    need = max(2, window // 2) if min_overlap is None else max(2, min_overlap)
    symbols = tuple(sorted(s.upper() for s in series))
    by_symbol = {s.upper(): v for s, v in series.items()}
    end = np.datetime64(as_of, "D")
    clipped: list[tuple[npt.NDArray[np.datetime64], npt.NDArray[np.float64]]] = []
    for sym in symbols:
        s = by_symbol[sym]
        dates = np.asarray(s.dates, dtype="datetime64[D]")
        n = int(np.searchsorted(dates, end, side="right"))
        clipped.append((dates[:n], np.asarray(s.close[:n], dtype=np.float64)))
    k = len(symbols)
    if k == 0:
        return CorrelationMatrix(symbols, np.empty((0, 0)), as_of, window)
    # The calendar: the last window + 1 session dates any symbol traded (window returns need one more close).
    calendar = np.unique(np.concatenate([d for d, _ in clipped])) if k else np.array([], "datetime64[D]")
    calendar = calendar[-(window + 1) :]
    closes = np.full((calendar.shape[0], k), np.nan)
    for col, (dates, close) in enumerate(clipped):
        pos = np.searchsorted(calendar, dates)
        inside = (pos < calendar.shape[0]) & (calendar[np.minimum(pos, calendar.shape[0] - 1)] == dates)
        closes[pos[inside], col] = close[inside]
    returns = closes[1:] / closes[:-1] - 1.0  # NaN where either close is missing
    return CorrelationMatrix(symbols, _pairwise_corr(returns, need), as_of, window)


def _pairwise_corr(x: npt.NDArray[np.float64], min_overlap: int) -> npt.NDArray[np.float64]:
    """Pearson correlation of every column pair over the rows where both are finite (vectorised)."""
    mask = np.isfinite(x).astype(np.float64)
    v = np.where(mask > 0, x, 0.0)
    n = mask.T @ mask  # common observations per pair
    sx = v.T @ mask  # sum of column i over rows where j is present
    sxx = (v * v).T @ mask
    sxy = v.T @ v
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = sxy - sx * sx.T / n
        var_i = sxx - sx * sx / n
        var_j = var_i.T
        corr = cov / np.sqrt(var_i * var_j)
    # A flat series (zero variance over the overlap) relative to float noise has no defined correlation.
    tiny = 1e-18
    undefined = (n < min_overlap) | ~(var_i > tiny) | ~(var_j > tiny) | ~np.isfinite(corr)
    corr = np.clip(corr, -1.0, 1.0)
    corr[undefined] = np.nan
    return corr
