"""Vectorised technical indicators: float arrays in, float arrays of the same length out.

Every function is causal (the value at ``t`` uses bars ``<= t`` only) and returns NaN during its
warm-up, i.e. wherever the textbook definition has no value yet; callers treat NaN as "unknown"
and comparisons with NaN are simply False, so a warm-up bar can never trigger a signal.

Inputs are expected finite (``BarSeries`` guarantees it); a NaN inside a series would propagate.

The recursive smoothers (EMA, Wilder) are computed without a Python loop over bars: within a block
the recurrence ``y_j = d*y_{j-1} + a*x_j`` has the closed form
``y_j = d^(j+1)*y_-1 + a*d^j*cumsum(x_i*d^-i)``; blocks are sized so ``d^-i`` stays far from
overflow and the last value of a block seeds the next.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# d^-i may grow to about 1e100 inside a block: far from float overflow (1e308) even when multiplied
# by large inputs (volumes ~1e10), and the rounding error of the scaled cumsum stays ~eps*max|x|.
_MAX_LOG_SCALE = 100.0 * math.log(10.0)
_MAX_BLOCK = 4096  # longer blocks would only make the cached power tables bigger


def _as_float(x: npt.ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def _check_period(period: int) -> None:
    if period < 1:
        raise ValueError(f"period must be >= 1, got {period}")


def shift(x: npt.ArrayLike, k: int = 1) -> FloatArray:
    """``x`` delayed by ``k`` bars (the first ``k`` values are NaN): ``shift(x)[t] == x[t-1]``."""
    a = _as_float(x)
    out = np.full(a.shape[0], np.nan)
    if k < 0:
        raise ValueError("shift only looks back (k >= 0)")
    if k < a.shape[0]:
        out[k:] = a[: a.shape[0] - k]
    return out


def _deviation_cumsum(a: FloatArray) -> tuple[FloatArray, float]:
    """Cumulative sums of ``a - a[0]`` with a leading 0 (centred: small totals, exact on integers)."""
    base = float(a[0])
    csum = np.empty(a.shape[0] + 1)
    csum[0] = 0.0
    np.cumsum(a - base, out=csum[1:])
    return csum, base


def rolling_sum(x: npt.ArrayLike, window: int) -> FloatArray:
    """Trailing sum of the last ``window`` values including ``t`` (NaN while the window fills).

    Exact for integer-valued inputs such as volumes (while totals stay below 2**53), so a ratio
    built on it equals one computed with a plain loop bit for bit.
    """
    _check_period(window)
    a = _as_float(x)
    n = a.shape[0]
    out = np.full(n, np.nan)
    if n < window:
        return out
    csum, base = _deviation_cumsum(a)
    out[window - 1 :] = (csum[window:] - csum[: n - window + 1]) + window * base
    return out


def rolling_mean(x: npt.ArrayLike, window: int) -> FloatArray:
    """Trailing mean of the last ``window`` values including ``t``.

    Warm-up: the first ``window - 1`` values are NaN because the window is not full yet.
    O(n) via cumulative sums of deviations from the first value, so a constant input gives that
    constant exactly (two equal averages never "cross" by rounding noise).
    """
    _check_period(window)
    a = _as_float(x)
    n = a.shape[0]
    out = np.full(n, np.nan)
    if n < window:
        return out
    csum, base = _deviation_cumsum(a)
    out[window - 1 :] = (csum[window:] - csum[: n - window + 1]) / window + base
    return out


def sma(x: npt.ArrayLike, period: int) -> FloatArray:
    """Simple moving average; NaN for the first ``period - 1`` bars (window not full)."""
    return rolling_mean(x, period)


@lru_cache(maxsize=64)
def _powers(decay: float) -> tuple[FloatArray, FloatArray]:
    """``d^0..d^B`` and ``d^0..d^-(B-1)`` for the largest safe block ``B`` (capped at 4096 bars).

    Cached per decay: the same few periods are used everywhere.
    """
    block = max(1, min(_MAX_BLOCK, int(_MAX_LOG_SCALE / -math.log(decay))))
    powers = np.exp(math.log(decay) * np.arange(block + 1, dtype=np.float64))
    inv = np.exp(-math.log(decay) * np.arange(block, dtype=np.float64))
    powers.flags.writeable = False  # shared between calls
    inv.flags.writeable = False
    return powers, inv


def _linear_recurrence(x: FloatArray, decay: float, gain: float, init: float) -> FloatArray:
    """``y_j = decay*y_{j-1} + gain*x_j`` with ``y_{-1} = init`` and ``decay + gain == 1``.

    Block-wise closed form, computed on deviations from the block's starting value: since the
    weights sum to 1, ``y - c`` obeys the same recurrence for any constant ``c``. Centring keeps the
    rounding error proportional to the moves rather than the price level, and a constant input
    gives exactly that constant (no noise that would fake a crossover of two equal averages).
    """
    n = x.shape[0]
    out = np.empty(n)
    if n == 0:
        return out
    if decay <= 0.0:  # period 1: no memory at all
        out[:] = x
        return out
    # 0 < decay < 1 here (alpha in (0, 1)): blocks of ~3100 bars for ATR14, ~1400 for EMA12.
    powers, inv_powers = _powers(decay)
    block = inv_powers.shape[0]
    prev = init
    for s in range(0, n, block):  # a handful of iterations: n / block
        m = min(block, n - s)
        scaled = np.cumsum((x[s : s + m] - prev) * inv_powers[:m])
        seg = out[s : s + m]
        np.multiply(scaled, powers[:m], out=seg)
        seg *= gain
        seg += prev  # the deviation of y_-1 from itself is 0, so no decaying init term remains
        prev = float(seg[-1])
    return out


def _seeded_smooth(x: FloatArray, period: int, alpha: float) -> FloatArray:
    """Exponential smoothing seeded with the simple mean of the first ``period`` valid values.

    Leading NaNs (an input that has its own warm-up, e.g. the MACD line) are skipped, so the first
    output lands ``period - 1`` bars after the first valid input: before that there are fewer than
    ``period`` observations and the seed would be a biased guess.
    """
    n = x.shape[0]
    out = np.full(n, np.nan)
    valid = ~np.isnan(x)
    if not valid.any():
        return out
    start = int(np.argmax(valid))
    seed_at = start + period - 1
    if seed_at >= n:
        return out
    first = float(x[start])
    seed = first + float((x[start : seed_at + 1] - first).mean())  # centred: exact for a constant
    out[seed_at] = seed
    out[seed_at + 1 :] = _linear_recurrence(x[seed_at + 1 :], 1.0 - alpha, alpha, seed)
    return out


def ema(x: npt.ArrayLike, period: int) -> FloatArray:
    """Exponential moving average, ``alpha = 2 / (period + 1)``.

    Warm-up: NaN for the first ``period - 1`` bars; the value at ``period - 1`` is the SMA of the
    first ``period`` bars (the usual seed), after which the recurrence runs.
    """
    _check_period(period)
    return _seeded_smooth(_as_float(x), period, 2.0 / (period + 1.0))


def wilder(x: npt.ArrayLike, period: int) -> FloatArray:
    """Wilder's smoothing (an EMA with ``alpha = 1 / period``), seeded like :func:`ema`."""
    _check_period(period)
    return _seeded_smooth(_as_float(x), period, 1.0 / period)


