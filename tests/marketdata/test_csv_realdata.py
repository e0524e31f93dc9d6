"""CsvProvider on the real stooq sp500 file (../shared/data) and on a corrupted copy of it."""

from __future__ import annotations

import gzip
import re
import time
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from jax_assistant.marketdata import (
    BadSymbolError,
    CsvProvider,
    DataIssue,
    MarketDataProvider,
    UnknownSymbolError,
)

pytestmark = pytest.mark.realdata

SP500 = "daily_ohlcv_stooq_sp500.csv.gz"
FEW = ["AAPL", "AMZN", "MSFT", "AVB", "EIX", "CHTR", "GOOG"]


@pytest.fixture(scope="module")
def few(shared_data: Path) -> CsvProvider:
    return CsvProvider(shared_data / SP500, symbols=FEW)


def _close_on(p: CsvProvider, symbol: str, day: date) -> float:
    s = p.bars(symbol)
    (i,) = np.flatnonzero(s.dates == np.datetime64(day))
    return float(s.close[i])


def _issues_on(p: CsvProvider, symbol: str, day: date) -> list[DataIssue]:
    return [i for i in p.issues(symbol) if i.date == day]


def test_provider_shape(few: CsvProvider) -> None:
    assert isinstance(few, MarketDataProvider)
    assert (few.name, few.simulated) == ("csv", False)
    assert few.symbols() == sorted(FEW)
    assert few.latest_date() == date(2017, 11, 10)


def test_known_facts_from_the_readme(few: CsvProvider) -> None:
    assert _close_on(few, "AAPL", date(2014, 6, 6)) == pytest.approx(86.494)
    assert _close_on(few, "AAPL", date(2014, 6, 9)) == pytest.approx(87.879)  # the 7:1 split, no cliff
    assert _close_on(few, "AMZN", date(2017, 11, 10)) == pytest.approx(1125.35)
    assert _close_on(few, "MSFT", date(2017, 6, 30)) == pytest.approx(68.565)
    assert few.bars("GOOG").date_at(0) == date(2014, 3, 27)
    assert few.bars("AAPL").date_at(0) == date(2005, 2, 25)


def test_symbols_are_case_insensitive(few: CsvProvider) -> None:
    assert few.bars(" aapl ") is few.bars("AAPL")  # built once, then cached


def test_as_of_prevents_look_ahead(few: CsvProvider) -> None:
    full = few.bars("AAPL")
    s = few.bars("AAPL", date(2014, 6, 6))
    assert s.last_date == date(2014, 6, 6)
    assert s.dates.max() <= np.datetime64("2014-06-06")
    assert s.close[-1] == pytest.approx(86.494)
    assert len(s) < len(full)
    weekend = few.bars("AAPL", date(2014, 6, 8))  # a Sunday: the Friday bar is the latest
    assert weekend.last_date == date(2014, 6, 6)
    assert all(i.date is None or i.date <= date(2014, 6, 6) for i in s.issues)
    assert any(i.date == date(2010, 4, 26) for i in s.issues)  # earlier issues stay visible
    assert len(few.bars("AAPL", date(2000, 1, 1))) == 0


def test_decimal_shift_rows_are_skipped_and_reported(few: CsvProvider) -> None:
    avb = few.bars("AVB")
    assert np.datetime64("2010-09-16") not in avb.dates  # close 0.8997 instead of 89.97
    (issue,) = _issues_on(few, "AVB", date(2010, 9, 16))
    assert (issue.rule, issue.action) == ("price_outside_range", "row skipped")
    assert "close=0.8997" in issue.detail

    expected = {
        date(2005, 3, 23): "bad_tick",  # low 2.7272, close inside [low, high]
        date(2009, 9, 1): "price_outside_range",  # close 2.7272
        date(2009, 10, 22): "price_outside_range",  # open 2.7272
        date(2010, 7, 12): "high_below_low",  # high 2.7272
        date(2012, 3, 8): "price_outside_range",  # close 3.6366
        date(2012, 3, 22): "price_outside_range",
    }
    eix = few.bars("EIX")
    for day, rule in expected.items():
        assert np.datetime64(day) not in eix.dates
        assert [i.rule for i in _issues_on(few, "EIX", day)] == [rule]
    # Nothing of the glitches is left: EIX traded at 20..80 over the whole window.
    assert eix.low.min() > 15
    assert np.abs(np.diff(np.log(eix.close))).max() < 0.25


