"""Outcome rules on hand-checked real AAPL bars (2015-08/09, around the 2015-08-24 crash).

Every expected number below was worked out by hand from the rows of daily_ohlcv_stooq_sp500.csv.gz
quoted next to it, not by running the evaluator.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from jax_assistant.domain import Direction, TradeSetup
from jax_assistant.learning.outcomes import OutcomeConfig, evaluate
from jax_assistant.marketdata import CsvProvider


def setup(
    sid: str, day: date, entry: float, stop: float, target: float | None, *, short: bool = False
) -> TradeSetup:
    return TradeSetup(
        id=sid,
        symbol="AAPL",
        direction=Direction.SHORT if short else Direction.LONG,
        entry=entry,
        stop=stop,
        targets=[] if target is None else [target],
        strategy_id="s1",
        event_id=f"gap_open:AAPL:{day.isoformat()}",
        time=datetime(day.year, day.month, day.day, 21, tzinfo=UTC),
    )


def one(provider: CsvProvider, s: TradeSetup, as_of: date, **cfg: object) -> dict[str, object]:
    [out] = evaluate(provider.bars("AAPL"), [s], OutcomeConfig.model_validate(cfg), as_of=as_of)
    return out.model_dump()


def test_gap_through_the_stop_exits_at_the_open(aapl: CsvProvider) -> None:
    # 08-20 O109.37 H109.62 L107.01; 08-21 O105.87 H107.27 L101.28 (opens below the 106 stop).
    o = one(aapl, setup("a", date(2015, 8, 19), 110.25, 106.0, 115.0), date(2015, 9, 30))
    assert o["status"] == "stop"
    assert (o["fill_on"], o["fill_price"]) == (date(2015, 8, 20), 109.37)
    assert (o["exit_on"], o["exit_price"]) == (date(2015, 8, 21), 105.87)
    assert o["r_multiple"] == pytest.approx((105.87 - 109.37) / 4.25, abs=1e-6)
    assert o["mfe_r"] == pytest.approx((109.62 - 109.37) / 4.25, abs=1e-6)
    assert o["mae_r"] == pytest.approx((109.37 - 101.28) / 4.25, abs=1e-6)
    assert (o["sessions_held"], o["days_held"]) == (2, 1)
    assert o["event_type"] == "gap_open"


def test_same_bar_hits_both_and_the_stop_is_taken_first(aapl: CsvProvider) -> None:
    # 08-24 O90.948 H104.32 L88.196: reaches the 90 stop AND the 104 target.
    o = one(aapl, setup("b", date(2015, 8, 21), 101.4, 90.0, 104.0), date(2015, 9, 30))
    assert o["status"] == "stop"
    assert o["exit_price"] == 90.0
    assert o["r_multiple"] == pytest.approx((90.0 - 90.948) / 11.4, abs=1e-6)
    assert (o["sessions_held"], o["days_held"]) == (1, 0)


def test_target_hit(aapl: CsvProvider) -> None:
    # 08-26 O102.64 H105.34 L100.7; 08-27 O107.59 H108.55: the 108 target.
    o = one(aapl, setup("c", date(2015, 8, 25), 99.452, 97.0, 108.0), date(2015, 9, 30))
    assert (o["status"], o["exit_on"], o["exit_price"]) == ("target", date(2015, 8, 27), 108.0)
    assert o["r_multiple"] == pytest.approx((108 - 102.64) / 2.452, abs=1e-6)
    assert o["mfe_r"] == pytest.approx((108.55 - 102.64) / 2.452, abs=1e-6)
    assert o["mae_r"] == pytest.approx((102.64 - 100.7) / 2.452, abs=1e-6)


def test_short_expires_at_the_last_close(aapl: CsvProvider) -> None:
    # 09-03 O107.84; 09-03..09-08 stay inside (95, 112); 09-08 C107.67 is the third session held.
    s = setup("d", date(2015, 9, 2), 107.7, 112.0, 95.0, short=True)
    o = one(aapl, s, date(2015, 9, 30), max_sessions=3)
    assert (o["status"], o["exit_on"], o["exit_price"]) == ("expired", date(2015, 9, 8), 107.67)
    assert o["r_multiple"] == pytest.approx((107.84 - 107.67) / 4.3, abs=1e-6)
    assert (o["sessions_held"], o["days_held"]) == (3, 5)


def test_entry_touch_fill_and_unfilled(aapl: CsvProvider) -> None:
    # 08-28 O107.54 L106.93 touches 107 -> filled at 107; 09-01 O105.6 L102.91 reaches the 104 stop.
    o = one(aapl, setup("e", date(2015, 8, 27), 107.0, 104.0, 110.0), date(2015, 9, 30), fill="entry_touch")
    assert (o["fill_on"], o["fill_price"]) == (date(2015, 8, 28), 107.0)
    assert (o["status"], o["exit_price"], o["r_multiple"]) == ("stop", 104.0, -1.0)
    # Lows 106.93, 102.91, 104.6 over the 3-session window never reach 100.
    u = one(aapl, setup("f", date(2015, 8, 27), 100.0, 98.0, 110.0), date(2015, 9, 30), fill="entry_touch")
    assert (u["status"], u["r_multiple"], u["fill_on"]) == ("unfilled", 0.0, None)


def test_no_look_ahead_past_the_settle_date(aapl: CsvProvider) -> None:
    s = setup("c", date(2015, 8, 25), 99.452, 97.0, 108.0)
    # Settled as of 08-26 the target (reached on 08-27) is not known: still open, not a win.
    early = one(aapl, s, date(2015, 8, 26))
    assert (early["status"], early["exit_on"]) == ("open", None)
    assert one(aapl, s, date(2015, 8, 25))["status"] == "open"  # not even filled yet
    assert one(aapl, s, date(2015, 8, 27))["status"] == "target"


def test_many_setups_at_once_equal_one_by_one(aapl: CsvProvider) -> None:
    setups = [
        setup("a", date(2015, 8, 19), 110.25, 106.0, 115.0),
        setup("b", date(2015, 8, 21), 101.4, 90.0, 104.0),
        setup("d", date(2015, 9, 2), 107.7, 112.0, 95.0, short=True),
        setup("g", date(2015, 9, 9), 105.6, 100.0, None),
    ]
    series = aapl.bars("AAPL")
    cfg = OutcomeConfig(max_sessions=4)
    together = evaluate(series, setups, cfg, as_of=date(2015, 10, 30))
    assert together == [evaluate(series, [s], cfg, as_of=date(2015, 10, 30))[0] for s in setups]
    assert [o.setup_id for o in together] == ["a", "b", "d", "g"]


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        OutcomeConfig(max_sessions=0)
    with pytest.raises(ValueError, match="fill"):
        OutcomeConfig.model_validate({"fill": "close"})
