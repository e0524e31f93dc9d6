"""Code strategies fire on constructed series with the intended signal and never on a flat one."""

from __future__ import annotations

import numpy as np
import pytest

from jax_assistant.analysis import atr, macd, sma
from jax_assistant.domain import Direction, session_time, unix_seconds
from jax_assistant.strategies import CODE_STRATEGIES, MacdCrossover, MaCrossover, RsiMomentum
from jax_assistant.strategies.code import crossings


def series_from(make_series, closes, *, spread: float = 0.0, volume=None):
    c = np.asarray(closes, dtype=float)
    return make_series(c, open=c, high=c + spread, low=c - spread, volume=volume)


def v_shape(first: float, down: int, step_down: float, up: int, step_up: float) -> list[float]:
    closes = [first - step_down * k for k in range(down)]
    return closes + [closes[-1] + step_up * (k + 1) for k in range(up)]


def check_atr_geometry(setup, s, i: int, stop_mult: float, target_mults: tuple[float, ...]) -> None:
    a = atr(s.high, s.low, s.close, 14)[i]
    sign = 1 if setup.direction is Direction.LONG else -1
    assert setup.entry == s.close[i]  # entry at the signal session's close
    assert setup.stop == pytest.approx(s.close[i] - sign * stop_mult * a)
    assert setup.targets == pytest.approx([s.close[i] + sign * m * a for m in target_mults])
    assert setup.event_id is None
    assert setup.time == session_time(s.date_at(i))
    assert setup.id == f"ts_{setup.strategy_id}_TEST_{unix_seconds(s.date_at(i))}"


# --------------------------------------------------------------------------- RSI


def test_rsi_long_when_rsi_crosses_up_through_30(make_series) -> None:
    # 40 sessions down by 1, then up by 2: RSI sits at 0, then 13.3, 24.2, 33.2 -> crosses on up-day 3
    s = series_from(make_series, v_shape(140, 40, 1.0, 10, 2.0))
    setups = RsiMomentum().generate(s, [], lookback=len(s))
    assert [(x.direction, x.time) for x in setups] == [(Direction.LONG, session_time(s.date_at(42)))]
    (setup,) = setups
    check_atr_geometry(setup, s, 42, 2.0, (2.0, 3.0))
    assert setup.strategy_id == "rsi_momentum_v1"
    assert setup.reason.startswith("RSI14 crossed up through 30 (24.2 -> 33.2)")
    assert setup.confidence == pytest.approx(0.6)  # no SMA200 yet, volume flat: base only


def test_rsi_short_when_rsi_crosses_down_through_70(make_series) -> None:
    closes = [100 + k for k in range(40)]
    closes += [closes[-1] - 2 * (k + 1) for k in range(10)]
    s = series_from(make_series, closes)
    (setup,) = RsiMomentum().generate(s, [], lookback=len(s))
    assert setup.direction is Direction.SHORT
    check_atr_geometry(setup, s, 42, 2.0, (2.0, 3.0))
    assert "crossed down through 70" in setup.reason


def test_rsi_lookback_and_as_of(make_series) -> None:
    s = series_from(make_series, v_shape(140, 40, 1.0, 10, 2.0))
    strat = RsiMomentum()
    assert strat.generate(s, []) == []  # the last session is not a crossing
    assert len(strat.generate(s, [], as_of=s.date_at(42))) == 1
    assert strat.generate(s, [], as_of=s.date_at(41)) == []


def test_volume_boost(make_series) -> None:
    closes = v_shape(140, 40, 1.0, 10, 2.0)
    vol = [1000.0] * len(closes)
    vol[42] = 1500.0
    s = series_from(make_series, closes, volume=vol)
    (setup,) = RsiMomentum().generate(s, [], as_of=s.date_at(42))
    assert setup.confidence == pytest.approx(0.65)


# --------------------------------------------------------------------------- MACD


def test_macd_long_after_a_turn(make_series) -> None:
    s = series_from(make_series, v_shape(200, 80, 1.0, 30, 1.0), spread=0.5)
    setups = MacdCrossover().generate(s, [], lookback=30)  # the rising leg only
    assert setups and all(x.direction is Direction.LONG for x in setups)
    line, sig, _ = macd(s.close)
    for x in setups:
        i = int(np.searchsorted(s.dates, np.datetime64(x.time.date(), "D")))
        assert line[i - 1] - sig[i - 1] <= 1e-9 * s.close[i] < line[i] - sig[i]
        check_atr_geometry(x, s, i, 2.0, (2.5, 4.0))
        assert x.reason.startswith("MACD line crossed above its signal")


