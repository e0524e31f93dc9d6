"""StrategyRegistry: lookup, selection, weights and generation across both kinds of strategy."""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from jax_assistant.analysis import DetectorConfig, detect_events
from jax_assistant.domain import Direction
from jax_assistant.strategies import (
    ConfigStrategy,
    RsiMomentum,
    Strategy,
    StrategyRegistry,
    UnknownStrategyError,
    default_strategies_dir,
)

ALL_IDS = {
    "earnings_gap_v1",
    "volatility_spike_v1",
    "rsi_momentum_v1",
    "macd_crossover_v1",
    "ma_crossover_v1",
}


def gap_day_series(make_series):
    """40 sessions falling by 1 (RSI near 0), then up-days of +2; session 42 also gaps up 5 % on 3x volume.

    Session 42 is where RSI14 crosses up through 30 (see test_code), so both an event strategy and a
    code strategy fire on the same session.
    """
    closes = [140.0 - k for k in range(40)] + [103.0, 105.0, 0.0]
    closes[42] = closes[41] * 1.05 + 2.0
    opens = list(closes)
    opens[42] = closes[41] * 1.05
    s = make_series(
        closes,
        open=opens,
        high=[max(o, c) + 0.5 for o, c in zip(opens, closes, strict=True)],
        low=[min(o, c) - 0.5 for o, c in zip(opens, closes, strict=True)],
        volume=[1000.0] * 42 + [3000.0],
    )
    return s


def test_default_registry_has_all_strategies() -> None:
    reg = StrategyRegistry.default()
    assert set(reg.ids) == ALL_IDS
    assert len(reg) == 5 and all(isinstance(s, Strategy) for s in reg)
    assert reg.weights == dict.fromkeys(ALL_IDS, 1.0)
    assert isinstance(reg.get("earnings_gap_v1"), ConfigStrategy)
    assert isinstance(reg.get("rsi_momentum_v1"), RsiMomentum)
    assert reg.max_risk_percent("earnings_gap_v1") == 3.0
    assert reg.max_risk_percent("volatility_spike_v1") == 2.0
    assert reg.max_risk_percent("macd_crossover_v1") is None
    assert "earnings_gap_v1" in reg and "nope" not in reg


def test_unknown_id_is_a_clear_key_error() -> None:
    reg = StrategyRegistry.default()
    with pytest.raises(KeyError) as err:
        reg.get("earnings_gap_v2")
    msg = str(err.value)
    assert msg.startswith("unknown strategy 'earnings_gap_v2'")
    assert "earnings_gap_v1" in msg  # lists what is known
    assert isinstance(err.value, UnknownStrategyError)


def test_enabled_selection() -> None:
    reg = StrategyRegistry.default(enabled=["rsi_momentum_v1", "earnings_gap_v1"])
    assert reg.ids == ["rsi_momentum_v1", "earnings_gap_v1"]
    with pytest.raises(KeyError, match="unknown strategy 'typo_v1'"):
        StrategyRegistry.default(enabled=["typo_v1"])


def test_custom_folder_and_disabled_configs(tmp_path: Path) -> None:
    src = json.loads((default_strategies_dir() / "earnings_gap_v1.json").read_text())
    (tmp_path / "a.json").write_text(json.dumps({**src, "id": "a_v1"}))
    (tmp_path / "b.json").write_text(json.dumps({**src, "id": "b_v1", "enabled": False}))
    reg = StrategyRegistry.default(tmp_path)
    assert "a_v1" in reg and "b_v1" not in reg and "earnings_gap_v1" not in reg
    assert "rsi_momentum_v1" in reg  # code strategies are always available
    assert StrategyRegistry.default(tmp_path, enabled=["b_v1"]).ids == ["b_v1"]  # naming it wins


def test_config_id_clashing_with_code_strategy(tmp_path: Path) -> None:
    src = json.loads((default_strategies_dir() / "earnings_gap_v1.json").read_text())
    (tmp_path / "x.json").write_text(json.dumps({**src, "id": "rsi_momentum_v1"}))
    with pytest.raises(ValueError, match="clashes"):
        StrategyRegistry.default(tmp_path)


