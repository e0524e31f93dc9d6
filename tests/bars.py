"""Bar-series fixtures for the analysis and strategy tests: hand-built series, a slice of real data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from jax_assistant.marketdata.base import BarSeries, EarningsReport

REAL_SYMBOLS = ("AAPL", "MSFT", "NVDA", "WFC", "JPM", "AJG")

MakeSeries = Callable[..., BarSeries]


def weekdays(start: date, n: int) -> np.ndarray:
    """``n`` consecutive Monday-Friday sessions starting at ``start`` (or the next weekday)."""
    first = np.busday_offset(np.datetime64(start, "D"), 0, roll="forward")
    return np.busday_offset(first, np.arange(n), roll="forward").astype("datetime64[D]")


def build_series(
    close: Sequence[float],
    *,
    open: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
    low: Sequence[float] | None = None,
    volume: Sequence[float] | None = None,
    symbol: str = "TEST",
    start: date = date(2024, 1, 1),
) -> BarSeries:
    c = np.asarray(close, dtype=np.float64)
    o = c.copy() if open is None else np.asarray(open, dtype=np.float64)
    h = np.maximum(o, c) if high is None else np.asarray(high, dtype=np.float64)
    lo = np.minimum(o, c) if low is None else np.asarray(low, dtype=np.float64)
    v = np.full(c.shape[0], 1000.0) if volume is None else np.asarray(volume, dtype=np.float64)
    return BarSeries(symbol, weekdays(start, c.shape[0]), o, h, lo, c, v)


@pytest.fixture
def make_series() -> MakeSeries:
    return build_series


@pytest.fixture(scope="session")
def real_bars(shared_data: Path) -> dict[str, BarSeries]:
    """Real daily bars of a few symbols, read straight from the shared CSV (not via marketdata)."""
    df = (
        pl.scan_csv(shared_data / "daily_ohlcv_stooq_sp500.csv.gz")
        .filter(pl.col("symbol").is_in(REAL_SYMBOLS))
        .collect()
        .sort("symbol", "date")
    )
    out: dict[str, BarSeries] = {}
    for (sym,), g in df.group_by("symbol"):
        out[str(sym)] = BarSeries(
            str(sym),
            np.array(g["date"].to_list(), dtype="datetime64[D]"),
            *(g[c].cast(pl.Float64).to_numpy().copy() for c in ("open", "high", "low", "close", "volume")),
        )
    return out


@pytest.fixture(scope="session")
def real_reports(shared_data: Path) -> dict[str, list[EarningsReport]]:
    """The real earnings reports with release times, from earnings_details.csv (not via marketdata)."""
    df = pl.read_csv(shared_data / "earnings_details.csv").filter(pl.col("symbol").is_in(REAL_SYMBOLS))
    out: dict[str, list[EarningsReport]] = {s: [] for s in REAL_SYMBOLS}
    for sym, d, release in df.select("symbol", "date", "release_time").iter_rows():
        out[sym].append(EarningsReport(date=date.fromisoformat(d), release_time=release))
    return out


@pytest.fixture(scope="session")
def real_earnings(shared_data: Path) -> dict[str, list[date]]:
    df = pl.read_csv(shared_data / "earnings_dates.csv").filter(pl.col("symbol").is_in(REAL_SYMBOLS))
    out: dict[str, list[date]] = {s: [] for s in REAL_SYMBOLS}
    for sym, d in df.iter_rows():
        out[sym].append(date.fromisoformat(d))
    return out