def test_macd_short_after_a_top(make_series) -> None:
    closes = [100 + k for k in range(80)]
    closes += [closes[-1] - (k + 1) for k in range(30)]
    s = series_from(make_series, closes, spread=0.5)
    setups = MacdCrossover().generate(s, [], lookback=30)
    assert setups and all(x.direction is Direction.SHORT for x in setups)


# --------------------------------------------------------------------------- MA crossover


def ma_geometry(setup, s, i: int, stop: float, mults: tuple[float, ...]) -> None:
    a = atr(s.high, s.low, s.close, 14)[i]
    sign = 1 if setup.direction is Direction.LONG else -1
    assert setup.entry == s.close[i]
    assert setup.stop == pytest.approx(stop(a) if callable(stop) else stop)
    assert setup.targets == pytest.approx([s.close[i] + sign * m * a for m in mults])
    assert setup.event_id is None and setup.time == session_time(s.date_at(i))


def test_golden_cross_when_the_averages_are_stacked_and_close_is_above_sma20(make_series) -> None:
    s = series_from(make_series, [100 + 0.5 * k for k in range(260)], spread=0.3)
    i = len(s) - 1
    (setup,) = MaCrossover().generate(s, [])
    f, sl, t = sma(s.close, 20)[i], sma(s.close, 50)[i], sma(s.close, 200)[i]
    assert f > sl > t and s.close[i] > f
    assert setup.direction is Direction.LONG
    assert setup.reason.startswith("golden cross")
    ma_geometry(setup, s, i, lambda a: sl - a, (3.0, 5.0))  # stop SMA50 - ATR, targets 3 and 5 ATR
    # 0.65 + 0.12 (close above a rising SMA200) + 0.10 (SMA20 is 25 % above SMA200); volume flat
    assert abs(f - t) / t > 0.05
    assert setup.confidence == pytest.approx(0.87)
    s.volume[i] = 2000.0  # above its 20-session average: +0.08, capped at 1 from 0.95
    (setup,) = MaCrossover().generate(s, [])
    assert setup.confidence == pytest.approx(0.95)
    # It is a state: every session of the aligned trend is a golden cross.
    assert len(MaCrossover().generate(s, [], lookback=30)) == 30


def test_golden_cross_confidence_without_the_spread_boost(make_series) -> None:
    s = series_from(make_series, [100 + 0.02 * k for k in range(260)], spread=0.01)
    i = len(s) - 1
    f, t = sma(s.close, 20)[i], sma(s.close, 200)[i]
    assert abs(f - t) / t < 0.05
    (setup,) = MaCrossover().generate(s, [])
    assert setup.reason.startswith("golden cross")
    assert setup.confidence == pytest.approx(0.77)  # 0.65 + 0.12 trend


def test_death_cross_mirrored(make_series) -> None:
    s = series_from(make_series, [300 - 0.5 * k for k in range(260)], spread=0.3)
    i = len(s) - 1
    (setup,) = MaCrossover().generate(s, [])
    f, sl, t = sma(s.close, 20)[i], sma(s.close, 50)[i], sma(s.close, 200)[i]
    assert f < sl < t and s.close[i] < f
    assert setup.direction is Direction.SHORT
    assert setup.reason.startswith("death cross")
    ma_geometry(setup, s, i, lambda a: sl + a, (3.0, 5.0))
    assert setup.confidence == pytest.approx(0.87)


def _with_last_close_off_sma20(make_series, x: float):
    """An uptrend whose last close sits exactly ``x`` (fraction) from its own SMA20."""
    closes = [100 + 0.5 * k for k in range(260)]
    s19 = sum(closes[-20:-1])
    closes[-1] = s19 * (1 + x) / (19 - x)  # c = (s19 + c) / 20 * (1 + x)
    s = series_from(make_series, closes, spread=0.3)
    i = len(s) - 1
    f = sma(s.close, 20)[i]
    assert (s.close[i] - f) / f == pytest.approx(x)
    return s, i


