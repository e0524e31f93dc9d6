"""ConfigStrategy: the contract's trade rule (entry/stop/targets) and its worked examples."""

from __future__ import annotations

from typing import Any

import pytest

from jax_assistant.analysis import DetectorConfig, detect_events
from jax_assistant.domain import Direction, Event, session_time, unix_seconds
from jax_assistant.strategies import (
    ConfigStrategy,
    StrategyConfig,
    default_strategies_dir,
    load_strategy_configs,
)

BASE: dict[str, Any] = {
    "name": "t",
    "entryRule": "open",
    "stopRule": "low/high",
}


def defaults() -> dict[str, StrategyConfig]:
    return {c.id: c for c in load_strategy_configs(default_strategies_dir())}


def earnings_gap(**over: Any) -> ConfigStrategy:
    return ConfigStrategy(defaults()["earnings_gap_v1"].model_copy(update=over))


def two_bars(make_series, prev_close: float, o: float, h: float, lo: float, c: float, *, history: int = 0):
    """``history`` quiet sessions at ``prev_close``, then the event session."""
    n = history + 1
    closes = [prev_close] * n + [c]
    return make_series(
        closes,
        open=[prev_close] * n + [o],
        high=[prev_close] * n + [h],
        low=[prev_close] * n + [lo],
        volume=[1000.0] * n + [1000.0],
    )


def event(series, i: int, type_: str, **payload: Any) -> Event:
    d = series.date_at(i)
    tag = "gap" if type_ == "gap_open" else type_
    return Event(
        id=f"ev_{tag}_{series.symbol}_{unix_seconds(d)}",
        symbol=series.symbol,
        type=type_,
        time=session_time(d),
        payload=payload,
    )


def test_contract_long_example(make_series) -> None:
    """Entry 100, session low 95, targetRule "2R,3R" -> stop 95, targets 110 and 115."""
    s = two_bars(make_series, 95.0, 100.0, 106.0, 95.0, 104.0)
    ev = event(s, 1, "gap_open", gapPct=5.26)
    (setup,) = earnings_gap().generate(s, [ev])
    assert setup.direction is Direction.LONG
    assert (setup.entry, setup.stop) == (100.0, 95.0)
    assert setup.targets == [110.0, 115.0]
    assert setup.event_id == ev.id
    assert setup.strategy_id == "earnings_gap_v1"
    assert setup.id == f"ts_earnings_gap_v1_TEST_{unix_seconds(s.date_at(1))}"
    assert setup.time == session_time(s.date_at(1))
    assert setup.to_contract()["eventId"] == ev.id


def test_contract_short_mirror(make_series) -> None:
    s = two_bars(make_series, 105.0, 100.0, 105.0, 94.0, 95.0)
    ev = event(s, 1, "gap_open", gapPct=-4.76)
    (setup,) = earnings_gap().generate(s, [ev])
    assert setup.direction is Direction.SHORT
    assert (setup.entry, setup.stop) == (100.0, 105.0)
    assert setup.targets == [90.0, 85.0]


def test_fallback_stop_5pct_long_when_low_is_the_open(make_series) -> None:
    s = two_bars(make_series, 95.0, 100.0, 108.0, 100.0, 107.0)  # gap and go: low == open
    (setup,) = earnings_gap().generate(s, [event(s, 1, "gap_open", gapPct=5.26)])
    assert setup.stop == pytest.approx(95.0)
    assert setup.targets == pytest.approx([110.0, 115.0])
    assert "5% from entry" in setup.notes


def test_fallback_stop_5pct_short_when_high_is_the_open(make_series) -> None:
    s = two_bars(make_series, 105.0, 100.0, 100.0, 92.0, 93.0)
    (setup,) = earnings_gap().generate(s, [event(s, 1, "gap_open", gapPct=-4.76)])
    assert setup.direction is Direction.SHORT
    assert setup.stop == pytest.approx(105.0)
    assert setup.targets == pytest.approx([90.0, 85.0])


def test_min_rr_skips_and_boundary_passes(make_series) -> None:
    s = two_bars(make_series, 95.0, 100.0, 106.0, 95.0, 104.0)
    ev = event(s, 1, "gap_open", gapPct=5.26)
    assert earnings_gap(min_rr=2.5).generate(s, [ev]) == []
    # an awkward risk (100 - 97.3) must still count the 2R target as 2R exactly
    s2 = two_bars(make_series, 95.0, 100.0, 106.0, 97.3, 104.0)
    assert len(earnings_gap(min_rr=2.0).generate(s2, [event(s2, 1, "gap_open", gapPct=5.26)])) == 1


def test_one_setup_per_session_prefers_earnings(make_series) -> None:
    s = two_bars(make_series, 95.0, 100.0, 106.0, 95.0, 104.0)
    gap = event(s, 1, "gap_open", gapPct=5.26)
    earn = event(s, 1, "earnings_surprise", gapPct=5.26, direction="up", earningsDate="2024-01-01")
    for events in ([gap, earn], [earn, gap]):
        (setup,) = earnings_gap().generate(s, events)
        assert setup.event_id == earn.id
        assert "on earnings (2024-01-01)" in setup.reason


