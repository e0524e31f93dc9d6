"""Each indicator against a plain, loop-by-loop reference written from the textbook definition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jax_assistant.analysis import indicators as ind

NAN = float("nan")


# --------------------------------------------------------------------------- references (plain loops)


def ref_sma(x: list[float], n: int) -> list[float]:
    return [NAN if t < n - 1 else sum(x[t - n + 1 : t + 1]) / n for t in range(len(x))]


def ref_smooth(x: list[float], n: int, alpha: float) -> list[float]:
    """Seed with the mean of the first n non-NaN values, then y = y + alpha * (x - y)."""
    out = [NAN] * len(x)
    start = next((k for k, v in enumerate(x) if not math.isnan(v)), None)
    if start is None or start + n - 1 >= len(x):
        return out
    y = sum(x[start : start + n]) / n
    out[start + n - 1] = y
    for t in range(start + n, len(x)):
        y = y + alpha * (x[t] - y)
        out[t] = y
    return out


def ref_ema(x: list[float], n: int) -> list[float]:
    return ref_smooth(x, n, 2 / (n + 1))


def ref_rsi(close: list[float], n: int = 14) -> list[float]:
    out = [NAN] * len(close)
    if len(close) <= n:
        return out
    gains = [max(close[t] - close[t - 1], 0.0) for t in range(1, len(close))]
    losses = [max(close[t - 1] - close[t], 0.0) for t in range(1, len(close))]
    ag, al = sum(gains[:n]) / n, sum(losses[:n]) / n

    def value(g: float, lo: float) -> float:
        if g == 0 and lo == 0:
            return 50.0
        if lo == 0:
            return 100.0
        return 100 - 100 / (1 + g / lo)

    out[n] = value(ag, al)
    for t in range(n + 1, len(close)):
        ag = (ag * (n - 1) + gains[t - 1]) / n
        al = (al * (n - 1) + losses[t - 1]) / n
        out[t] = value(ag, al)
    return out


def ref_true_range(h: list[float], lo: list[float], c: list[float]) -> list[float]:
    out = [h[0] - lo[0]]
    for t in range(1, len(h)):
        out.append(max(h[t] - lo[t], abs(h[t] - c[t - 1]), abs(lo[t] - c[t - 1])))
    return out


def ref_atr(h: list[float], lo: list[float], c: list[float], n: int = 14) -> list[float]:
    tr = ref_true_range(h, lo, c)
    out = [NAN] * len(tr)
    if len(tr) < n:
        return out
    a = sum(tr[:n]) / n
    out[n - 1] = a
    for t in range(n, len(tr)):
        a = (a * (n - 1) + tr[t]) / n
        out[t] = a
    return out


def ref_macd(c: list[float]) -> tuple[list[float], list[float], list[float]]:
    fast, slow = ref_ema(c, 12), ref_ema(c, 26)
    line = [f - s for f, s in zip(fast, slow, strict=True)]
    sig = ref_ema(line, 9)
    return line, sig, [a - b for a, b in zip(line, sig, strict=True)]


# --------------------------------------------------------------------------- data


def random_bars(n: int, seed: int) -> tuple[list[float], list[float], list[float], list[float]]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = close * np.exp(rng.normal(0, 0.01, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, n))
    return open_.tolist(), high.tolist(), low.tolist(), close.tolist()


def same(actual: np.ndarray, expected: list[float], rtol: float = 1e-9, atol: float = 1e-9) -> None:
    np.testing.assert_allclose(actual, np.array(expected), rtol=rtol, atol=atol, equal_nan=True)


# 9000 bars runs several closed-form blocks of every smoother; 7 is shorter than most warm-ups.
LENGTHS = [1, 7, 60, 400, 9000]


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("period", [1, 5, 20, 200])
def test_sma_matches_loop(n: int, period: int) -> None:
    close = random_bars(n, 1)[3]
    same(ind.sma(close, period), ref_sma(close, period))


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("period", [1, 9, 12, 26, 50])
def test_ema_matches_loop(n: int, period: int) -> None:
    close = random_bars(n, 2)[3]
    same(ind.ema(close, period), ref_ema(close, period))


@pytest.mark.parametrize("n", LENGTHS)
def test_rsi_matches_loop(n: int) -> None:
    close = random_bars(n, 3)[3]
    same(ind.rsi(close, 14), ref_rsi(close, 14))


def test_rsi_extremes_and_flat() -> None:
    up = [float(k) for k in range(1, 40)]
    flat = [100.0] * 40
    assert ind.rsi(up)[14:].tolist() == [100.0] * 25
    assert ind.rsi(flat)[14:].tolist() == [50.0] * 26
    same(ind.rsi(up[::-1]), ref_rsi(up[::-1]))  # only losses: 0


def test_rsi_warmup_is_period_bars() -> None:
    r = ind.rsi(random_bars(30, 4)[3], 14)
    assert np.isnan(r[:14]).all() and not np.isnan(r[14:]).any()


@pytest.mark.parametrize("n", LENGTHS)
def test_true_range_matches_loop(n: int) -> None:
    _, h, lo, c = random_bars(n, 5)
    same(ind.true_range(h, lo, c), ref_true_range(h, lo, c), rtol=0, atol=0)


def test_true_range_uses_previous_close_for_gaps() -> None:
    # gap up: yesterday closed at 10, today trades 12..13 -> TR = 13 - 10 = 3, not 1
    tr = ind.true_range([10.5, 13.0], [9.5, 12.0], [10.0, 12.5])
    assert tr.tolist() == [1.0, 3.0]


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("period", [1, 14])
def test_atr_matches_loop(n: int, period: int) -> None:
    _, h, lo, c = random_bars(n, 6)
    same(ind.atr(h, lo, c, period), ref_atr(h, lo, c, period))


def test_atr_warmup_is_period_minus_one_bars() -> None:
    _, h, lo, c = random_bars(20, 7)
    a = ind.atr(h, lo, c, 14)
    assert np.isnan(a[:13]).all() and not np.isnan(a[13:]).any()


@pytest.mark.parametrize("n", LENGTHS)
def test_macd_matches_loop(n: int) -> None:
    close = random_bars(n, 8)[3]
    for got, want in zip(ind.macd(close), ref_macd(close), strict=True):
        same(got, want, rtol=1e-8, atol=1e-10)


def test_macd_warmup() -> None:
    line, sig, hist = ind.macd(random_bars(60, 9)[3])
    assert np.isnan(line[:25]).all() and not np.isnan(line[25:]).any()
    assert np.isnan(sig[:33]).all() and not np.isnan(sig[33:]).any()
    assert np.isnan(hist[:33]).all() and not np.isnan(hist[33:]).any()


def test_smoothers_stay_accurate_on_long_large_series() -> None:
    # Large values (volume-like) over many blocks: the scaled cumulative sums must not overflow.
    rng = np.random.default_rng(10)
    x = rng.uniform(1e8, 5e9, 20_000).tolist()
    same(ind.ema(x, 12), ref_ema(x, 12), rtol=1e-9, atol=0)
    same(ind.wilder(x, 14), ref_smooth(x, 14, 1 / 14), rtol=1e-9, atol=0)


def test_rolling_mean_and_shift() -> None:
    assert ind.rolling_mean([1, 2, 3, 4], 2)[1:].tolist() == [1.5, 2.5, 3.5]
    assert np.isnan(ind.rolling_mean([1, 2, 3, 4], 2)[0])
    assert np.isnan(ind.rolling_mean([1, 2], 3)).all()
    s = ind.shift([1.0, 2.0, 3.0], 1)
    assert np.isnan(s[0]) and s[1:].tolist() == [1.0, 2.0]
    assert np.isnan(ind.shift([1.0, 2.0], 5)).all()


def test_bad_periods_are_rejected() -> None:
    with pytest.raises(ValueError, match="period"):
        ind.sma([1.0, 2.0], 0)
    with pytest.raises(ValueError, match="period"):
        ind.ema([1.0, 2.0], 0)
    with pytest.raises(ValueError, match="shorter"):
        ind.macd([1.0] * 50, fast=26, slow=12)


def test_empty_input() -> None:
    for f in (lambda: ind.sma([], 3), lambda: ind.ema([], 3), lambda: ind.rsi([]), lambda: ind.macd([])[1]):
        assert f().shape == (0,)
    assert ind.atr([], [], [], 14).shape == (0,)


@pytest.mark.parametrize("level", [100.0, 37.37, 0.1])
def test_constant_input_gives_exactly_that_constant(level: float) -> None:
    """Equal averages must be *equal*, or rounding noise would fake crossovers."""
    x = [level] * 500
    for out in (ind.sma(x, 20), ind.ema(x, 12), ind.ema(x, 26), ind.wilder(x, 14)):
        valid = out[~np.isnan(out)]
        assert valid.size and (valid == level).all()
    line, _, hist = ind.macd(x)
    assert (line[25:] == 0).all() and (hist[33:] == 0).all()


def test_rolling_sum_is_exact_for_integers() -> None:
    rng = np.random.default_rng(11)
    v = rng.integers(0, 10**9, 5000).astype(float)
    vl = v.tolist()
    got = ind.rolling_sum(v, 20)
    assert np.isnan(got[:19]).all()
    assert got[19:].tolist() == [float(sum(vl[t - 19 : t + 1])) for t in range(19, len(vl))]
