"""Event detectors: gap open, volume spike, volatility spike and earnings surprise.

Each detector is one vectorised pass over a whole ``BarSeries`` and returns a :class:`Detection`
(a boolean trigger mask plus the metric arrays behind it). :func:`detect_events` turns the triggers
of the last ``lookback`` sessions into contract ``Event`` objects; :func:`scan` returns only the
masks and is the hot path for backtests and benchmarks.

All detectors are causal: the value at session ``t`` uses bars ``<= t`` only. Sessions inside a
detector's warm-up (no previous close, not enough volume history, no ATR yet) never trigger, and a
zero denominator yields NaN, which never triggers either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from jax_assistant.analysis.indicators import atr, rolling_sum, shift, true_range
from jax_assistant.domain import Event, EventType, session_time, unix_seconds
from jax_assistant.domain.sessions import exchange_calendar, reaction_sessions

if TYPE_CHECKING:
    from jax_assistant.marketdata.base import BarSeries

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

DetectorName = Literal["gap_open", "volume_spike", "volatility_spike", "earnings_surprise"]
ALL_DETECTORS: tuple[DetectorName, ...] = (
    "gap_open",
    "volume_spike",
    "volatility_spike",
    "earnings_surprise",
)

# Thresholds are compared with a tiny tolerance so that a move that is exactly the threshold in
# decimal (open 103 vs close 100 = 3 %) is not lost to binary rounding (2.9999999999999996).
THRESHOLD_TOLERANCE = 1e-9


class DetectorConfig(BaseModel):
    """Thresholds of the four detectors (percent values are percent, ratios are plain multiples)."""

    model_config = ConfigDict(extra="forbid")

    gap_threshold_pct: float = Field(default=3.0, gt=0, description="|gapPct| that triggers gap_open")
    volume_window: int = Field(default=20, ge=1, description="sessions averaged, excluding today")
    volume_spike_ratio: float = Field(default=2.5, gt=0, description="volume / average that triggers")
    atr_period: int = Field(default=14, ge=1)
    volatility_spike_ratio: float = Field(default=2.0, gt=0, description="true range / previous ATR")
    earnings_reaction_sessions: int = Field(
        default=0,
        ge=0,
        description="when the data has no bar on a report's reaction session, how many sessions later "
        "a bar may still stand in for it (one event per report either way)",
    )
    earnings_gap_threshold_pct: float = Field(default=2.0, gt=0)
    earnings_volume_ratio: float = Field(default=1.5, gt=0)
    enabled: list[DetectorName] = Field(default_factory=lambda: list(ALL_DETECTORS))

    @field_validator("enabled")
    @classmethod
    def _dedupe(cls, v: list[DetectorName]) -> list[DetectorName]:
        return list(dict.fromkeys(v))


@dataclass(frozen=True)
class Detection:
    """A detector's output over a whole series: ``mask[t]`` is True when session ``t`` triggers."""

    name: DetectorName
    mask: BoolArray
    metrics: dict[str, npt.NDArray[Any]]


# --------------------------------------------------------------------------- shared metrics


def gap_pct(open_: FloatArray, close: FloatArray) -> FloatArray:
    """``(open_t - close_{t-1}) / close_{t-1} * 100``; NaN on the first bar and after a zero close."""
    n = open_.shape[0]
    out = np.full(n, np.nan)
    if n > 1:
        prev = close[:-1]
        np.divide(open_[1:] - prev, prev, out=out[1:], where=prev > 0)
        out[1:] *= 100.0
    return out


def volume_ratio(volume: FloatArray, window: int) -> tuple[FloatArray, FloatArray]:
    """``volume_t / mean(volume_{t-window} .. volume_{t-1})`` and that average.

    Today's volume is excluded from its own baseline (a spike would otherwise dilute itself). The
    first ``window`` sessions have no full history (NaN); an all-zero history gives NaN, not inf.
    """
    avg = shift(rolling_sum(volume, window), 1) / window
    ratio = np.full(volume.shape[0], np.nan)
    np.divide(volume, avg, out=ratio, where=avg > 0)
    return ratio, avg


def _at_least(x: FloatArray, threshold: float) -> BoolArray:
    # NaN compares False, so warm-up and guarded-denominator sessions never trigger.
    return np.greater_equal(x, threshold - THRESHOLD_TOLERANCE)


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


class EarningsRelease(Protocol):
    """An earnings report as the detector needs it (``marketdata.EarningsReport`` is one)."""

    @property
    def date(self) -> date: ...

    @property
    def release_time(self) -> str | None: ...


# Report dates (release time unknown), reports with a release time, or a datetime64 array of dates.
EarningsInput = Iterable[date | EarningsRelease] | npt.NDArray[Any]


