"""Code strategies: indicator signals computed over the bars themselves (no event needed).

A signal on session ``t`` uses bars ``<= t`` only and is traded at that session's close:
entry = close, stop = entry -/+ ``stop_atr`` * ATR14, targets = entry +/- m * ATR14.
Confidence starts at the strategy's base and gets small additive boosts, capped at 1:
+0.05 when the long-term trend agrees (price on the trade's side of SMA200 *and* SMA200 sloping
that way) and +0.05 when volume is above its 20-session average (the previous 20 sessions).
Setups carry ``eventId = None``: they come from indicators, not from a detected event.
``ma_crossover_v1`` follows the original system's own stops, targets and confidence weights (see
:class:`MaCrossover`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from jax_assistant.analysis.detectors import volume_ratio
from jax_assistant.analysis.indicators import atr, macd, rsi, sma
from jax_assistant.domain import Direction, Event, TradeSetup, session_time, unix_seconds
from jax_assistant.strategies.rules import session_window, setup_id_at

if TYPE_CHECKING:
    from jax_assistant.marketdata.base import BarSeries

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

ATR_PERIOD = 14
TREND_BOOST = 0.05
VOLUME_BOOST = 0.05
# Two averages closer than this fraction of the price are "level": rounding noise around equality
# must not read as a string of crossovers.
CROSS_TOLERANCE = 1e-9


@dataclass
class _Bars:
    """Indicators of one series, computed lazily once and shared by the code strategies of a registry
    call (:class:`IndicatorCache`). ``_cache`` holds a strategy's own arrays, keyed by what they
    depend on (a strategy's masks by its id: two strategies may differ in their parameters)."""

    series: BarSeries
    _cache: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def days(self) -> npt.NDArray[np.int64]:
        """Each session as days since 1970-01-01 (the key of :func:`_session`)."""
        return self.series.dates.astype("datetime64[D]").astype(np.int64)

    @cached_property
    def atr(self) -> FloatArray:
        s = self.series
        return atr(s.high, s.low, s.close, ATR_PERIOD)

    @cached_property
    def sma20(self) -> FloatArray:
        return sma(self.series.close, 20)

    @cached_property
    def sma50(self) -> FloatArray:
        return sma(self.series.close, 50)

    @cached_property
    def sma200(self) -> FloatArray:
        return sma(self.series.close, 200)

    @cached_property
    def volume_ratio(self) -> FloatArray:
        return volume_ratio(self.series.volume, 20)[0]


class IndicatorCache:
    """Indicators shared by the code strategies of one :meth:`StrategyRegistry.generate` call: ATR14,
    the SMAs and the volume ratio of the series are computed once, not once per strategy."""

    def __init__(self) -> None:
        self._bars: _Bars | None = None

    def bars(self, series: BarSeries) -> _Bars:
        """The indicators of ``series`` (the same object: a new series starts afresh)."""
        if self._bars is None or self._bars.series is not series:
            self._bars = _Bars(series)
        return self._bars


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@lru_cache(maxsize=4096)
def _session(day: int) -> tuple[datetime, int]:
    """A session's UTC time and unix seconds: every symbol of a run fires on the same few sessions, so
    each is worked out once instead of once per setup."""
    d = date.fromordinal(_EPOCH_ORDINAL + day)
    return session_time(d), unix_seconds(d)


def _prev(x: FloatArray) -> FloatArray:
    out = np.empty_like(x)
    out[0] = np.nan
    out[1:] = x[:-1]
    return out


def crossings(diff: FloatArray, price: FloatArray) -> tuple[BoolArray, BoolArray]:
    """Sessions where ``diff`` (fast minus slow) crosses above / below zero.

    A session crosses up when it is clearly above (beyond a dead band of ``CROSS_TOLERANCE`` x
    price) and the last session that was clearly on a side was below, or the two were level since
    the warm-up ended. A line that touches and turns back does not cross again, identical averages
    never cross, and the first session after the warm-up is not a cross (nothing came before it).
    """
    n = diff.shape[0]
    band = CROSS_TOLERANCE * np.abs(price)
    side = np.zeros(n, dtype=np.int8)
    side[diff > band] = 1  # NaN compares False: warm-up sessions stay 0
    side[diff < -band] = -1
    pos = np.where(side != 0, np.arange(n), -1)
    np.maximum.accumulate(pos, out=pos)
    last = np.where(pos >= 0, side[np.maximum(pos, 0)], 0)
    before = np.zeros(n, dtype=np.int8)
    before[1:] = last[:-1]
    had_value = np.zeros(n, dtype=np.bool_)
    had_value[1:] = ~np.isnan(diff[:-1])
    return (side == 1) & (before != 1) & had_value, (side == -1) & (before != -1) & had_value


class IndicatorStrategy(ABC):
    """Base of the code strategies: subclasses supply the signal masks and the reason text."""

    kind: ClassVar[str] = "code"
    id: ClassVar[str]
    name: ClassVar[str]
    base_confidence: ClassVar[float]
    stop_atr: ClassVar[float] = 2.0
    target_atr: ClassVar[tuple[float, ...]]
    max_risk_percent: float | None = None  # no own cap: risk uses its configured percent

    @abstractmethod
    def _signals(self, bars: _Bars) -> tuple[BoolArray, BoolArray]:
        """(long, short) masks over the whole series."""

    @abstractmethod
    def _reason(self, bars: _Bars, i: int, direction: Direction) -> str:
        """A sentence stating the signal values on session ``i``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r})"

    def generate(
        self,
        series: BarSeries,
        events: Iterable[Event] = (),
        *,
        as_of: date | None = None,
        lookback: int = 1,
        indicators: IndicatorCache | None = None,
    ) -> list[TradeSetup]:
        """Setups for the signals of the last ``lookback`` sessions ending at ``as_of``. ``indicators``
        shares the series' indicators with the other code strategies of the same call."""
        s, start = session_window(series, as_of, lookback)
        if len(s) < 2 or start >= len(s):
            return []
        bars = indicators.bars(s) if indicators is not None else _Bars(s)
        long, short = self._signals(bars)
        setups: list[TradeSetup] = []
        for i in np.flatnonzero(long[start:] | short[start:]).tolist():
            i += start
            setup = self._setup(bars, i, Direction.LONG if long[i] else Direction.SHORT)
            if setup is not None:
                setups.append(setup)
        return setups

    def confidence(self, bars: _Bars, i: int, direction: Direction) -> float:
        # Python floats and math.isfinite: numpy's scalar operations cost ~10x more, per setup.
        c, trend = float(bars.series.close[i]), bars.sma200
        conf = self.base_confidence
        if i > 0 and math.isfinite(before := float(trend[i - 1])):
            now = float(trend[i])
            up = c > now and now > before
            down = c < now and now < before
            if up if direction is Direction.LONG else down:
                conf += TREND_BOOST
        if bars.volume_ratio[i] > 1.0:
            conf += VOLUME_BOOST
        return round(min(1.0, conf), 4)

    def _setup(self, bars: _Bars, i: int, direction: Direction) -> TradeSetup | None:
        s = bars.series
        a = float(bars.atr[i])
        entry = float(s.close[i])
        if not math.isfinite(a) or a <= 0:
            return None  # no volatility yardstick yet (warm-up) or a dead-flat history
        sign = 1.0 if direction is Direction.LONG else -1.0
        stop = entry - sign * self.stop_atr * a
        if stop <= 0:
            return None  # an ATR larger than half the price: no meaningful long stop
        return self._make(bars, i, direction, stop, f"{self.stop_atr:g}xATR14 ({a:.2f})", self.target_atr)

    def _make(
        self,
        bars: _Bars,
        i: int,
        direction: Direction,
        stop: float,
        stop_note: str,
        target_atr: Sequence[float],
    ) -> TradeSetup:
        """The setup at session ``i``: entry at its close, targets ``target_atr`` ATRs away."""
        s = bars.series
        entry, a = float(s.close[i]), float(bars.atr[i])
        sign = 1.0 if direction is Direction.LONG else -1.0
        targets = [entry + sign * m * a for m in target_atr]
        time, seconds = _session(int(bars.days[i]))
        notes = f"entry {entry:.2f} = session close; stop {stop:.2f} = {stop_note}; targets " + ", ".join(
            f"{t:.2f} ({m:g}xATR)" for t, m in zip(targets, target_atr, strict=True)
        )
        return TradeSetup(
            id=setup_id_at(self.id, s.symbol, seconds),
            symbol=s.symbol,
            direction=direction,
            entry=entry,
            stop=stop,
            targets=targets,
            event_id=None,
            strategy_id=self.id,
            notes=notes,
            confidence=self.confidence(bars, i, direction),
            reason=self._reason(bars, i, direction),
            time=time,
        )


class RsiMomentum(IndicatorStrategy):
    """RSI14 crossing up through 30 (long) or down through 70 (short)."""

    id = "rsi_momentum_v1"
    name = "RSI Momentum V1"
    base_confidence = 0.6
    target_atr = (2.0, 3.0)
    oversold = 30.0
    overbought = 70.0

    def _rsi(self, bars: _Bars) -> FloatArray:
        # Not setdefault(key, rsi(...)): that computes the whole series' RSI again on every call (once
        # per setup's reason), only to throw it away.
        cached = bars._cache.get("rsi")
        if cached is None:
            cached = bars._cache["rsi"] = rsi(bars.series.close, 14)
        return cached

    def _signals(self, bars: _Bars) -> tuple[BoolArray, BoolArray]:
        r = self._rsi(bars)
        prev = _prev(r)
        return (prev < self.oversold) & (r >= self.oversold), (prev > self.overbought) & (
            r <= self.overbought
        )

    def _reason(self, bars: _Bars, i: int, direction: Direction) -> str:
        r = self._rsi(bars)
        level, way = (self.oversold, "up") if direction is Direction.LONG else (self.overbought, "down")
        return (
            f"RSI14 crossed {way} through {level:g} ({r[i - 1]:.1f} -> {r[i]:.1f}); ATR14 {bars.atr[i]:.2f}"
        )


class MacdCrossover(IndicatorStrategy):
    """MACD(12,26,9) line crossing its signal line."""

    id = "macd_crossover_v1"
    name = "MACD Crossover V1"
    base_confidence = 0.6
    target_atr = (2.5, 4.0)

    def _macd(self, bars: _Bars) -> tuple[FloatArray, FloatArray]:
        if "macd" not in bars._cache:
            line, sig, _ = macd(bars.series.close)
            bars._cache["macd"], bars._cache["macd_signal"] = line, sig
        return bars._cache["macd"], bars._cache["macd_signal"]

    def _signals(self, bars: _Bars) -> tuple[BoolArray, BoolArray]:
        line, sig = self._macd(bars)
        return crossings(line - sig, bars.series.close)

    def _reason(self, bars: _Bars, i: int, direction: Direction) -> str:
        line, sig = self._macd(bars)
        way = "above" if direction is Direction.LONG else "below"
        return (
            f"MACD line crossed {way} its signal (line {line[i]:.3f}, signal {sig[i]:.3f}, "
            f"histogram {line[i] - sig[i]:+.3f}); ATR14 {bars.atr[i]:.2f}"
        )


class MaCrossover(IndicatorStrategy):
    """The original moving-average system: SMA20/50/200 alignment (golden/death) and a pullback.

    - Golden cross: SMA20 > SMA50 > SMA200 and close > SMA20 -> long; stop SMA50 - ATR14, targets
      close + 3 and + 5 ATR14. Death cross mirrored (SMA20 < SMA50 < SMA200, close < SMA20 -> short,
      stop SMA50 + ATR14, targets close - 3 and - 5 ATR14). Both are states of the averages on the
      session, so they hold every session of an aligned trend.
    - Pullback: in an uptrend (SMA20 > SMA50 > SMA200) with (close - SMA20) / SMA20 in
      [-0.02, +0.01] and no golden cross that session -> long at confidence 0.55, stop close -
      1.5 ATR14, targets close + 2 and + 3.5 ATR14.
    - Cross confidence: 0.65, +0.12 when the long-term trend agrees (close on the trade's side of a
      SMA200 sloping that way), +0.08 when volume is above its previous-20-session average, +0.10 when
      SMA20 and SMA200 are more than 5 % apart; capped at 1.
    """

    id = "ma_crossover_v1"
    name = "MA Crossover V1"
    base_confidence = 0.65
    target_atr = (3.0, 5.0)
    trend_boost = 0.12
    volume_boost = 0.08
    spread_boost = 0.10
    spread_min = 0.05  # |SMA20 - SMA200| / SMA200 above which the trend counts as established
    pullback_band = (-0.02, 0.01)  # (close - SMA20) / SMA20
    pullback_confidence = 0.55
    pullback_stop_atr = 1.5
    pullback_target_atr = (2.0, 3.5)

    @cached_property
    def _masks_key(self) -> str:
        return f"{self.id}:masks"  # its own: another instance may have other parameters

    def _masks(self, bars: _Bars) -> tuple[BoolArray, BoolArray, BoolArray]:
        known: tuple[BoolArray, BoolArray, BoolArray] | None = bars._cache.get(self._masks_key)
        if known is not None:
            return known
        c = bars.series.close
        fast, slow, trend = bars.sma20, bars.sma50, bars.sma200
        # NaN compares False, so nothing fires before SMA200 exists.
        up = (fast > slow) & (slow > trend)
        down = (fast < slow) & (slow < trend)
        golden = up & (c > fast)
        death = down & (c < fast)
        with np.errstate(invalid="ignore", divide="ignore"):
            dev = (c - fast) / fast
        lo, hi = self.pullback_band
        pullback = up & (dev >= lo - CROSS_TOLERANCE) & (dev <= hi + CROSS_TOLERANCE) & ~golden
        known = bars._cache[self._masks_key] = (golden, death, pullback)
        return known

    def _signals(self, bars: _Bars) -> tuple[BoolArray, BoolArray]:
        golden, death, pullback = self._masks(bars)
        return golden | pullback, death

    def confidence(self, bars: _Bars, i: int, direction: Direction) -> float:
        if self._masks(bars)[2][i]:
            return self.pullback_confidence
        c, trend = float(bars.series.close[i]), bars.sma200
        now = float(trend[i])
        conf = self.base_confidence
        if i > 0 and math.isfinite(before := float(trend[i - 1])):
            up = c > now and now > before
            down = c < now and now < before
            if up if direction is Direction.LONG else down:
                conf += self.trend_boost
        if bars.volume_ratio[i] > 1.0:
            conf += self.volume_boost
        if abs(float(bars.sma20[i]) - now) > self.spread_min * now:
            conf += self.spread_boost
        return round(min(1.0, conf), 4)

    def _setup(self, bars: _Bars, i: int, direction: Direction) -> TradeSetup | None:
        s = bars.series
        a = float(bars.atr[i])
        entry = float(s.close[i])
        if not math.isfinite(a) or a <= 0:
            return None
        sign = 1.0 if direction is Direction.LONG else -1.0
        pullback = bool(self._masks(bars)[2][i])
        if pullback:
            stop = entry - self.pullback_stop_atr * a
            mults = self.pullback_target_atr
            stop_note = f"close - {self.pullback_stop_atr:g}xATR14 ({a:.2f})"
        else:
            slow = float(bars.sma50[i])
            stop = slow - sign * a
            mults = self.target_atr
            stop_note = f"SMA50 {slow:.2f} {'-' if sign > 0 else '+'} ATR14 ({a:.2f})"
        if stop <= 0 or (entry - stop) * sign <= 0:
            return None  # no meaningful stop on the losing side of the entry
        return self._make(bars, i, direction, stop, stop_note, mults)

    def _reason(self, bars: _Bars, i: int, direction: Direction) -> str:
        golden = self._masks(bars)[0]
        f, sl, t = bars.sma20[i], bars.sma50[i], bars.sma200[i]
        c = bars.series.close[i]
        if direction is Direction.SHORT:
            return (
                f"death cross: SMA20 {f:.2f} < SMA50 {sl:.2f} < SMA200 {t:.2f}, close {c:.2f} below SMA20; "
                f"ATR14 {bars.atr[i]:.2f}"
            )
        if golden[i]:
            return (
                f"golden cross: SMA20 {f:.2f} > SMA50 {sl:.2f} > SMA200 {t:.2f}, close {c:.2f} above SMA20; "
                f"ATR14 {bars.atr[i]:.2f}"
            )
        return (
            f"pullback to SMA20 {f:.2f} in an uptrend (SMA20 > SMA50 {sl:.2f} > SMA200 {t:.2f}): close "
            f"{c:.2f} is {(c - f) / f:+.2%} from SMA20; ATR14 {bars.atr[i]:.2f}"
        )


CODE_STRATEGIES: dict[str, type[IndicatorStrategy]] = {
    cls.id: cls for cls in (RsiMomentum, MacdCrossover, MaCrossover)
}
