"""Config-driven (event) strategies: the contract's trade rule applied to detected events.

For each session in the window that has an event of one of the strategy's ``eventTypes``:

- direction from the gap sign (payload ``gapPct``, else payload ``direction``); events without a
  gap (volume spikes) take the sign of the session's close-to-close move;
- entry = the session's open; stop = the session's low (long) / high (short), or 5 % from entry
  when that level is not beyond entry (a gap-and-go bar whose low *is* the open);
- targets = entry +/- m * |entry - stop| for each ``mR`` of ``targetRule``;
- no setup when the first target's R multiple is below ``minRR``.

One setup per (strategy, symbol, session), built from the preferred event of that session
(earnings_surprise, then gap_open, then the config's order); other events that day add confidence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np

from jax_assistant.analysis.detectors import volume_ratio
from jax_assistant.domain import Direction, Event, EventType, TradeSetup, session_time, unix_seconds
from jax_assistant.strategies.config import StrategyConfig

if TYPE_CHECKING:
    from jax_assistant.marketdata.base import BarSeries

FALLBACK_STOP_PCT = 5.0
BASE_CONFIDENCE = 0.55
BOOST = 0.05
VOLUME_AGREEMENT_RATIO = 1.5  # session volume vs its 20-session average that counts as "confirmed"
VOLUME_WINDOW = 20
_PREFERRED = (EventType.EARNINGS_SURPRISE.value, EventType.GAP_OPEN.value)
_RR_TOLERANCE = 1e-9  # R of "2R" recomputed from prices can be 1.9999999999999998


def setup_id(strategy_id: str, symbol: str, session: date) -> str:
    """Contract id ``ts_<strategyId>_<SYMBOL>_<unix seconds of the session>``."""
    return setup_id_at(strategy_id, symbol, unix_seconds(session))


def setup_id_at(strategy_id: str, symbol: str, seconds: int) -> str:
    """:func:`setup_id` from the session's unix seconds."""
    return f"ts_{strategy_id}_{symbol}_{seconds}"


def session_window(series: BarSeries, as_of: date | None, lookback: int) -> tuple[BarSeries, int]:
    """The series cut at ``as_of`` (no look-ahead) and the index of the first session in the window."""
    if lookback < 1:
        raise ValueError(f"lookback must be >= 1, got {lookback}")
    s = series.upto(as_of) if as_of is not None else series
    return s, max(0, len(s) - lookback)


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _sign_direction(x: float | None) -> Direction | None:
    if x is None or x == 0:
        return None
    return Direction.LONG if x > 0 else Direction.SHORT


def event_direction(event: Event, series: BarSeries, i: int) -> Direction | None:
    """Trade direction implied by an event on session ``i`` (None when it has no sign)."""
    p = event.payload
    d = _sign_direction(_finite(p.get("gapPct")))
    if d is None and p.get("direction") in ("up", "down"):
        d = Direction.LONG if p["direction"] == "up" else Direction.SHORT
    if d is None:  # pushed earnings events may only carry the surprise
        d = _sign_direction(_finite(p.get("surprisePct")))
    if d is None and i > 0:
        d = _sign_direction(float(series.close[i] - series.close[i - 1]))
    return d