def rsi(close: npt.ArrayLike, period: int = 14) -> FloatArray:
    """Wilder's RSI on closes.

    Warm-up: NaN for the first ``period`` bars, because ``period`` price *changes* (which need
    ``period + 1`` closes) seed the average gain and loss. A perfectly flat window (no gains, no
    losses) is reported as the neutral 50 instead of 0/0; no losses at all gives 100.
    """
    _check_period(period)
    c = _as_float(close)
    n = c.shape[0]
    out = np.full(n, np.nan)
    if n <= period:
        return out
    change = np.diff(c)
    avg_gain = wilder(np.maximum(change, 0.0), period)
    avg_loss = wilder(np.maximum(-change, 0.0), period)
    total = avg_gain + avg_loss
    # 100 - 100/(1+RS) == 100*gain/(gain+loss): one division and no RS = x/0 case.
    rs_part = np.divide(100.0 * avg_gain, total, out=np.full(n - 1, 50.0), where=total > 0)
    rs_part[np.isnan(total)] = np.nan
    out[1:] = rs_part
    return out


def true_range(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike) -> FloatArray:
    """True range: max(high-low, |high-prev close|, |low-prev close|).

    The first bar has no previous close, so its true range is just ``high - low`` (no warm-up NaN).
    """
    h, lo, c = _as_float(high), _as_float(low), _as_float(close)
    tr = h - lo
    if tr.shape[0] > 1:
        prev = c[:-1]
        np.maximum(tr[1:], np.abs(h[1:] - prev), out=tr[1:])
        np.maximum(tr[1:], np.abs(lo[1:] - prev), out=tr[1:])
    return tr


def atr(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 14) -> FloatArray:
    """Average true range with Wilder's smoothing.

    Warm-up: NaN for the first ``period - 1`` bars; the value at ``period - 1`` is the mean of the
    first ``period`` true ranges (the first of which is ``high - low``), then Wilder's recurrence.
    """
    _check_period(period)
    return wilder(true_range(high, low, close), period)


def macd(
    close: npt.ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """MACD line (EMA fast - EMA slow), its signal line (EMA of the line) and the histogram.

    Warm-up: the line is NaN until the slow EMA exists (``slow - 1`` bars); the signal line needs
    ``signal`` valid line values on top of that, so it and the histogram start at
    ``slow + signal - 2``.
    """
    if fast >= slow:
        raise ValueError(f"fast period ({fast}) must be shorter than slow period ({slow})")
    c = _as_float(close)
    line = ema(c, fast) - ema(c, slow)
    sig = ema(line, signal)
    return line, sig, line - sig
