"""The simulated sample market: labelled, deterministic, realistic, and busy on its last session.

The indicator checks use their own small implementations here, independent of the generator's.
"""

from __future__ import annotations

from collections import Counter
from datetime import date

import numpy as np
import pytest

from jax_assistant.marketdata import (
    SAMPLE_LAST_SESSION,
    BarSeries,
    MarketDataProvider,
    SampleProvider,
    UnknownSymbolError,
)
from jax_assistant.marketdata import sample as sample_module

FIELDS = ("dates", "open", "high", "low", "close", "volume")


@pytest.fixture(scope="module")
def sample() -> SampleProvider:
    return SampleProvider()


# --------------------------------------------------------------------------- reference indicators


def rsi14(close: np.ndarray) -> np.ndarray:
    """Wilder RSI: SMA seed over the first 14 changes, then alpha = 1/14 smoothing."""
    ch = np.diff(close)
    up, down = np.where(ch > 0, ch, 0.0), np.where(ch < 0, -ch, 0.0)
    out = np.full(len(close), np.nan)
    avg_up, avg_down = up[:14].sum() / 14, down[:14].sum() / 14
    out[14] = 100 * avg_up / (avg_up + avg_down)
    for k in range(14, len(ch)):
        avg_up += (up[k] - avg_up) / 14
        avg_down += (down[k] - avg_down) / 14
        out[k + 1] = 100 * avg_up / (avg_up + avg_down)
    return out


def ema(x: np.ndarray, n: int) -> np.ndarray:
    a = 2 / (n + 1)
    out = np.array(x, dtype=float)
    for k in range(1, len(x)):
        out[k] = out[k - 1] + a * (x[k] - out[k - 1])
    return out


def macd_minus_signal(close: np.ndarray) -> np.ndarray:
    line = ema(close, 12) - ema(close, 26)
    return line - ema(line, 9)


def sma(x: np.ndarray, n: int) -> np.ndarray:
    return np.convolve(x, np.ones(n) / n, mode="full")[: len(x)]  # valid from index n-1 on


def atr14(s: BarSeries) -> np.ndarray:
    prev = np.r_[s.close[0], s.close[:-1]]
    tr = np.maximum(s.high, prev) - np.minimum(s.low, prev)
    out = np.full(len(tr), np.nan)
    out[14] = tr[1:15].mean()
    for k in range(15, len(tr)):
        out[k] = out[k - 1] + (tr[k] - out[k - 1]) / 14
    return out


def true_range_last(s: BarSeries) -> float:
    return float(max(s.high[-1], s.close[-2]) - min(s.low[-1], s.close[-2]))


def avg_volume_before_last(s: BarSeries) -> float:
    return float(s.volume[-21:-1].mean())


# --------------------------------------------------------------------------- labelling and shape


def test_clearly_labelled_simulated(sample: SampleProvider) -> None:
    assert isinstance(sample, MarketDataProvider)
    assert (sample.name, sample.simulated) == ("sample", True)
    assert sample_module.__doc__ is not None and "SIMULATED" in sample_module.__doc__
    assert "simulated" in repr(sample).lower()
    syms = sample.symbols()
    assert 18 <= len(syms) <= 22
    assert all(s.endswith(".SIM") for s in syms)
    assert syms == sorted(syms)
    assert all("simulated" in (sample.company_name(s) or "") for s in syms)


def test_sessions(sample: SampleProvider) -> None:
    assert date(2025, 6, 27) == SAMPLE_LAST_SESSION and SAMPLE_LAST_SESSION.weekday() == 4
    assert sample.latest_date() == SAMPLE_LAST_SESSION
    first = sample.bars(sample.symbols()[0])
    assert 730 <= len(first) <= 770
    assert first.last_date == SAMPLE_LAST_SESSION
    days = first.dates.astype("datetime64[D]")
    assert np.all(np.diff(days).astype(int) > 0)
    assert np.all(np.is_busday(days))  # Mon-Fri only
    for holiday in ("2024-12-25", "2024-07-04", "2025-01-01", "2024-11-28"):
        assert np.datetime64(holiday) not in days
    for sym in sample.symbols():  # one calendar for all
        np.testing.assert_array_equal(sample.bars(sym).dates, first.dates)


def test_sectors(sample: SampleProvider) -> None:
    sectors = {s: sample.sector(s) for s in sample.symbols()}
    assert all(sectors.values())
    assert 6 <= len(set(sectors.values())) <= 10
    assert max(Counter(sectors.values()).values()) <= 4
    assert sample.sector("acme.sim") == sample.sector("ACME.SIM") is not None


def test_bars_are_sane_and_realistic(sample: SampleProvider) -> None:
    for sym in sample.symbols():
        s = sample.bars(sym)
        assert sample.issues(sym) == [] and s.issues == ()
        assert s.low.min() >= 10 and s.high.max() <= 500
        assert np.all(s.high >= np.maximum(s.open, s.close))
        assert np.all(s.low <= np.minimum(s.open, s.close))
        assert np.all(s.high > s.low)
        assert np.all(s.volume > 0)
        r = np.diff(np.log(s.close))
        assert 0.1 < r.std() * np.sqrt(252) < 0.8, sym
        assert np.abs(r).max() < 0.3, sym  # earnings days and fat tails, but no glitches
        vol = np.log(s.volume)
        assert 0.2 < vol.std() < 1.0, sym  # log-normal-ish, with spikes