class ConfigStrategy:
    """A :class:`StrategyConfig` turned into setups (see the module docstring for the rule)."""

    kind = "config"

    def __init__(self, config: StrategyConfig) -> None:
        self.config = config
        self._multiples = config.target_multiples
        order = {t: k for k, t in enumerate(config.event_types)}
        # earnings first, then gaps, then whatever order the config lists
        self._rank = {
            t: (_PREFERRED.index(t) if t in _PREFERRED else len(_PREFERRED), order[t]) for t in order
        }

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def max_risk_percent(self) -> float | None:
        """The strategy's ``maxRiskPercent`` (risk sizing takes the smaller of this and its own cap)."""
        return self.config.max_risk_percent

    def __repr__(self) -> str:
        return f"ConfigStrategy({self.id!r}, eventTypes={self.config.event_types})"

    def generate(
        self,
        series: BarSeries,
        events: Iterable[Event],
        *,
        as_of: date | None = None,
        lookback: int = 1,
    ) -> list[TradeSetup]:
        s, start = session_window(series, as_of, lookback)
        if len(s) == start:
            return []
        window = set(s.dates[start:].astype("datetime64[D]").tolist())
        by_session: dict[date, list[Event]] = {}
        for e in events:
            if e.symbol == s.symbol and e.session in window:
                by_session.setdefault(e.session, []).append(e)
        if not any(e.type in self._rank for evs in by_session.values() for e in evs):
            return []
        ratio = volume_ratio(s.volume, VOLUME_WINDOW)[0]
        index = {d: k for k, d in enumerate(s.dates[start:].astype("datetime64[D]").tolist(), start)}
        setups = []
        for session in sorted(by_session):
            setup = self._setup(s, index[session], by_session[session], ratio)
            if setup is not None:
                setups.append(setup)
        return setups

    def _setup(
        self, s: BarSeries, i: int, day_events: list[Event], ratio: np.ndarray[Any, Any]
    ) -> TradeSetup | None:
        matching = sorted((e for e in day_events if e.type in self._rank), key=lambda e: self._rank[e.type])
        if not matching:
            return None
        event = matching[0]
        direction = event_direction(event, s, i)
        if direction is None:
            return None
        long = direction is Direction.LONG
        entry = float(s.open[i])
        level = float(s.low[i] if long else s.high[i])
        fallback = level >= entry if long else level <= entry
        stop = entry * (1 - FALLBACK_STOP_PCT / 100) if long else entry * (1 + FALLBACK_STOP_PCT / 100)
        if not fallback:
            stop = level
        risk = abs(entry - stop)
        sign = 1.0 if long else -1.0
        targets = [entry + sign * m * risk for m in self._multiples]
        rr = abs(targets[0] - entry) / risk
        if rr < self.config.min_rr - _RR_TOLERANCE:
            return None

        vol_ratio = _finite(event.payload.get("volumeRatio"))
        if vol_ratio is None:
            vol_ratio = _finite(float(ratio[i]))
        close = float(s.close[i])
        confidence = BASE_CONFIDENCE
        if vol_ratio is not None and vol_ratio >= VOLUME_AGREEMENT_RATIO:
            confidence += BOOST  # heavy volume: the move had participation
        if any(e.id != event.id for e in day_events):
            confidence += BOOST  # another detector fired on the same session
        if (close > entry) if long else (close < entry):
            confidence += BOOST  # the session held the move instead of fading it
        confidence = round(min(1.0, confidence), 4)  # 0.7, not 0.7000000000000002

        session = s.date_at(i)
        side = "low" if long else "high"
        stop_note = (
            f"stop {stop:.2f} = {FALLBACK_STOP_PCT:g}% from entry (session {side} {level:.2f} is not "
            f"{'below' if long else 'above'} entry)"
            if fallback
            else f"stop {stop:.2f} = session {side}"
        )
        notes = (
            f"entry {entry:.2f} = session open; {stop_note}; targets {self.config.target_rule} = "
            + ", ".join(f"{t:.2f}" for t in targets)
            + f"; first target {rr:.2f}R (min {self.config.min_rr:g}R); event {event.id}"
        )
        return TradeSetup(
            id=setup_id(self.id, s.symbol, session),
            symbol=s.symbol,
            direction=direction,
            entry=entry,
            stop=stop,
            targets=targets,
            event_id=event.id,
            strategy_id=self.id,
            notes=notes,
            confidence=confidence,
            reason=_reason(event, s, i, vol_ratio),
            time=session_time(session),
        )


def _reason(event: Event, s: BarSeries, i: int, vol_ratio: float | None) -> str:
    """One human sentence with the numbers, e.g. 'gap up 5.2% on earnings, volume 3.1x avg'."""
    volume = f"volume {vol_ratio:.1f}x avg" if vol_ratio is not None else "volume vs average unknown"
    gap = _finite(event.payload.get("gapPct"))
    if event.type == EventType.EARNINGS_SURPRISE:
        when = event.payload.get("earningsDate")
        on = f"on earnings ({when})" if when else "on earnings"
        if gap is not None:
            return f"gap {'up' if gap > 0 else 'down'} {abs(gap):.1f}% {on}, {volume}"
        return f"earnings reaction {on}, {volume}"
    if gap is not None:
        return f"gap {'up' if gap > 0 else 'down'} {abs(gap):.1f}%, {volume}"
    if i > 0 and s.close[i - 1] > 0:
        move = (float(s.close[i]) / float(s.close[i - 1]) - 1) * 100
        label = event.type.replace("_", " ")
        return f"{label}: {volume}, close {'up' if move >= 0 else 'down'} {abs(move):.1f}% vs previous close"
    return f"{event.type.replace('_', ' ')}: {volume}"
