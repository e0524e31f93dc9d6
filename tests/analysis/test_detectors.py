"""Detectors on hand-built series: contract examples, threshold edges, warm-up, zero denominators."""

from __future__ import annotations

import sys
from datetime import date

import numpy as np
import pytest
from pydantic import ValidationError

from jax_assistant.analysis import (
    DetectorConfig,
    detect_events,
    earnings_surprise,
    gap_open,
    scan,
    volatility_spike,
    volume_spike,
)
from jax_assistant.domain import session_time, unix_seconds
from jax_assistant.marketdata import BarSeries, EarningsReport


def only(*names: str, **kw: float) -> DetectorConfig:
    return DetectorConfig(enabled=list(names), **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- gap_open


def test_contract_gap_5pct_vs_threshold_3_is_an_event(make_series) -> None:
    s = make_series([100.0, 106.0], open=[100.0, 105.0])
    events = detect_events(s, [], only("gap_open"))
    assert len(events) == 1
    ev = events[0]
    d = s.date_at(1)
    assert ev.type == "gap_open"
    assert ev.id == f"ev_gap_TEST_{unix_seconds(d)}"
    assert ev.time == session_time(d)
    assert ev.symbol == "TEST"
    assert ev.payload == {"gapPct": pytest.approx(5.0), "prevClose": 100.0, "open": 105.0, "direction": "up"}


def test_contract_gap_1pct_is_no_event(make_series) -> None:
    s = make_series([100.0, 101.0], open=[100.0, 101.0])
    assert detect_events(s, [], only("gap_open")) == []


@pytest.mark.parametrize(
    ("open_", "fires"),
    [(103.0, True), (97.0, True), (102.99, False), (97.01, False), (103.01, True)],
)
def test_gap_threshold_edges(make_series, open_: float, fires: bool) -> None:
    s = make_series([100.0, 100.0], open=[100.0, open_])
    assert bool(gap_open(s, DetectorConfig()).mask[1]) is fires


def test_gap_down_direction_and_sign(make_series) -> None:
    s = make_series([50.0, 47.0], open=[50.0, 47.5])
    (ev,) = detect_events(s, [], only("gap_open"))
    assert ev.payload["direction"] == "down"
    assert ev.payload["gapPct"] == pytest.approx(-5.0)


def test_gap_uses_previous_close_not_previous_open(make_series) -> None:
    # yesterday opened at 90 but closed at 100: a 5 % gap from the close, not 16.7 % from the open
    s = make_series([100.0, 100.0], open=[90.0, 105.0])
    det = gap_open(s)
    assert det.metrics["gapPct"][1] == pytest.approx(5.0)
    assert det.metrics["prevClose"][1] == 100.0


def test_gap_first_bar_never_triggers(make_series) -> None:
    s = make_series([100.0], open=[150.0])
    assert not gap_open(s).mask.any()
    assert np.isnan(gap_open(s).metrics["gapPct"][0])


def test_gap_threshold_is_configurable(make_series) -> None:
    s = make_series([100.0, 101.5], open=[100.0, 101.5])
    assert not gap_open(s, DetectorConfig()).mask[1]
    assert gap_open(s, DetectorConfig(gap_threshold_pct=1.5)).mask[1]


# --------------------------------------------------------------------------- volume_spike


def test_volume_spike_edges_and_payload(make_series) -> None:
    vol = [1000.0] * 20 + [2500.0, 2490.0]
    s = make_series([10.0] * 22, volume=vol)
    det = volume_spike(s)
    assert det.mask.tolist() == [False] * 20 + [True, False]
    ev = [e for e in detect_events(s, [], only("volume_spike"), lookback=5)]
    assert [e.session for e in ev] == [s.date_at(20)]
    assert ev[0].id == f"ev_volume_spike_TEST_{unix_seconds(s.date_at(20))}"
    # today's spike is excluded from its own average
    assert ev[0].payload == {"volumeRatio": 2.5, "volume": 2500.0, "avgVolume": 1000.0}
    # ... but it is part of tomorrow's: (19*1000 + 2500) / 20 = 1075
    assert det.metrics["avgVolume"][21] == 1075.0


def test_volume_spike_warmup(make_series) -> None:
    # a 10x day before 20 sessions of history exist never triggers
    vol = [1000.0] * 19 + [10_000.0] + [1000.0] * 5
    s = make_series([10.0] * 25, volume=vol)
    det = volume_spike(s)
    assert not det.mask.any()
    assert np.isnan(det.metrics["volumeRatio"][:20]).all()


def test_volume_spike_zero_volume_history_is_guarded(make_series) -> None:
    vol = [0.0] * 20 + [5000.0]
    s = make_series([10.0] * 21, volume=vol)
    with np.errstate(all="raise"):  # no division by zero, no inf
        det = volume_spike(s)
    assert not det.mask.any()
    assert np.isnan(det.metrics["volumeRatio"][20])


def test_volume_spike_window_is_configurable(make_series) -> None:
    vol = [1000.0] * 5 + [3000.0]
    s = make_series([10.0] * 6, volume=vol)
    assert not volume_spike(s).mask.any()  # default 20-session window: still warming up
    assert volume_spike(s, DetectorConfig(volume_window=5)).mask[5]


# --------------------------------------------------------------------------- volatility_spike


def range_series(make_series, ranges: list[float]):
    """Bars centred on 100 with the given high-low range and no gaps (TR == range)."""
    r = np.array(ranges)
    close = np.full(r.shape[0], 100.0)
    return make_series(close, open=close, high=close + r / 2, low=close - r / 2)


def test_volatility_spike_edges_and_payload(make_series) -> None:
    s = range_series(make_series, [2.0] * 20 + [4.0])
    det = volatility_spike(s)
    assert det.mask.tolist() == [False] * 20 + [True]
    (ev,) = detect_events(s, [], only("volatility_spike"))
    # the ATR before today (2.0) is the yardstick, not one already diluted by today's 4.0
    assert ev.payload == {"trRatio": 2.0, "trueRange": 4.0, "atr": 2.0}
    assert ev.id == f"ev_volatility_spike_TEST_{unix_seconds(s.date_at(20))}"
    assert not volatility_spike(range_series(make_series, [2.0] * 20 + [3.98])).mask.any()


def test_volatility_spike_counts_the_gap_in_the_true_range(make_series) -> None:
    # a quiet-range bar that gapped 5 above yesterday's close: TR = 5.5, not 1
    close = [100.0] * 20 + [105.0]
    s = make_series(close, open=close, high=[100.5] * 20 + [105.5], low=[99.5] * 20 + [104.5])
    det = volatility_spike(s)
    assert det.metrics["trueRange"][20] == pytest.approx(5.5)
    assert det.mask[20]


def test_volatility_spike_warmup(make_series) -> None:
    # ATR14 first exists at index 13, so index 14 is the first session that can trigger
    s = range_series(make_series, [1.0] * 13 + [10.0] + [1.0] * 5)
    assert not volatility_spike(s).mask.any()
    s = range_series(make_series, [1.0] * 14 + [10.0])
    assert volatility_spike(s).mask.tolist() == [False] * 14 + [True]


def test_volatility_spike_zero_atr_is_guarded(make_series) -> None:
    s = range_series(make_series, [0.0] * 20 + [1.0])
    with np.errstate(all="raise"):
        det = volatility_spike(s)
    assert not det.mask.any()


# --------------------------------------------------------------------------- earnings_surprise


def earnings_case(make_series, gaps: dict[int, float], volumes: dict[int, float], n: int = 30):
    """Flat 100 closes; session k opens ``gaps[k]`` % above the previous close; volume 1000 else."""
    close = [100.0] * n
    open_ = [100.0 * (1 + gaps.get(k, 0.0) / 100) for k in range(n)]
    vol = [volumes.get(k, 1000.0) for k in range(n)]
    return make_series(close, open=open_, high=[max(o, 100.0) for o in open_], volume=vol)


def test_earnings_on_the_date_by_gap(make_series) -> None:
    s = earnings_case(make_series, gaps={22: 2.5}, volumes={})
    det = earnings_surprise(s, [s.date_at(22)])
    assert np.flatnonzero(det.mask).tolist() == [22]
    (ev,) = detect_events(s, [s.date_at(22)], only("earnings_surprise"), lookback=10)
    assert ev.id == f"ev_earnings_surprise_TEST_{unix_seconds(s.date_at(22))}"
    assert ev.payload == {
        "earningsDate": s.date_at(22).isoformat(),
        "releaseTime": "unknown",
        "gapPct": pytest.approx(2.5),
        "volumeRatio": 1.0,
        "direction": "up",
    }


def test_one_event_per_report_on_its_reaction_session(make_series) -> None:
    # Strong on both the report date (gap) and the next session (volume): one event either way.
    s = earnings_case(make_series, gaps={22: 3.0}, volumes={23: 2000.0})
    d = s.date_at(22)
    pre = earnings_surprise(s, [EarningsReport(date=d, release_time="pre")])
    assert np.flatnonzero(pre.mask).tolist() == [22]
    post = earnings_surprise(s, [EarningsReport(date=d, release_time="post")])
    assert np.flatnonzero(post.mask).tolist() == [23]  # after the close: the next session trades it
    assert str(post.metrics["earningsDate"][23]) == d.isoformat()
    (ev,) = detect_events(
        s, [EarningsReport(date=d, release_time="post")], only("earnings_surprise"), lookback=10
    )
    assert (ev.payload["earningsDate"], ev.payload["releaseTime"]) == (d.isoformat(), "post")
    # A plain date (release time unknown) is taken as before the open.
    assert np.flatnonzero(earnings_surprise(s, [d]).mask).tolist() == [22]


def test_a_weak_reaction_session_is_no_event_even_if_the_next_one_is_strong(make_series) -> None:
    s = earnings_case(make_series, gaps={24: -4.0}, volumes={})
    d = s.date_at(22)
    assert not earnings_surprise(s, [EarningsReport(date=d, release_time="pre")]).mask.any()
    assert not earnings_surprise(s, [EarningsReport(date=d, release_time="post")]).mask.any()


def test_missing_reaction_bar_uses_the_grace_sessions(make_series) -> None:
    s = earnings_case(make_series, gaps={22: 3.0}, volumes={})
    # A report whose reaction session (bar 21) is missing from the data; bar 22 gaps.
    kept = np.concatenate([s.dates[:21], s.dates[22:]])
    cols = [np.concatenate([a[:21], a[22:]]) for a in (s.open, s.high, s.low, s.close, s.volume)]
    holed = BarSeries("TEST", kept, *cols)
    missing = s.date_at(21)  # the bar that is not there
    report = [EarningsReport(date=missing, release_time="pre")]
    assert not earnings_surprise(holed, report).mask.any()
    grace = earnings_surprise(holed, report, DetectorConfig(earnings_reaction_sessions=1))
    assert [holed.date_at(i) for i in np.flatnonzero(grace.mask)] == [s.date_at(22)]


def test_earnings_thresholds_edges(make_series) -> None:
    s = earnings_case(make_series, gaps={22: 1.99}, volumes={22: 1490.0})
    assert not earnings_surprise(s, [s.date_at(22)]).mask.any()
    s = earnings_case(make_series, gaps={22: -2.0}, volumes={})
    (ev,) = detect_events(s, [s.date_at(22)], only("earnings_surprise"), lookback=10)
    assert ev.payload["direction"] == "down"


def test_earnings_quiet_reaction_or_no_dates_is_no_event(make_series) -> None:
    s = earnings_case(make_series, gaps={22: 5.0}, volumes={22: 4000.0})
    assert not earnings_surprise(s, []).mask.any()
    assert not earnings_surprise(s, [s.date_at(10)]).mask.any()  # a quiet earnings day long before


@pytest.mark.parametrize("release", ["pre", "post", None])
def test_earnings_date_on_a_weekend_reacts_next_session(make_series, release: str | None) -> None:
    s = earnings_case(make_series, gaps={25: 3.0}, volumes={})
    monday = s.date_at(25)
    assert monday.weekday() == 0  # 2024-01-01 + 25 sessions is a Monday
    saturday = date.fromordinal(monday.toordinal() - 2)
    report = [EarningsReport(date=saturday, release_time=release)]  # type: ignore[arg-type]
    assert np.flatnonzero(earnings_surprise(s, report).mask).tolist() == [25]


def test_earnings_warmup_and_zero_volume_history(make_series) -> None:
    s = earnings_case(make_series, gaps={5: 8.0}, volumes={})
    assert not earnings_surprise(s, [s.date_at(5)]).mask.any()  # before a full volume window
    close = [100.0] * 25
    open_ = [*close[:22], 103.0, 100.0, 100.0]
    s = make_series(close, open=open_, volume=[0.0] * 25)
    with np.errstate(all="raise"):
        det = earnings_surprise(s, [s.date_at(22)])
    assert np.flatnonzero(det.mask).tolist() == [22]  # the gap half of the rule still works
    (ev,) = detect_events(s, [s.date_at(22)], only("earnings_surprise"), lookback=5)
    assert ev.payload["volumeRatio"] is None


def test_earnings_direction_without_gap_uses_the_close(make_series) -> None:
    close = [100.0] * 22 + [97.0]
    s = make_series(close, open=[100.0] * 23, volume=[1000.0] * 22 + [3000.0])
    (ev,) = detect_events(s, [s.date_at(22)], only("earnings_surprise"))
    assert ev.payload["gapPct"] == 0.0
    assert ev.payload["direction"] == "down"


# --------------------------------------------------------------------------- detect_events / scan


def busy_series(make_series):
    """Gap + volume spike + volatility spike + earnings on session 25, a gap on 27, quiet otherwise."""
    n = 30
    close = np.full(n, 100.0)
    open_ = close.copy()
    high, low = close + 0.5, close - 0.5
    vol = np.full(n, 1000.0)
    open_[25], close[25], high[25], low[25], vol[25] = 105.0, 106.0, 107.0, 104.5, 5000.0
    close[26:] = 106.0
    open_[26], high[26], low[26] = 106.0, 106.5, 105.5
    open_[27], high[27], low[27], close[27] = 102.0, 106.5, 101.5, 106.0
    open_[28:], high[28:], low[28:] = 106.0, 106.5, 105.5
    return make_series(close, open=open_, high=high, low=low, volume=vol)


def test_detect_events_lookback_sorting_and_ids(make_series) -> None:
    s = busy_series(make_series)
    earnings = [s.date_at(25)]
    assert detect_events(s, earnings) == []  # the last session is quiet
    events = detect_events(s, earnings, lookback=5)
    assert [(e.session, e.type) for e in events] == [
        (s.date_at(25), "earnings_surprise"),
        (s.date_at(25), "gap_open"),
        (s.date_at(25), "volatility_spike"),
        (s.date_at(25), "volume_spike"),
        (s.date_at(27), "gap_open"),
        (s.date_at(27), "volatility_spike"),
    ]
    u = unix_seconds(s.date_at(25))
    assert {e.id for e in events if e.session == s.date_at(25)} == {
        f"ev_gap_TEST_{u}",
        f"ev_volume_spike_TEST_{u}",
        f"ev_volatility_spike_TEST_{u}",
        f"ev_earnings_surprise_TEST_{u}",
    }
    assert len(detect_events(s, earnings, lookback=3)) == 2  # sessions 27..29 only


def test_detect_events_as_of_replays_without_look_ahead(make_series) -> None:
    s = busy_series(make_series)
    at = s.date_at(25)
    events = detect_events(s, [at], as_of=at)
    assert {e.type for e in events} == {"gap_open", "volume_spike", "volatility_spike", "earnings_surprise"}
    # identical to running on a series that physically ends that day
    cut = detect_events(s.upto(at), [at])
    assert [e.model_dump() for e in events] == [e.model_dump() for e in cut]
    assert detect_events(s, [at], as_of=s.date_at(26)) == []
    assert detect_events(s, [at], as_of=date(2000, 1, 1)) == []


def test_enabled_detectors_only(make_series) -> None:
    s = busy_series(make_series)
    cfg = only("gap_open", "volume_spike")
    assert set(scan(s, [s.date_at(25)], cfg)) == {"gap_open", "volume_spike"}
    assert {e.type for e in detect_events(s, [], cfg, lookback=30)} == {"gap_open", "volume_spike"}


def test_scan_matches_detect_events(make_series) -> None:
    s = busy_series(make_series)
    masks = scan(s, [s.date_at(25)])
    events = detect_events(s, [s.date_at(25)], lookback=len(s))
    for name, mask in masks.items():
        assert [s.date_at(i) for i in np.flatnonzero(mask)] == [e.session for e in events if e.type == name]


def test_detector_config_validation() -> None:
    with pytest.raises(ValidationError, match="gap_treshold"):
        DetectorConfig(gap_treshold=3.0)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        DetectorConfig(enabled=["gap_open", "moon_phase"])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        DetectorConfig(volume_window=0)
    assert DetectorConfig(enabled=["gap_open", "gap_open"]).enabled == ["gap_open"]
    assert DetectorConfig().enabled == ["gap_open", "volume_spike", "volatility_spike", "earnings_surprise"]


def test_lookback_must_be_positive(make_series) -> None:
    with pytest.raises(ValueError, match="lookback"):
        detect_events(make_series([1.0, 2.0]), [], lookback=0)


def test_empty_series(make_series) -> None:
    s = make_series([])
    assert detect_events(s, [], lookback=5) == []
    assert all(m.shape == (0,) for m in scan(s, [date(2024, 1, 1)]).values())


def _python_calls_of_scan(make_series, n: int) -> int:
    """Python-level function calls one ``scan`` makes over ``n`` bars (C calls are not counted)."""
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = close * np.exp(rng.normal(0, 0.01, n))
    s = make_series(
        close,
        open=open_,
        high=np.maximum(open_, close) * 1.01,
        low=np.minimum(open_, close) * 0.99,
        volume=rng.integers(1_000_000, 5_000_000, n).astype(float),
    )
    earnings = [s.date_at(i) for i in range(30, n, n // 40)]  # as many dates at every size
    cfg = DetectorConfig()
    scan(s, earnings, cfg)  # warm caches so both sizes are measured alike
    calls = 0

    def count(_frame: object, event: str, _arg: object) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(count)
    try:
        scan(s, earnings, cfg)
    finally:
        sys.setprofile(None)
    return calls


def test_scan_is_vectorised_not_a_per_bar_python_loop(make_series) -> None:
    """Counts Python calls instead of timing (speed lives in bench/scan.py): a per-bar Python loop
    would make the count grow with the number of bars; vectorised code keeps it constant."""
    small = _python_calls_of_scan(make_series, 3_000)
    large = _python_calls_of_scan(make_series, 12_000)
    assert large <= small * 1.1 + 20, f"{small} Python calls for 3 000 bars, {large} for 12 000"


def test_earnings_dates_accept_dates_datetimes_strings_and_arrays(make_series) -> None:
    from datetime import datetime

    s = earnings_case(make_series, gaps={22: 2.5}, volumes={})
    d = s.date_at(22)
    forms = [
        [d, d],  # duplicates are fine
        [datetime(d.year, d.month, d.day, 21, 5)],
        [d.isoformat()],
        np.array([d], dtype="datetime64[D]"),
        (x for x in [d]),
    ]
    for form in forms:
        assert np.flatnonzero(earnings_surprise(s, form).mask).tolist() == [22], form
    # a date after the last bar cannot react yet
    assert not earnings_surprise(s, [date(2030, 1, 1)]).mask.any()
