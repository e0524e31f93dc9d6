"""The NYSE calendar: known closures, session arithmetic, and agreement with the real data."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from jax_assistant.domain.sessions import (
    CLOSURES_PATH,
    closures_from_holidays,
    exchange_calendar,
    holiday_dates,
    is_session,
    next_session,
    nth_session_after,
    reaction_session,
    render_closures,
    session_on_or_after,
    sessions_between,
    sessions_between_arrays,
)


@pytest.mark.parametrize(
    "closed",
    [
        date(2001, 9, 11),
        date(2001, 9, 14),
        date(2004, 6, 11),  # Reagan
        date(2007, 1, 2),  # Ford
        date(2012, 10, 29),  # Sandy
        date(2012, 10, 30),
        date(2018, 12, 5),  # Bush
        date(2016, 3, 25),  # Good Friday
        date(2015, 7, 3),  # Independence Day observed
        date(2024, 6, 19),  # Juneteenth
        date(2024, 3, 9),  # a Saturday
    ],
)
def test_closures_are_not_sessions(closed: date) -> None:
    assert not is_session(closed)


def test_arithmetic_across_holidays() -> None:
    assert sessions_between(date(2012, 10, 26), date(2012, 10, 31)) == 1  # Sandy: Fri -> Wed
    assert sessions_between(date(2024, 3, 28), date(2024, 4, 1)) == 1  # Good Friday
    assert sessions_between(date(2024, 3, 4), date(2024, 3, 4)) == 0
    assert sessions_between(date(2024, 3, 11), date(2024, 3, 4)) == 0
    assert nth_session_after(date(2024, 3, 28), 1) == date(2024, 4, 1)
    assert nth_session_after(date(2024, 3, 30), 1) == date(2024, 4, 1)  # from a Saturday
    assert nth_session_after(date(2024, 3, 30), 0) == date(2024, 3, 30)
    assert next_session(date(2018, 12, 4)) == date(2018, 12, 6)
    assert session_on_or_after(date(2012, 10, 27)) == date(2012, 10, 31)
    assert session_on_or_after(date(2012, 10, 26)) == date(2012, 10, 26)
    with pytest.raises(ValueError):
        nth_session_after(date(2024, 3, 28), -1)
    a = np.array(["2012-10-26", "2024-03-04"], dtype="datetime64[D]")
    b = np.array(["2012-10-31", "2024-03-11"], dtype="datetime64[D]")
    assert sessions_between_arrays(a, b).tolist() == [1, 5]


@pytest.mark.realdata
def test_sessions_are_exactly_the_dates_of_the_real_data(shared_data: Path) -> None:
    """Every date of the 505-symbol file is a session, and every session in its range has rows."""
    df = pl.read_csv(shared_data / "daily_ohlcv_stooq_sp500.csv.gz", columns=["date"], try_parse_dates=True)
    seen = np.unique(df["date"].to_numpy().astype("datetime64[D]"))
    first, last = seen[0], seen[-1]
    one = np.timedelta64(1, "D")
    days = np.arange(first, last + one)
    sessions = days[np.is_busday(days, busdaycal=exchange_calendar())]
    assert sessions.tolist() == seen.tolist()
    years = sessions.astype("datetime64[Y]").astype(int) + 1970
    per_year = {int(y): int((years == y).sum()) for y in range(2006, 2017)}
    assert min(per_year.values()) == 250 == per_year[2012]  # README: 250-253, 2012 has Sandy
    assert max(per_year.values()) == 253


@pytest.mark.parametrize(
    ("report", "release", "reacts"),
    [
        (date(2017, 11, 2), "pre", date(2017, 11, 2)),
        (date(2017, 11, 2), "post", date(2017, 11, 3)),
        (date(2017, 11, 2), None, date(2017, 11, 2)),  # unknown: like pre
        (date(2024, 3, 28), "post", date(2024, 4, 1)),  # Thursday before Good Friday
        (date(2018, 5, 5), "pre", date(2018, 5, 7)),  # BRK.B reports on Saturdays
        (date(2018, 5, 5), "post", date(2018, 5, 7)),  # "after the close" of a Saturday: still Monday
        (date(2012, 10, 26), "post", date(2012, 10, 31)),  # Friday before Sandy
        (date(2012, 10, 29), "pre", date(2012, 10, 31)),  # during the closure
    ],
)
def test_reaction_session(report: date, release: str | None, reacts: date) -> None:
    assert reaction_session(report, release) == reacts


def test_the_shipped_closures_are_the_holidays_packages_nyse_calendar() -> None:
    # A new `holidays` release that changes the calendar must regenerate the file:
    # python -m jax_assistant.domain.sessions
    assert CLOSURES_PATH.read_text(encoding="ascii") == render_closures(closures_from_holidays())
    assert holiday_dates().tolist() == closures_from_holidays()


def test_the_calendar_loads_without_the_holidays_package() -> None:
    code = (
        "import sys\n"
        "from datetime import date\n"
        "from jax_assistant.domain.sessions import is_session\n"
        "assert not is_session(date(2012, 10, 29))  # Sandy\n"
        "print('holidays' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