def test_zero_volume_day_is_reported_and_kept(few: CsvProvider) -> None:
    eix = few.bars("EIX")
    assert np.datetime64("2010-04-26") in eix.dates
    assert [i.rule for i in _issues_on(few, "EIX", date(2010, 4, 26))] == ["zero_volume"]


def test_chtr_missing_days_are_reported(few: CsvProvider) -> None:
    holes = [i for i in few.issues("CHTR") if i.rule == "missing_days"]
    # The data README: CHTR misses 25 sessions in 2009-2012 (counted on the NYSE calendar).
    assert sum(int(re.search(r"for (\d+) session", i.detail)[1]) for i in holes) == 25  # type: ignore[index]
    assert holes[0].date == date(2009, 12, 8)  # 2009-12-04 -> 2009-12-08: Monday 7th missing
    assert {i.action for i in holes} == {"reported"}
    assert few.bars("CHTR").date_at(0) == date(2009, 12, 2)


def test_side_files_next_to_the_data_are_used(few: CsvProvider) -> None:
    assert few.sector("AAPL") == "Information Technology"
    assert few.sector("nope") is None
    earnings = few.earnings_dates("aapl")
    assert earnings[0] == date(2012, 10, 25) and len(earnings) == 28
    assert few.earnings_dates("CHTR") != []
    assert few.earnings_dates("NOPE") == []


def test_unknown_symbols(few: CsvProvider) -> None:
    with pytest.raises(UnknownSymbolError, match="AAPL") as exc:
        few.bars("APPL")  # close match suggested
    assert exc.value.symbol == "APPL"
    with pytest.raises(UnknownSymbolError, match="symbols= filter"):
        few.bars("IBM")  # in the file, but not loaded


def test_requested_symbol_absent_from_file_is_reported(shared_data: Path) -> None:
    p = CsvProvider(shared_data / SP500, symbols=["AAPL", "NOTREAL"])
    assert p.symbols() == ["AAPL"]
    (issue,) = p.issues("NOTREAL")
    assert (issue.rule, issue.action) == ("unknown_symbol", "symbol skipped")


def test_whole_file(shared_data: Path) -> None:
    started = time.perf_counter()
    p = CsvProvider(shared_data / SP500)
    elapsed = time.perf_counter() - started
    assert p.load_mode == "typed"  # every cell of the real file parses typed: the fast path
    assert len(p.symbols()) == 505
    assert p.latest_date() == date(2017, 11, 10)
    assert elapsed < 15, f"loading the sp500 file took {elapsed:.1f}s"
    assert p.load_seconds <= elapsed
    started = time.perf_counter()
    issues = p.issues()  # cleans all 505 symbols
    assert time.perf_counter() - started < 15
    rules = {i.rule for i in issues}
    assert {"price_outside_range", "high_below_low", "bad_tick", "zero_volume", "missing_days"} <= rules
    # The 36 rows of anomalies.csv with open/close outside [low, high] are all dropped.
    assert sum(i.rule in ("price_outside_range", "high_below_low") for i in issues) == 36
    assert sum(i.rule == "zero_volume" for i in issues) == 283  # 297 in anomalies.csv, 14 of them longhist
    assert sum(len(p.bars(s)) for s in p.symbols()) == 1_503_045 - 36 - 19  # 19 bad ticks
    assert p.sector("BRK.B") == "Financials"
    # The source's 2011-02-17 hole (README: present for 273 of 464 symbols) is one missing session.
    hole = {i.symbol for i in issues if i.rule == "missing_days" and i.date == date(2011, 2, 18)}
    assert len(hole) == 191


# --------------------------------------------------------------------------- a corrupted real file


@pytest.fixture(scope="module")
def aapl_rows(shared_data: Path) -> pl.DataFrame:
    df = pl.read_csv(shared_data / SP500, schema_overrides={"date": pl.String})
    rows = df.filter((pl.col("symbol") == "AAPL") & (pl.col("date") >= "2013-01-02")).head(300)
    assert rows.height == 300
    return rows