def test_duplicate_and_unknown_weight() -> None:
    reg = StrategyRegistry([RsiMomentum()])
    with pytest.raises(ValueError, match="already registered"):
        reg.add(RsiMomentum())
    with pytest.raises(KeyError):
        StrategyRegistry([RsiMomentum()], weights={"nope": 2.0})


def test_generate_across_strategies(make_series) -> None:
    s = gap_day_series(make_series)
    events = detect_events(s, [s.date_at(42)], DetectorConfig())
    assert {e.type for e in events} >= {"gap_open", "earnings_surprise", "volume_spike"}
    reg = StrategyRegistry.default()
    setups = reg.generate(s, events, as_of=s.date_at(42))
    by = {x.strategy_id: x for x in setups}
    assert set(by) == {"earnings_gap_v1", "volatility_spike_v1", "rsi_momentum_v1"}
    assert len(setups) == 3  # one per strategy for the session
    eg = by["earnings_gap_v1"]
    assert eg.event_id == next(e.id for e in events if e.type == "earnings_surprise")
    assert eg.direction is Direction.LONG and eg.entry == s.open[42]
    assert eg.targets == pytest.approx([eg.entry + m * (eg.entry - eg.stop) for m in (2, 3)])
    assert by["volatility_spike_v1"].event_id == next(e.id for e in events if e.type == "volume_spike")
    assert by["rsi_momentum_v1"].event_id is None and by["rsi_momentum_v1"].entry == s.close[42]
    assert [x.strategy_id for x in setups] == sorted(by)  # same session: sorted by strategy id
    # the day before: nothing (no events and no RSI cross yet)
    assert reg.generate(s, events, as_of=s.date_at(41)) == []


def test_weights_scale_and_cap_confidence(make_series) -> None:
    s = gap_day_series(make_series)
    events = detect_events(s, [s.date_at(42)], DetectorConfig())
    reg = StrategyRegistry.default(enabled=["earnings_gap_v1", "rsi_momentum_v1"])
    base = {x.strategy_id: x.confidence for x in reg.generate(s, events, as_of=s.date_at(42))}
    reg.weights["earnings_gap_v1"] = 0.5
    reg.weights["rsi_momentum_v1"] = 3.0
    weighted = {x.strategy_id: x.confidence for x in reg.generate(s, events, as_of=s.date_at(42))}
    assert weighted["earnings_gap_v1"] == pytest.approx(base["earnings_gap_v1"] * 0.5)
    assert weighted["rsi_momentum_v1"] == 1.0  # capped
    reg.weights["earnings_gap_v1"] = -1.0
    assert min(x.confidence for x in reg.generate(s, events, as_of=s.date_at(42))) == 0.0


def test_lookback_spans_sessions(make_series) -> None:
    s = gap_day_series(make_series)
    events = detect_events(s, [s.date_at(42)], DetectorConfig(), lookback=len(s))
    wide = StrategyRegistry.default().generate(s, events, lookback=len(s))
    # the MACD line turns up through its signal on the first up-day; everything else fires on 42
    assert [(x.time.date() if x.time else None, x.strategy_id) for x in wide] == [
        (s.date_at(40), "macd_crossover_v1"),
        (s.date_at(42), "earnings_gap_v1"),
        (s.date_at(42), "rsi_momentum_v1"),
        (s.date_at(42), "volatility_spike_v1"),
    ]
    assert StrategyRegistry.default().generate(s, events, lookback=2) == wide[1:]


@pytest.mark.realdata
def test_real_aapl_earnings_gap_setup(real_bars, real_reports) -> None:
    """AAPL 2017-11-03: gapped up ~3.5 % after the 2017-11-02 report -> an earnings_gap_v1 long."""
    s = real_bars["AAPL"]
    day = date(2017, 11, 3)
    i = int(np.searchsorted(s.dates, np.datetime64(day, "D")))
    events = detect_events(s, real_reports["AAPL"], as_of=day)  # 11-02 was after the close
    setups = StrategyRegistry.default().generate(s, events, as_of=day)
    (eg,) = [x for x in setups if x.strategy_id == "earnings_gap_v1"]
    assert eg.direction is Direction.LONG
    assert eg.entry == s.open[i] == 173.38
    stop = s.low[i] if s.low[i] < s.open[i] else s.open[i] * 0.95
    assert eg.stop == pytest.approx(stop)
    r = eg.entry - eg.stop
    assert eg.targets == pytest.approx([eg.entry + 2 * r, eg.entry + 3 * r])
    assert eg.reason.startswith("gap up 3.5% on earnings (2017-11-02)")
    assert 0.55 <= eg.confidence <= 1.0