def test_deterministic_byte_identical(sample: SampleProvider) -> None:
    before = {s: sample.bars(s) for s in sample.symbols()}
    sample_module._build_market.cache_clear()
    again = SampleProvider(seed=7)
    for sym, s in before.items():
        t = again.bars(sym)
        for f in FIELDS:
            assert getattr(s, f).tobytes() == getattr(t, f).tobytes(), (sym, f)
        assert sample.earnings_dates(sym) == again.earnings_dates(sym)
    other = SampleProvider(seed=8)
    assert other.bars("ACME.SIM").close.tobytes() != again.bars("ACME.SIM").close.tobytes()


def test_as_of_and_unknown_symbols(sample: SampleProvider) -> None:
    s = sample.bars("ACME.SIM", as_of=date(2025, 1, 1))
    assert s.last_date is not None and s.last_date <= date(2025, 1, 1)
    with pytest.raises(UnknownSymbolError, match=r"ACME\.SIM"):
        sample.bars("ACME")
    with pytest.raises(UnknownSymbolError):
        sample.issues("AAPL")
    assert sample.earnings_dates("AAPL") == []
    assert sample.sector("AAPL") is None


def test_quarterly_earnings_with_reactions(sample: SampleProvider) -> None:
    ratios, gaps = [], []
    for sym in sample.symbols():
        s = sample.bars(sym)
        dates = sample.earnings_dates(sym)
        assert dates == sorted(dates)
        past = [d for d in dates if d <= SAMPLE_LAST_SESSION]
        assert 11 <= len(past) <= 13
        assert dates[-1] > SAMPLE_LAST_SESSION  # the next report is announced
        idx = np.searchsorted(s.dates, np.array(past, dtype="datetime64[D]"))
        assert np.all(s.dates[idx] == np.array(past, dtype="datetime64[D]"))  # on sessions
        assert np.diff(idx).min() >= 55 and np.diff(idx).max() <= 70  # quarterly
        for i in idx[idx > 20]:
            ratios.append(s.volume[i] / np.median(s.volume[i - 20 : i]))
            gaps.append(abs(s.open[i] / s.close[i - 1] - 1))
    assert np.median(ratios) > 2.0
    assert np.median(gaps) > 0.02


# --------------------------------------------------------------------------- the busy last session


def test_last_session_earnings(sample: SampleProvider) -> None:
    reporters = [s for s in sample.symbols() if SAMPLE_LAST_SESSION in sample.earnings_dates(s)]
    assert len(reporters) >= 4
    signs = set()
    for sym in reporters:
        s = sample.bars(sym)
        gap = s.open[-1] / s.close[-2] - 1
        assert 0.04 <= abs(gap) <= 0.09, (sym, gap)
        assert 3 <= s.volume[-1] / avg_volume_before_last(s) <= 6, sym
        signs.add(gap > 0)
    assert signs == {True, False}


def test_last_session_volume_and_volatility_spikes(sample: SampleProvider) -> None:
    quiet_news = [s for s in sample.symbols() if SAMPLE_LAST_SESSION not in sample.earnings_dates(s)]
    volume_spikes = [
        s for s in quiet_news if sample.bars(s).volume[-1] > 3 * avg_volume_before_last(sample.bars(s))
    ]
    assert len(volume_spikes) >= 3
    vol_spikes = [s for s in quiet_news if true_range_last(sample.bars(s)) > 2.5 * atr14(sample.bars(s))[-1]]
    assert len(vol_spikes) >= 2
    # Not everything fires: most symbols have an ordinary day.
    ordinary = [
        s
        for s in quiet_news
        if abs(sample.bars(s).open[-1] / sample.bars(s).close[-2] - 1) < 0.01
        and sample.bars(s).volume[-1] < 2 * avg_volume_before_last(sample.bars(s))
    ]
    assert len(ordinary) >= 5


def _crossings(sample: SampleProvider) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"rsi_up": [], "rsi_down": [], "macd": [], "sma": []}
    for sym in sample.symbols():
        c = sample.bars(sym).close
        r = rsi14(c)
        if r[-2] < 30 <= r[-1]:
            found["rsi_up"].append(sym)
        if r[-2] > 70 >= r[-1]:
            found["rsi_down"].append(sym)
        h = macd_minus_signal(c)
        if np.sign(h[-2]) != np.sign(h[-1]):
            found["macd"].append(sym)
        diff = sma(c, 20) - sma(c, 50)
        if np.sign(diff[-2]) != np.sign(diff[-1]):
            found["sma"].append(sym)
    return found


def test_last_session_indicator_setups(sample: SampleProvider) -> None:
    found = _crossings(sample)
    assert found["rsi_up"] and found["rsi_down"], found
    assert found["macd"] and found["sma"], found
    assert len({s for v in found.values() for s in v}) >= 4


@pytest.mark.parametrize("seed", [0, 1, 2, 42])
def test_other_seeds_are_busy_too(seed: int) -> None:
    p = SampleProvider(seed=seed)
    reporters = [s for s in p.symbols() if SAMPLE_LAST_SESSION in p.earnings_dates(s)]
    assert len(reporters) >= 4
    found = _crossings(p)
    assert all(found.values()), found