def _earnings_arrays(earnings: EarningsInput) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Sorted report dates (``datetime64[D]``, one per date) and each one's release time.

    Release times are ``"pre"``, ``"post"`` or ``"unknown"`` (plain dates). Dates are converted via
    ordinals (10x faster than numpy's date parsing).
    """
    if isinstance(earnings, np.ndarray):
        arr = earnings.astype("datetime64[D]")
        times = np.full(arr.shape[0], "unknown", dtype=object)
    else:
        days: list[date | str] = []
        when: list[str] = []
        for x in earnings:
            if isinstance(x, date | str):
                days.append(x)
                when.append("unknown")
            else:
                days.append(x.date)
                when.append(x.release_time if x.release_time in ("pre", "post") else "unknown")
        if all(isinstance(d, date) for d in days):
            ords = (d.toordinal() - _EPOCH_ORDINAL for d in days if isinstance(d, date))
            arr = np.fromiter(ords, np.int64, len(days)).astype("datetime64[D]")
        else:  # ISO strings and the like
            arr = np.asarray(days).astype("datetime64[D]")
        times = np.asarray(when, dtype=object)
    arr, first = np.unique(arr, return_index=True)  # a repeated date keeps its first release time
    return arr, times[first]


def _reaction_bars(
    dates: npt.NDArray[Any], earnings: EarningsInput, grace_sessions: int
) -> tuple[BoolArray, npt.NDArray[Any], npt.NDArray[Any]]:
    """The one session that reacts to each report, as a mask, with the report date and release time.

    The reaction session is the report date (``pre``, and unknown: the same rule; the next session
    when the date is not one) or the next session (``post``), on the exchange calendar. When the
    data has no bar on that session, the first bar at most ``grace_sessions`` later stands in;
    otherwise the report has no reaction bar. Two reports landing on one bar: the later one wins.
    """
    n = dates.shape[0]
    which = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    release = np.full(n, "unknown", dtype=object)
    on = np.zeros(n, dtype=np.bool_)
    report_dates, times = _earnings_arrays(earnings)
    if n == 0 or report_dates.size == 0:
        return on, which, release
    react = reaction_sessions(report_dates, times == "post")
    latest = np.busday_offset(react, grace_sessions, busdaycal=exchange_calendar())
    idx = np.searchsorted(dates, react, side="left")
    ok = idx < n
    ok[ok] = dates[idx[ok]] <= latest[ok]
    hit = idx[ok]
    on[hit] = True
    # Reports are in ascending order, so for a repeated index the last (latest) report is kept.
    which[hit] = report_dates[ok]
    release[hit] = times[ok]
    return on, which, release


# --------------------------------------------------------------------------- detectors


def gap_open(series: BarSeries, config: DetectorConfig | None = None) -> Detection:
    """Contract gap: triggers when ``|gapPct| >= gap_threshold_pct``."""
    cfg = config or DetectorConfig()
    gap = gap_pct(series.open, series.close)
    return Detection(
        "gap_open",
        _at_least(np.abs(gap), cfg.gap_threshold_pct),
        {"gapPct": gap, "prevClose": shift(series.close, 1), "open": series.open},
    )


def volume_spike(series: BarSeries, config: DetectorConfig | None = None) -> Detection:
    """Triggers when today's volume is ``volume_spike_ratio`` times the previous-window average."""
    cfg = config or DetectorConfig()
    ratio, avg = volume_ratio(series.volume, cfg.volume_window)
    return Detection(
        "volume_spike",
        _at_least(ratio, cfg.volume_spike_ratio),
        {"volumeRatio": ratio, "volume": series.volume, "avgVolume": avg},
    )


def volatility_spike(series: BarSeries, config: DetectorConfig | None = None) -> Detection:
    """Triggers when today's true range is ``volatility_spike_ratio`` times yesterday's ATR.

    The ATR *before* today is the baseline so today's range does not dilute its own yardstick; the
    first session with a baseline is therefore ``atr_period``.
    """
    cfg = config or DetectorConfig()
    tr = true_range(series.high, series.low, series.close)
    prev_atr = shift(atr(series.high, series.low, series.close, cfg.atr_period), 1)
    ratio = np.full(tr.shape[0], np.nan)
    np.divide(tr, prev_atr, out=ratio, where=prev_atr > 0)
    return Detection(
        "volatility_spike",
        _at_least(ratio, cfg.volatility_spike_ratio),
        {"trRatio": ratio, "trueRange": tr, "atr": prev_atr},
    )


def earnings_surprise(
    series: BarSeries,
    earnings: EarningsInput,
    config: DetectorConfig | None = None,
) -> Detection:
    """At most one event per earnings report: on its reaction session, when the reaction is strong
    (``|gap| >= earnings_gap_threshold_pct`` or ``volume ratio >= earnings_volume_ratio``).

    ``earnings`` are report dates or reports with a ``release_time``: ``pre`` (and unknown) react on
    the report date, ``post`` on the next exchange session. Warm-up is the longer of the two metrics'
    (a previous close and a full volume window); after it, an undefined volume ratio (all-zero
    history) only disables that half of the rule.
    """
    cfg = config or DetectorConfig()
    return _earnings_surprise(
        series,
        earnings,
        cfg,
        gap_pct(series.open, series.close),
        volume_ratio(series.volume, cfg.volume_window)[0],
    )


def _earnings_surprise(
    series: BarSeries,
    earnings: EarningsInput,
    cfg: DetectorConfig,
    gap: FloatArray,
    ratio: FloatArray,
) -> Detection:
    on, which, release = _reaction_bars(series.dates, earnings, cfg.earnings_reaction_sessions)
    strong = _at_least(np.abs(gap), cfg.earnings_gap_threshold_pct) | _at_least(
        ratio, cfg.earnings_volume_ratio
    )
    mask = on & strong
    mask[: max(1, cfg.volume_window)] = False
    return Detection(
        "earnings_surprise",
        mask,
        {
            "gapPct": gap,
            "volumeRatio": ratio,
            "earningsDate": which,
            "releaseTime": release,
            "close": series.close,
        },
    )


def run_detectors(
    series: BarSeries,
    earnings_dates: EarningsInput = (),
    config: DetectorConfig | None = None,
) -> dict[DetectorName, Detection]:
    """Every enabled detector over the whole series (shared metrics computed once)."""
    cfg = config or DetectorConfig()
    out: dict[DetectorName, Detection] = {}
    gap: FloatArray | None = None
    ratio: FloatArray | None = None
    for name in cfg.enabled:
        if name == "gap_open":
            out[name] = gap_open(series, cfg)
            gap = out[name].metrics["gapPct"]
        elif name == "volume_spike":
            out[name] = volume_spike(series, cfg)
            ratio = out[name].metrics["volumeRatio"]
        elif name == "volatility_spike":
            out[name] = volatility_spike(series, cfg)
        else:
            out[name] = _earnings_surprise(
                series,
                earnings_dates,
                cfg,
                gap_pct(series.open, series.close) if gap is None else gap,
                volume_ratio(series.volume, cfg.volume_window)[0] if ratio is None else ratio,
            )
    return out


def scan(
    series: BarSeries,
    earnings_dates: EarningsInput = (),
    config: DetectorConfig | None = None,
) -> dict[str, BoolArray]:
    """Trigger masks of every enabled detector over the whole series (no Event objects built)."""
    return {name: d.mask for name, d in run_detectors(series, earnings_dates, config).items()}


# --------------------------------------------------------------------------- events


def _num(x: Any) -> float | None:
    v = float(x)
    return v if np.isfinite(v) else None


def _direction(gap: float, close: float, prev_close: float) -> str:
    """Sign of the gap; for an unchanged open, the sign of the session's close-to-close move."""
    move = gap if gap != 0 else close - prev_close
    if not np.isfinite(move) or move == 0:
        return "flat"
    return "up" if move > 0 else "down"


def _payload(det: Detection, i: int) -> dict[str, Any]:
    m = det.metrics
    if det.name == "gap_open":
        gap = float(m["gapPct"][i])
        return {
            "gapPct": gap,
            "prevClose": float(m["prevClose"][i]),
            "open": float(m["open"][i]),
            "direction": "down" if gap < 0 else "up",  # contract: down iff gapPct < 0
        }
    if det.name == "volume_spike":
        return {
            "volumeRatio": float(m["volumeRatio"][i]),
            "volume": float(m["volume"][i]),
            "avgVolume": float(m["avgVolume"][i]),
        }
    if det.name == "volatility_spike":
        return {
            "trRatio": float(m["trRatio"][i]),
            "trueRange": float(m["trueRange"][i]),
            "atr": float(m["atr"][i]),
        }
    gap = float(m["gapPct"][i])
    close = m["close"]
    return {
        "earningsDate": str(m["earningsDate"][i]),
        "releaseTime": str(m["releaseTime"][i]),
        "gapPct": gap,
        "volumeRatio": _num(m["volumeRatio"][i]),
        "direction": _direction(gap, float(close[i]), float(close[i - 1])),
    }


def event_id(event_type: str, symbol: str, session: date) -> str:
    """``ev_gap_<SYMBOL>_<unix>`` for gaps (the contract's id), ``ev_<type>_<SYMBOL>_<unix>`` otherwise."""
    tag = "gap" if event_type == EventType.GAP_OPEN else event_type
    return f"ev_{tag}_{symbol}_{unix_seconds(session)}"


def detect_events(
    series: BarSeries,
    earnings_dates: EarningsInput = (),
    config: DetectorConfig | None = None,
    *,
    lookback: int = 1,
    as_of: date | None = None,
) -> list[Event]:
    """Events of the last ``lookback`` sessions ending at ``as_of`` (default: the last bar).

    Bars after ``as_of`` are dropped first, so replaying a past date sees no future data. Sorted by
    time, then type.
    """
    if lookback < 1:
        raise ValueError(f"lookback must be >= 1, got {lookback}")
    s = series.upto(as_of) if as_of is not None else series
    n = len(s)
    if n == 0:
        return []
    start = max(0, n - lookback)
    events: list[Event] = []
    for name, det in run_detectors(s, earnings_dates, config).items():
        for i in (np.flatnonzero(det.mask[start:]) + start).tolist():
            session = s.date_at(i)
            events.append(
                Event(
                    id=event_id(name, s.symbol, session),
                    symbol=s.symbol,
                    type=name,
                    time=session_time(session),
                    payload=_payload(det, i),
                )
            )
    events.sort(key=lambda e: (e.time, e.type))
    return events