def ref_rsi(close: list[float], n: int = 14) -> list[float]:
    out = [math.nan] * len(close)
    gains = [max(close[t] - close[t - 1], 0.0) for t in range(1, len(close))]
    losses = [max(close[t - 1] - close[t], 0.0) for t in range(1, len(close))]
    ag, al = sum(gains[:n]) / n, sum(losses[:n]) / n
    for t in range(n, len(close)):
        if t > n:
            ag = (ag * (n - 1) + gains[t - 1]) / n
            al = (al * (n - 1) + losses[t - 1]) / n
        out[t] = 100.0 if al == 0 else 100 - 100 / (1 + ag / al)
    return out


@pytest.mark.realdata
@pytest.mark.parametrize("symbol", ["AAPL", "MSFT", "JPM"])
def test_real_rsi_signals_match_independent_loop(real_bars, symbol: str) -> None:
    s = real_bars[symbol]
    close = s.close.tolist()
    r = ref_rsi(close)
    want = {
        s.date_at(t): (Direction.LONG if r[t - 1] < 30 <= r[t] else Direction.SHORT)
        for t in range(15, len(close))
        if (r[t - 1] < 30 <= r[t]) or (r[t - 1] > 70 >= r[t])
    }
    got = {x.time.date(): x.direction for x in RsiMomentum().generate(s, [], lookback=len(s)) if x.time}
    assert len(want) > 20
    assert got == want


def test_code_strategies_of_one_call_compute_the_shared_indicators_once(make_series, monkeypatch) -> None:
    import jax_assistant.strategies.code as code

    s = gap_day_series(make_series)
    events = detect_events(s, [s.date_at(42)], DetectorConfig(), lookback=len(s))
    reg = StrategyRegistry.default()
    alone = sorted(
        (
            x
            for st in reg
            if isinstance(st, code.IndicatorStrategy)
            for x in st.generate(s, events, lookback=len(s))
        ),
        key=lambda x: x.id,
    )
    assert {x.strategy_id for x in alone} == {"rsi_momentum_v1", "macd_crossover_v1"}  # both need ATR14
    calls = []
    real = code.atr
    monkeypatch.setattr(code, "atr", lambda *a, **k: calls.append(1) or real(*a, **k))
    together = [x for x in reg.generate(s, events, lookback=len(s)) if x.event_id is None]
    assert len(calls) == 1
    assert sorted(together, key=lambda x: x.id) == alone  # sharing changes nothing in the setups


def test_two_moving_average_strategies_with_other_parameters_keep_their_own_signals(make_series) -> None:
    from jax_assistant.strategies import MaCrossover

    class WidePullback(MaCrossover):
        id = "ma_wide_pullback_v1"
        pullback_band = (-0.5, 0.5)

    # A steady uptrend, then a dip 3 % below SMA20: outside the default pullback band, inside the wide one.
    closes = [100.0 + 0.5 * k for k in range(260)]
    closes += [closes[-1] * 0.93] * 2
    s = make_series(np.asarray(closes), high=np.asarray(closes) + 0.3, low=np.asarray(closes) - 0.3)
    default_alone, wide_alone = (
        MaCrossover().generate(s, [], lookback=2),
        WidePullback().generate(s, [], lookback=2),
    )
    assert len(wide_alone) > len(default_alone)
    together = StrategyRegistry([MaCrossover(), WidePullback()]).generate(s, [], lookback=2)
    assert [x for x in together if x.strategy_id == "ma_crossover_v1"] == default_alone
    assert [x for x in together if x.strategy_id == "ma_wide_pullback_v1"] == wide_alone