def _corrupt(rows: pl.DataFrame) -> tuple[str, dict[str, str]]:
    """The real rows as CSV text (shuffled column order, an extra column) with injected faults.

    Returns the text and {date: expected rule} for the AAPL rows that must be dropped.
    """
    lines = ["Volume,Close,Date,Symbol,Open,High,Low,OpenInt"]
    expected: dict[str, str] = {}
    for i, r in enumerate(rows.iter_rows(named=True)):
        o, h, lo, c, v, d = r["open"], r["high"], r["low"], r["close"], r["volume"], r["date"]
        if i == 10:
            c, expected[d] = "nan", "nan_value"
        elif i == 20:
            lo, expected[d] = 0, "non_positive_price"
        elif i == 30:
            h, expected[d] = lo * 0.9, "high_below_low"
        elif i == 40:
            o, expected[d] = "abc", "unparseable"
        elif i == 50:
            v, expected[d] = "12x", "unparseable"
        elif i == 60:
            c, expected[d] = c / 100, "price_outside_range"
        lines.append(f"{v},{c},{d},AAPL,{o},{h},{lo},0")
        if i == 70:  # the same date again, a different close: the first copy is kept
            lines.append(f"{v},{c + 1},{d},AAPL,{o},{h + 1},{lo},0")
            expected[d + "#dup"] = "duplicate_date"
        if i == 80:
            lines.append("this line is garbage")
            lines.append("1000,10,not-a-date,AAPL,10,11,9,0")
    # A second symbol that is entirely bad.
    lines += [
        "100,5,2013-01-02,ZZZZ,5,4,6,0",  # high < low
        "100,nan,2013-01-03,ZZZZ,5,6,4,0",
        "100,-5,2013-01-04,ZZZZ,5,6,4,0",
    ]
    return "\n".join(lines) + "\n", expected


def test_corrupted_copy_plain_and_gz(tmp_path: Path, aapl_rows: pl.DataFrame) -> None:
    text, expected = _corrupt(aapl_rows)
    plain = tmp_path / "corrupt.csv"
    plain.write_text(text)
    packed = tmp_path / "corrupt.csv.gz"
    packed.write_bytes(gzip.compress(text.encode()))

    for path in (plain, packed):
        p = CsvProvider(path)
        assert p.load_mode == "text"  # the typed fast path gave up on the bad cells, the load did not
        assert p.symbols() == ["AAPL", "ZZZZ"]
        s = p.bars("AAPL")
        assert len(s) == 300 - 6  # six injected bad rows; the duplicate adds one row and loses one
        bad_days = {k for k in expected if not k.endswith("#dup")}
        assert not any(np.datetime64(d) in s.dates for d in bad_days)
        issues = p.issues("AAPL")
        by_date = {(i.date.isoformat() if i.date else None): i for i in issues if i.rule != "duplicate_date"}
        for d in bad_days:
            assert by_date[d].rule == expected[d], d
        assert all(by_date[d].action == "row skipped" for d in bad_days)
        # Details name the field that failed.
        details = {i.rule: i.detail for i in issues}
        assert "close" in details["nan_value"]
        assert "low" in details["non_positive_price"]
        assert "high" in details["high_below_low"]
        assert "close" in details["price_outside_range"]
        unparseable = [i.detail for i in issues if i.rule == "unparseable"]
        assert any("open='abc' is not a number" in x for x in unparseable)
        assert any("volume='12x' is not a number" in x for x in unparseable)
        assert any("date='not-a-date' is not a date" in x for x in unparseable)
        (dup,) = [i for i in issues if i.rule == "duplicate_date"]
        dup_day = next(k for k in expected if k.endswith("#dup")).removesuffix("#dup")
        assert dup.date == date.fromisoformat(dup_day)
        (i,) = np.flatnonzero(s.dates == np.datetime64(dup_day))
        assert s.close[i] == pytest.approx(aapl_rows.filter(pl.col("date") == dup_day)["close"][0])
        # The rest is served exactly as in the real file.
        good = aapl_rows.filter(~pl.col("date").is_in(list(bad_days)))
        np.testing.assert_allclose(s.close, good["close"].to_numpy())
        np.testing.assert_allclose(s.volume, good["volume"].to_numpy())

        with pytest.raises(BadSymbolError, match="ZZZZ") as exc:
            p.bars("ZZZZ")
        assert {"high_below_low", "nan_value", "non_positive_price"} <= {i.rule for i in exc.value.issues}
        with pytest.raises(BadSymbolError):  # cached, raised again
            p.bars("ZZZZ")
        assert p.bars("AAPL") is s  # the good symbol is unaffected
        everything = p.issues()
        assert any(i.rule == "unparseable" and "not a ticker" in i.detail for i in everything)
        assert any(i.symbol == "ZZZZ" and i.action == "symbol skipped" for i in everything)
