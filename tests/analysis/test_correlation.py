"""Return correlations as of a date: against an independent reference, on real and hand-built data."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from tests.bars import build_series

from jax_assistant.analysis.correlation import return_correlations
from jax_assistant.marketdata.base import BarSeries

ENERGY_AND_OTHERS = ("XOM", "CVX", "DUK", "AAPL")


@pytest.fixture(scope="module")
def closes(shared_data: Path) -> pl.DataFrame:
    return (
        pl.scan_csv(shared_data / "daily_ohlcv_stooq_sp500.csv.gz")
        .filter(pl.col("symbol").is_in(ENERGY_AND_OTHERS))
        .select("symbol", "date", "close")
        .collect()
    )


def series_of(closes: pl.DataFrame, symbol: str) -> BarSeries:
    g = closes.filter(pl.col("symbol") == symbol).sort("date")
    c = g["close"].cast(pl.Float64).to_numpy().copy()
    dates = np.array(g["date"].to_list(), dtype="datetime64[D]")
    return BarSeries(symbol, dates, c, c, c, c, np.ones_like(c))


def reference(closes: pl.DataFrame, a: str, b: str, as_of: date, window: int) -> float:
    """Plain loop over the sessions both traded (the symbols here have no gaps in these windows)."""
    wide = closes.pivot(on="symbol", index="date", values="close").sort("date")
    rows = wide.filter(pl.col("date") <= as_of.isoformat()).tail(window + 1)
    xa, xb = rows[a].to_list(), rows[b].to_list()
    ra = [xa[i] / xa[i - 1] - 1 for i in range(1, len(xa))]
    rb = [xb[i] / xb[i - 1] - 1 for i in range(1, len(xb))]
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return float(cov / (va * vb) ** 0.5)


@pytest.mark.parametrize("as_of", [date(2015, 12, 31), date(2017, 11, 10)])
def test_real_oil_majors_match_the_reference(closes: pl.DataFrame, as_of: date) -> None:
    series = {s: series_of(closes, s) for s in ENERGY_AND_OTHERS}
    m = return_correlations(series, as_of, window=60)
    for a in ENERGY_AND_OTHERS:
        for b in ENERGY_AND_OTHERS:
            assert m.get(a, b) == pytest.approx(reference(closes, a, b, as_of, 60), abs=1e-9)
    if as_of == date(2015, 12, 31):
        xom_cvx = m.get("XOM", "CVX")
        assert xom_cvx is not None and xom_cvx > 0.85
        xom_aapl = m.get("xom", "aapl")
        assert xom_aapl is not None and xom_aapl < 0.7


def test_bars_after_the_as_of_date_are_never_read(closes: pl.DataFrame) -> None:
    as_of = date(2015, 12, 31)
    full = {s: series_of(closes, s) for s in ("XOM", "CVX")}
    cut = {s: v.upto(as_of) for s, v in full.items()}
    rng = np.random.default_rng(1)
    for v in full.values():  # scramble the future: the answer must not move
        after = v.dates > np.datetime64(as_of, "D")
        v.close[after] = rng.uniform(1, 500, int(after.sum()))
    assert return_correlations(full, as_of).values.tolist() == return_correlations(cut, as_of).values.tolist()


def test_identical_opposite_flat_and_short_series() -> None:
    rng = np.random.default_rng(7)
    base = 100 * np.cumprod(1 + rng.normal(0, 0.01, 80))
    mirror = 100 * np.cumprod(1 - (base[1:] / base[:-1] - 1))
    series = {
        "A": build_series(base.tolist(), symbol="A"),
        "B": build_series((base * 3).tolist(), symbol="B"),
        "C": build_series([100.0, *mirror.tolist()], symbol="C"),
        "FLAT": build_series([50.0] * 80, symbol="FLAT"),
        "NEW": build_series(base[-10:].tolist(), symbol="NEW", start=build_series(base.tolist()).date_at(70)),
    }
    as_of = series["A"].date_at(79)
    m = return_correlations(series, as_of, window=60)
    assert m.get("A", "B") == pytest.approx(1.0)
    assert m.get("A", "C") == pytest.approx(-1.0)
    assert m.get("A", "FLAT") is None  # no variance: no correlation
    assert m.get("A", "NEW") is None  # 9 common returns < 30 (half the window)
    assert return_correlations(series, as_of, window=60, min_overlap=5).get("A", "NEW") == pytest.approx(1.0)
    assert m.get("A", "UNKNOWN") is None


def test_gaps_use_only_the_sessions_both_have() -> None:
    rng = np.random.default_rng(11)
    a = 100 * np.cumprod(1 + rng.normal(0, 0.01, 70))
    b = 100 * np.cumprod(1 + rng.normal(0, 0.01, 70))
    sa, sb = build_series(a.tolist(), symbol="A"), build_series(b.tolist(), symbol="B")
    keep = np.ones(70, dtype=bool)
    keep[[20, 21, 40]] = False  # B misses three sessions
    sb_gappy = BarSeries(
        "B", sb.dates[keep], sb.open[keep], sb.high[keep], sb.low[keep], sb.close[keep], sb.volume[keep]
    )
    as_of = sa.date_at(69)
    got = return_correlations({"A": sa, "B": sb_gappy}, as_of, window=60).get("A", "B")
    # Reference: returns of the last 60 calendar sessions where both closes of a return exist.
    ra = a[1:] / a[:-1] - 1
    rb = b[1:] / b[:-1] - 1
    both = keep[1:] & keep[:-1]
    sel = np.arange(69) >= 9
    expected = np.corrcoef(ra[both & sel], rb[both & sel])[0, 1]
    assert got == pytest.approx(expected, abs=1e-12)
