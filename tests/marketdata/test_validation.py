"""clean_series: every rule on small hand-built arrays."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from jax_assistant.marketdata import BadSymbolError, DataIssue, MarketDataError, clean_series


def _weekdays(n: int, start: date = date(2024, 1, 2)) -> list[date]:
    out: list[date] = []
    d = start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += timedelta(days=1)
    return out


def _raw(n: int = 10) -> dict[str, list]:
    """Clean bars: price 100 + i, 1 % wicks, volume 1M."""
    close = [100.0 + i for i in range(n)]
    return {
        "dates": _weekdays(n),
        "open": [c - 0.5 for c in close],
        "high": [c * 1.01 for c in close],
        "low": [c * 0.99 - 0.5 for c in close],
        "close": close,
        "volume": [1_000_000.0] * n,
    }


def _clean(raw: dict[str, list], symbol: str = "TEST"):
    return clean_series(
        symbol, raw["dates"], raw["open"], raw["high"], raw["low"], raw["close"], raw["volume"]
    )


def _by_rule(issues: tuple[DataIssue, ...] | list[DataIssue], rule: str) -> list[DataIssue]:
    return [i for i in issues if i.rule == rule]


def _dropped(raw: dict[str, list], i: int, rule: str, field: str):
    """Assert row i is dropped with ``rule`` and a detail naming ``field``; return the series."""
    s = _clean(raw)
    day = raw["dates"][i]
    assert np.datetime64(day) not in s.dates
    hits = [x for x in s.issues if x.date == day]
    assert [x.rule for x in hits] == [rule]
    assert hits[0].action == "row skipped"
    assert field in hits[0].detail
    assert rule in str(hits[0]) and field in str(hits[0])
    assert len(s) == len(raw["dates"]) - 1
    return s


def test_clean_input_passes_through_untouched() -> None:
    raw = _raw()
    s = _clean(raw)
    assert s.issues == ()
    assert len(s) == 10
    assert s.dates.dtype == np.dtype("datetime64[D]")
    np.testing.assert_array_equal(s.close, raw["close"])
    assert s.last_date == raw["dates"][-1]


def test_rows_are_sorted_by_date() -> None:
    raw = _raw()
    order = [3, 1, 0, 2, 9, 8, 7, 6, 5, 4]
    shuffled = {k: [v[i] for i in order] for k, v in raw.items()}
    s = _clean(shuffled)
    assert list(s.dates) == [np.datetime64(d) for d in raw["dates"]]
    np.testing.assert_array_equal(s.close, raw["close"])


def test_result_arrays_are_read_only() -> None:
    s = _clean(_raw())
    with pytest.raises(ValueError):
        s.close[0] = 1.0


@pytest.mark.parametrize("field", ["open", "high", "low", "close", "volume"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_value(field: str, value: float) -> None:
    raw = _raw()
    raw[field][4] = value
    _dropped(raw, 4, "nan_value", field)


def test_missing_date_is_nan_value() -> None:
    raw = _raw()
    raw["dates"][4] = np.datetime64("NaT")
    s = _clean(raw)
    assert len(s) == 9
    (issue,) = _by_rule(s.issues, "nan_value")
    assert issue.date is None and "date" in issue.detail


@pytest.mark.parametrize("field", ["open", "high", "low", "close"])
@pytest.mark.parametrize("value", [0.0, -5.0])
def test_non_positive_price(field: str, value: float) -> None:
    raw = _raw()
    raw[field][5] = value
    if field == "high":  # keep the row otherwise consistent so only the intended rule can fire first
        raw["low"][5] = value - 1
    _dropped(raw, 5, "non_positive_price", field)


def test_negative_volume() -> None:
    raw = _raw()
    raw["volume"][2] = -100.0
    _dropped(raw, 2, "negative_volume", "volume")


def test_high_below_low() -> None:
    raw = _raw()
    raw["high"][6] = raw["low"][6] / 10  # the ARE/PXD decimal-shift kind: high=7.133 < low=70.224
    s = _dropped(raw, 6, "high_below_low", "high")
    assert "low" in _by_rule(s.issues, "high_below_low")[0].detail


@pytest.mark.parametrize(
    ("field", "factor"), [("close", 0.01), ("close", 10.0), ("open", 0.1), ("open", 3.0)]
)
def test_price_outside_range(field: str, factor: float) -> None:
    raw = _raw()
    raw[field][7] *= factor  # e.g. AVB 2010-09-16 close 0.8997 instead of 89.97
    _dropped(raw, 7, "price_outside_range", field)


def test_duplicate_date_keeps_first() -> None:
    raw = _raw()
    for k in raw:
        raw[k].insert(4, raw[k][3])  # a second bar for the date of row 3 ...
    raw["close"][4] = raw["close"][3] + 0.25  # ... with a different (still valid) close
    s = _clean(raw)
    (issue,) = _by_rule(s.issues, "duplicate_date")
    assert issue.date == raw["dates"][3] and "date" in issue.detail
    assert len(s) == 10
    assert s.close[3] == raw["close"][3]  # the first one was kept


def test_duplicate_date_bad_first_copy_does_not_hide_good_second() -> None:
    raw = _raw()
    for k in raw:
        raw[k].insert(4, raw[k][3])
    raw["close"][3] = float("nan")
    s = _clean(raw)
    assert [i.rule for i in s.issues] == ["nan_value"]
    assert s.close[3] == raw["close"][4]


@pytest.mark.parametrize("field", ["low", "high", "open"])
def test_bad_tick_single_field_decimal_shift(field: str) -> None:
    raw = _raw()
    i = 5
    if field == "low":
        raw["low"][i] /= 10  # EIX 2005-03-23: low=2.7272 with close 28.1 -- close still inside [low, high]
    elif field == "high":
        raw["high"][i] *= 10
    else:  # open and low both shifted (PCG 2012-10-08: o=l=3.5557 at ~35): open still inside [low, high]
        raw["open"][i] /= 10
        raw["low"][i] = raw["open"][i]
    s = _dropped(raw, i, "bad_tick", field)
    assert "after" in _by_rule(s.issues, "bad_tick")[0].detail


def test_bad_tick_whole_bar_shifted() -> None:
    raw = _raw()
    for k in ("open", "high", "low", "close"):
        raw[k][5] /= 100  # internally consistent, but 99 % away from both neighbours and back
    _dropped(raw, 5, "bad_tick", "close")


def test_large_genuine_moves_are_not_bad_ticks() -> None:
    raw = _raw(12)
    # A -50 % day that rebounds (2008-like) and a -60 % crash that stays: both real, both kept.
    for k in ("open", "high", "low", "close"):
        raw[k][3] *= 0.5
        for j in range(8, 12):
            raw[k][j] *= 0.4
    s = _clean(raw)
    assert s.issues == ()
    assert len(s) == 12


def test_bad_tick_neighbours_skip_dropped_rows() -> None:
    raw = _raw()
    raw["close"][4] = float("nan")  # dropped first; row 5's neighbours become rows 3 and 6
    raw["low"][5] /= 10
    s = _clean(raw)
    assert [(i.date, i.rule) for i in s.issues] == [
        (raw["dates"][4], "nan_value"),
        (raw["dates"][5], "bad_tick"),
    ]


def test_zero_volume_is_reported_not_dropped() -> None:
    raw = _raw()
    raw["volume"][3] = 0.0  # the 2010-04-26 kind
    s = _clean(raw)
    assert len(s) == 10
    (issue,) = s.issues
    assert (issue.rule, issue.action, issue.date) == ("zero_volume", "reported", raw["dates"][3])
    assert "volume" in issue.detail


def test_missing_days_reported_not_dropped() -> None:
    dates = [date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 4), date(2024, 1, 5)]
    dates += [date(2024, 1, 16), date(2024, 1, 17)]  # 6 weekdays (8 .. 15 Jan), 5 sessions: 15th is MLK
    raw = {k: v[:6] for k, v in _raw(6).items()}
    raw["dates"] = dates
    s = _clean(raw)
    assert len(s) == 6
    (issue,) = s.issues
    assert (issue.rule, issue.action, issue.date) == ("missing_days", "reported", date(2024, 1, 16))
    assert "5 session(s)" in issue.detail and "date" in issue.detail


@pytest.mark.parametrize(
    "pair",
    [
        (date(2024, 1, 12), date(2024, 1, 16)),  # Fri -> Tue: a Monday holiday
        (date(2024, 11, 27), date(2024, 11, 29)),  # Wed -> Fri: Thanksgiving
        (date(2012, 10, 26), date(2012, 10, 31)),  # Fri -> Wed: the Sandy closure
        (date(2001, 9, 10), date(2001, 9, 17)),  # the 9/11 closure
        (date(2018, 12, 4), date(2018, 12, 6)),  # the Bush day of mourning
        (date(2024, 3, 28), date(2024, 4, 1)),  # Good Friday
    ],
)
def test_holidays_and_weekends_are_not_missing_days(pair: tuple[date, date]) -> None:
    raw = {k: v[:2] for k, v in _raw(2).items()}
    raw["dates"] = list(pair)
    assert _clean(raw).issues == ()


@pytest.mark.parametrize(
    ("pair", "missing"),
    [
        ((date(2011, 2, 16), date(2011, 2, 18)), 1),  # the real 2011-02-17 hole: one Thursday
        ((date(2024, 12, 2), date(2024, 12, 6)), 3),
        ((date(2024, 12, 31), date(2025, 1, 3)), 1),  # Jan 1 is a holiday, Jan 2 a session
    ],
)
def test_a_missing_session_is_reported(pair: tuple[date, date], missing: int) -> None:
    raw = {k: v[:2] for k, v in _raw(2).items()}
    raw["dates"] = list(pair)
    (issue,) = _clean(raw).issues
    assert (issue.rule, issue.date) == ("missing_days", pair[1])
    assert f"{missing} session(s)" in issue.detail


@pytest.mark.parametrize("factor", [10.0, 0.1])
def test_last_bar_jump_is_an_unconfirmed_bad_tick_until_a_later_bar_confirms_it(factor: float) -> None:
    raw = _raw(10)
    for k in ("open", "high", "low", "close"):
        for j in (8, 9):
            raw[k][j] *= factor  # a level change on bar 8 that bar 9 confirms
    cut = {k: v[:9] for k, v in raw.items()}  # as of bar 8: nothing after it yet
    s = _dropped(cut, 8, "bad_tick", "close")
    assert "unconfirmed" in _by_rule(s.issues, "bad_tick")[0].detail
    full = _clean(raw)  # as of bar 9: bar 8 stayed, so it is real; bar 9 is no jump from bar 8
    assert full.issues == ()
    assert len(full) == 10


def test_last_bar_inside_the_jump_limit_is_kept() -> None:
    raw = _raw(10)
    for k in ("open", "high", "low", "close"):
        raw[k][9] *= 1.7  # +70 %: a huge but plausible move
    assert _clean(raw).issues == ()


def test_cleaning_a_prefix_equals_the_prefix_of_cleaning_except_an_unconfirmed_last_bar() -> None:
    raw = _raw(30)
    raw["low"][5] /= 10  # an interior glitch: judged the same in every prefix that has bar 6
    raw["close"][12] = float("nan")
    full = _clean(raw)
    for cut in range(7, 30):
        part = _clean({k: v[:cut] for k, v in raw.items()})
        last = raw["dates"][cut - 1]
        ref = full.upto(last)
        assert part.dates.tolist() == ref.dates.tolist()
        assert part.issues == ref.issues


def test_fewer_than_two_valid_bars_raises_bad_symbol_error() -> None:
    raw = _raw(4)
    raw["close"][0] = float("nan")
    raw["high"][1] = 1.0
    raw["volume"][2] = -1.0
    with pytest.raises(BadSymbolError) as exc:
        _clean(raw, "XYZ")
    err = exc.value
    assert isinstance(err, MarketDataError)
    assert err.symbol == "XYZ"
    msg = str(err)
    assert "XYZ" in msg
    for rule in ("nan_value", "high_below_low", "negative_volume"):
        assert rule in msg
    assert err.issues[-1].action == "symbol skipped"


def test_two_valid_bars_are_enough() -> None:
    raw = _raw(3)
    raw["close"][0] = float("nan")
    assert len(_clean(raw)) == 2


def test_empty_input_raises_bad_symbol_error() -> None:
    with pytest.raises(BadSymbolError, match="EMPTY"):
        clean_series("EMPTY", [], [], [], [], [], [])


def test_prior_issues_are_kept() -> None:
    prior = DataIssue("TEST", date(2024, 1, 3), "unparseable", "line 3: open='abc' is not a number")
    raw = _raw()
    s = clean_series("TEST", *raw.values(), prior_issues=[prior])
    assert s.issues == (prior,)


def test_mismatched_lengths_raise_value_error() -> None:
    raw = _raw()
    raw["volume"] = raw["volume"][:-1]
    with pytest.raises(ValueError, match="volume"):
        _clean(raw)


def test_upto_hides_later_issues() -> None:
    raw = _raw()
    raw["close"][8] = float("nan")
    s = _clean(raw)
    assert len(s.issues) == 1
    early = s.upto(raw["dates"][5])
    assert early.issues == () and len(early) == 6