@pytest.mark.parametrize("x", [-0.02, -0.01, 0.0])
def test_pullback_to_sma20_in_an_uptrend(make_series, x: float) -> None:
    s, i = _with_last_close_off_sma20(make_series, x)
    (setup,) = MaCrossover().generate(s, [])
    assert setup.direction is Direction.LONG
    assert setup.reason.startswith("pullback to SMA20")
    ma_geometry(setup, s, i, lambda a: s.close[i] - 1.5 * a, (2.0, 3.5))
    assert setup.confidence == pytest.approx(0.55)


def test_pullback_band_edges(make_series) -> None:
    s, _ = _with_last_close_off_sma20(make_series, -0.025)
    assert MaCrossover().generate(s, []) == []  # too far below SMA20, and no golden cross
    s, _ = _with_last_close_off_sma20(make_series, 0.005)
    (setup,) = MaCrossover().generate(s, [])  # inside the band but above SMA20: the golden cross wins
    assert setup.reason.startswith("golden cross")


def test_no_signal_before_sma200(make_series) -> None:
    s = series_from(make_series, [100 + 0.5 * k for k in range(150)], spread=0.3)
    assert MaCrossover().generate(s, [], lookback=150) == []


# --------------------------------------------------------------------------- crossings


def test_crossings_rules() -> None:
    nan = float("nan")
    price = np.full(9, 100.0)
    diff = np.array([nan, 1.0, -1.0, -1.0, 0.0, -1.0, 1.0, 0.0, 1.0])
    up, down = crossings(diff, price)
    # idx1: first value after warm-up is no cross; idx2 down; idx4 touches, idx5 back below: nothing;
    # idx6 up; idx7 level, idx8 above again: still the same cross, not a new one
    assert np.flatnonzero(up).tolist() == [6]
    assert np.flatnonzero(down).tolist() == [2]


def test_crossings_ignore_rounding_noise_but_count_leaving_a_level() -> None:
    price = np.full(6, 100.0)
    noise = np.array([0.0, 3e-14, -2e-14, 4e-14, -1e-14, 0.0])
    assert not np.concatenate(crossings(noise, price)).any()
    leave = np.array([0.0, 2e-14, -1e-14, 0.0, -0.5, -0.7])
    up, down = crossings(leave, price)
    assert not up.any() and np.flatnonzero(down).tolist() == [4]


# --------------------------------------------------------------------------- flat and edge cases


@pytest.mark.parametrize("strategy_id", sorted(CODE_STRATEGIES))
@pytest.mark.parametrize("level", [100.0, 37.37])
def test_flat_series_never_fires(make_series, strategy_id: str, level: float) -> None:
    s = series_from(make_series, [level] * 300, spread=1.0)
    assert CODE_STRATEGIES[strategy_id]().generate(s, [], lookback=len(s)) == []


@pytest.mark.parametrize("strategy_id", sorted(CODE_STRATEGIES))
def test_short_series_is_quiet(make_series, strategy_id: str) -> None:
    for n in (0, 1, 5):
        s = series_from(make_series, [100.0 + k for k in range(n)])
        assert CODE_STRATEGIES[strategy_id]().generate(s, [], lookback=10) == []


def test_code_strategies_have_no_own_risk_cap() -> None:
    assert {sid: cls().max_risk_percent for sid, cls in CODE_STRATEGIES.items()} == {
        "rsi_momentum_v1": None,
        "macd_crossover_v1": None,
        "ma_crossover_v1": None,
    }


def test_rsi_is_computed_once_per_series_whatever_the_number_of_setups(make_series, monkeypatch) -> None:
    import jax_assistant.strategies.code as code

    calls = []
    real = code.rsi
    monkeypatch.setattr(code, "rsi", lambda *a, **k: calls.append(1) or real(*a, **k))
    # Two V shapes: crossings up through 30 and a setup with a reason for each.
    s = series_from(make_series, v_shape(140, 40, 1.0, 10, 2.0) + v_shape(159, 40, 1.0, 10, 2.0))
    setups = RsiMomentum().generate(s, [], lookback=len(s))
    assert len(setups) >= 2 and len(calls) == 1
