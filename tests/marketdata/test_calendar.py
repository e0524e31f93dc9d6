"""Earnings calendars and sector maps: real files and hand-made broken ones."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from jax_assistant.marketdata import DataIssue, DataSourceError, load_earnings_calendar, load_sectors


@pytest.mark.realdata
def test_real_earnings_calendar(shared_data: Path) -> None:
    issues: list[DataIssue] = []
    cal = load_earnings_calendar(shared_data / "earnings_dates.csv", issues=issues)
    assert issues == []
    assert len(cal) == 485
    assert sum(len(v) for v in cal.values()) == 12_833
    aapl = cal["AAPL"]
    assert len(aapl) == 28
    assert aapl[0] == date(2012, 10, 25) and aapl[-1] == date(2019, 7, 30)
    assert aapl == sorted(set(aapl))
    assert date(2018, 5, 5) in cal["BRK.B"]  # Berkshire reports on Saturdays: kept as is


@pytest.mark.realdata
def test_real_earnings_details_file_extra_columns_ignored(shared_data: Path) -> None:
    details = load_earnings_calendar(shared_data / "earnings_details.csv")
    assert details == load_earnings_calendar(shared_data / "earnings_dates.csv")


@pytest.mark.realdata
def test_real_sectors(shared_data: Path) -> None:
    sectors = load_sectors(shared_data / "sectors.csv")
    assert len(sectors) == 505
    assert len(set(sectors.values())) == 11
    assert sectors["AAPL"] == "Information Technology"
    assert sectors["PCLN"] == "Consumer Discretionary"  # BKNG under its 2017 ticker
    assert list(sectors.values()).count("Telecommunication Services") == 3


def test_earnings_calendar_sorts_dedups_and_reports_bad_rows(tmp_path: Path) -> None:
    f = tmp_path / "earn.csv"
    f.write_text(
        "Date,Ticker,eps\n"  # other header spellings and order, extra column
        "2020-04-30,aapl,1\n"
        "2020-01-28,AAPL,1\n"
        "2020-01-28,AAPL,1\n"  # duplicate
        "4/28/21,MSFT,1\n"  # US m/d/yy
        "07/27/2021,MSFT,1\n"  # US m/d/yyyy
        "20211026,MSFT,1\n"  # compact
        "not a date,MSFT,1\n"
        "2020-13-45,MSFT,1\n"
        ",MSFT,1\n"
        "2020-01-01,,1\n"
    )
    issues: list[DataIssue] = []
    cal = load_earnings_calendar(f, issues=issues)
    assert cal == {
        "AAPL": [date(2020, 1, 28), date(2020, 4, 30)],
        "MSFT": [date(2021, 4, 28), date(2021, 7, 27), date(2021, 10, 26)],
    }
    assert [i.rule for i in issues] == ["unparseable"] * 4
    assert "line 8" in issues[0].detail and "not a date" in issues[0].detail


def test_sectors_skip_empty_and_report_conflicting_duplicates(tmp_path: Path) -> None:
    f = tmp_path / "sectors.csv"
    f.write_text("symbol,sector\nAAA,Energy\nBBB,\nAAA,Utilities\naaa,Energy\nCCC, Health Care \n")
    issues: list[DataIssue] = []
    assert load_sectors(f, issues=issues) == {"AAA": "Energy", "CCC": "Health Care"}
    assert sorted(i.rule for i in issues) == ["duplicate_symbol", "unparseable"]


def test_missing_file_and_columns(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="not found"):
        load_earnings_calendar(tmp_path / "nope.csv")
    f = tmp_path / "bad.csv"
    f.write_text("ticker,when\nAAPL,2020-01-01\n")
    with pytest.raises(DataSourceError, match=r"bad\.csv.*date"):
        load_earnings_calendar(f)
    with pytest.raises(DataSourceError, match="sector"):
        load_sectors(f)