def test_volume_spike_takes_direction_from_the_close(make_series) -> None:
    cfg = defaults()["volatility_spike_v1"]
    s = two_bars(make_series, 100.0, 100.5, 101.0, 96.0, 97.0)
    (setup,) = ConfigStrategy(cfg).generate(s, [event(s, 1, "volume_spike", volumeRatio=3.0)])
    assert setup.direction is Direction.SHORT
    assert (setup.entry, setup.stop) == (100.5, 101.0)
    assert setup.targets == pytest.approx([100.5 - 0.75, 100.5 - 1.0])
    assert setup.reason == "volume spike: volume 3.0x avg, close down 3.0% vs previous close"
    up = two_bars(make_series, 100.0, 99.5, 104.0, 99.0, 103.0)
    (setup,) = ConfigStrategy(cfg).generate(up, [event(up, 1, "volume_spike", volumeRatio=3.0)])
    assert setup.direction is Direction.LONG and setup.stop == 99.0


def test_no_direction_no_setup(make_series) -> None:
    cfg = defaults()["volatility_spike_v1"]
    s = two_bars(make_series, 100.0, 100.0, 101.0, 99.0, 100.0)  # closed unchanged
    assert ConfigStrategy(cfg).generate(s, [event(s, 1, "volume_spike", volumeRatio=3.0)]) == []


def test_event_types_symbol_and_window_filters(make_series) -> None:
    s = two_bars(make_series, 95.0, 100.0, 106.0, 95.0, 104.0, history=3)
    strat = earnings_gap()
    assert strat.generate(s, [event(s, 4, "volume_spike", volumeRatio=3.0)]) == []  # not its type
    other = event(s, 4, "gap_open", gapPct=5.26).model_copy(update={"symbol": "OTHER"})
    assert strat.generate(s, [other]) == []
    old = event(s, 2, "gap_open", gapPct=-1.0)
    assert strat.generate(s, [old]) == []  # outside lookback=1
    (setup,) = strat.generate(s, [old], lookback=3)
    assert setup.time == session_time(s.date_at(2))
    # as_of replays an earlier session: later bars and events are invisible
    new = event(s, 4, "gap_open", gapPct=5.26)
    assert strat.generate(s, [old, new], as_of=s.date_at(3)) == []
    assert [x.event_id for x in strat.generate(s, [old, new], as_of=s.date_at(2))] == [old.id]


def confident_case(make_series, *, volume: float, close: float):
    """21 quiet sessions at 95 then a 5.26 % gap up to 100 (low 95)."""
    s = two_bars(make_series, 95.0, 100.0, 106.0, 95.0, close, history=20)
    s.volume[-1] = volume
    return s


@pytest.mark.parametrize(
    ("volume", "close", "with_earnings", "expected"),
    [
        (1000.0, 99.0, False, 0.55),  # faded below the open, normal volume, lone event
        (1500.0, 99.0, False, 0.60),  # + volume 1.5x
        (1000.0, 104.0, False, 0.60),  # + held the move
        (3000.0, 104.0, True, 0.70),  # + another detector the same day
    ],
)
def test_confidence_boosts(
    make_series, volume: float, close: float, with_earnings: bool, expected: float
) -> None:
    s = confident_case(make_series, volume=volume, close=close)
    events = [event(s, 21, "gap_open", gapPct=5.26)]
    if with_earnings:
        events.append(event(s, 21, "earnings_surprise", gapPct=5.26, direction="up"))
    (setup,) = earnings_gap().generate(s, events)
    assert setup.confidence == pytest.approx(expected)


def test_reason_states_the_numbers(make_series) -> None:
    s = confident_case(make_series, volume=3100.0, close=104.0)
    events = detect_events(s, [s.date_at(21)], DetectorConfig())
    assert {e.type for e in events} >= {"gap_open", "earnings_surprise"}
    (setup,) = earnings_gap().generate(s, events)
    assert setup.reason == f"gap up 5.3% on earnings ({s.date_at(21).isoformat()}), volume 3.1x avg"
    assert "entry 100.00 = session open" in setup.notes
    assert "targets 2R,3R = 110.00, 115.00" in setup.notes


def test_exposes_max_risk_percent() -> None:
    assert earnings_gap().max_risk_percent == 3.0
    assert ConfigStrategy(defaults()["volatility_spike_v1"]).max_risk_percent == 2.0
    assert earnings_gap().id == "earnings_gap_v1"


def test_direction_from_payload_direction_or_surprise(make_series) -> None:
    s = two_bars(make_series, 105.0, 105.0, 106.0, 95.0, 96.0)  # no gap, closed down
    # payload direction wins over the session move when there is no gap figure
    (setup,) = earnings_gap().generate(s, [event(s, 1, "earnings_surprise", direction="up")])
    assert setup.direction is Direction.LONG
    (setup,) = earnings_gap().generate(s, [event(s, 1, "earnings_surprise", surprisePct=18.0)])
    assert setup.direction is Direction.LONG
    (setup,) = earnings_gap().generate(s, [event(s, 1, "earnings_surprise")])
    assert setup.direction is Direction.SHORT


def test_custom_config_strategy_other_event_types(make_series) -> None:
    cfg = StrategyConfig.model_validate(
        {
            **BASE,
            "id": "vol_v1",
            "eventTypes": ["volatility_spike"],
            "minRR": 1,
            "maxRiskPercent": 1,
            "targetRule": "1R",
        }
    )
    s = two_bars(make_series, 100.0, 100.0, 110.0, 99.0, 108.0)
    (setup,) = ConfigStrategy(cfg).generate(s, [event(s, 1, "volatility_spike", trRatio=3.0)])
    assert setup.direction is Direction.LONG
    assert (setup.stop, setup.targets) == (99.0, [101.0])
