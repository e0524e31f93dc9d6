"""The NYSE trading calendar: which days are sessions, and session arithmetic over them.

Sessions are weekdays minus the exchange's holidays and special closures (2001-09-11..14,
2004-06-11 Reagan, 2007-01-02 Ford, 2012-10-29/30 Sandy, 2018-12-05 Bush, the 1968 paperwork-crisis
Wednesdays, ...), taken from the ``holidays`` package's NYSE calendar. Everything is vectorised on
numpy's business-day functions with that holiday list, so a whole series of dates costs one call.

The closures ship as a generated list (``nyse_closures.txt``): importing ``holidays`` and computing
126 years of its NYSE calendar took ~0.18 s of every `jax run`. Regenerate it when the ``holidays``
package changes (a test compares the two)::

    python -m jax_assistant.domain.sessions

Years outside :data:`CALENDAR_YEARS` are plain weekdays (no holiday data is claimed for them).
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "CALENDAR_YEARS",
    "exchange_calendar",
    "holiday_dates",
    "is_session",
    "next_session",
    "nth_session_after",
    "reaction_session",
    "reaction_sessions",
    "session_on_or_after",
    "sessions_between",
    "sessions_between_arrays",
]

CALENDAR_YEARS = range(1950, 2076)
CLOSURES_PATH: Final = Path(__file__).resolve().with_name("nyse_closures.txt")


@lru_cache(maxsize=1)
def holiday_dates() -> npt.NDArray[np.datetime64]:
    """Sorted NYSE full-day closures (holidays and special closures) as ``datetime64[D]``."""
    days = CLOSURES_PATH.read_text(encoding="ascii").split()
    return np.array(days, dtype="datetime64[D]")


def closures_from_holidays() -> list[date]:
    """The weekday closures of :data:`CALENDAR_YEARS` in the ``holidays`` package's NYSE calendar."""
    import holidays  # only to regenerate CLOSURES_PATH (and in its test)

    nyse = holidays.financial_holidays("NYSE", years=CALENDAR_YEARS)
    return sorted(d for d in nyse if d.weekday() < 5)


def render_closures(days: list[date]) -> str:
    return "".join(f"{d.isoformat()}\n" for d in days)


@lru_cache(maxsize=1)
def exchange_calendar() -> np.busdaycalendar:
    """A numpy business-day calendar of NYSE sessions (Mon-Fri minus :func:`holiday_dates`)."""
    return np.busdaycalendar(weekmask="1111100", holidays=holiday_dates())


def _d(x: date) -> Any:
    return np.datetime64(x, "D")


def _out(x: Any) -> date:
    out: date = np.asarray(x, dtype="datetime64[D]").item()
    return out


def is_session(day: date) -> bool:
    """True when the exchange is open on ``day``."""
    return bool(np.is_busday(_d(day), busdaycal=exchange_calendar()))


def sessions_between(start: date, end: date) -> int:
    """Sessions in ``(start, end]`` (0 when ``end <= start``)."""
    if end <= start:
        return 0
    one = np.timedelta64(1, "D")
    return int(np.busday_count(_d(start) + one, _d(end) + one, busdaycal=exchange_calendar()))


def sessions_between_arrays(start: npt.NDArray[Any], end: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """Element-wise :func:`sessions_between` over two ``datetime64[D]`` arrays (negative if end < start)."""
    one = np.timedelta64(1, "D")
    a = np.asarray(start, dtype="datetime64[D]") + one
    b = np.asarray(end, dtype="datetime64[D]") + one
    return np.busday_count(a, b, busdaycal=exchange_calendar()).astype(np.int64)


def nth_session_after(start: date, n: int) -> date:
    """The ``n``-th session after ``start`` (``start`` itself for ``n == 0``; ``start`` need not be one)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return start
    # Rolling a non-session back to the previous session makes "1 after a Saturday" the Monday.
    return _out(np.busday_offset(_d(start), n, roll="backward", busdaycal=exchange_calendar()))


def next_session(day: date) -> date:
    """The first session strictly after ``day``."""
    return nth_session_after(day, 1)


def session_on_or_after(day: date | npt.NDArray[Any]) -> Any:
    """``day`` if it is a session, else the next one; element-wise for a ``datetime64[D]`` array."""
    if isinstance(day, np.ndarray):
        arr = day.astype("datetime64[D]")
        return np.busday_offset(arr, 0, roll="forward", busdaycal=exchange_calendar())
    return _out(np.busday_offset(_d(day), 0, roll="forward", busdaycal=exchange_calendar()))


def reaction_sessions(report_dates: npt.NDArray[Any], after_close: npt.NDArray[np.bool_]) -> npt.NDArray[Any]:
    """The session that first trades on each earnings report (element-wise, ``datetime64[D]``).

    A report before the open (or of unknown time) reacts on its own date when that is a session,
    else on the next one (a Saturday report on Monday); a report after the close reacts on the
    next session after its date.
    """
    d = np.asarray(report_dates, dtype="datetime64[D]")
    cal = exchange_calendar()
    same_day = np.busday_offset(d, 0, roll="forward", busdaycal=cal)
    # Rolling back first makes "the session after a Saturday" the Monday, not the Tuesday.
    next_day = np.busday_offset(d, 1, roll="backward", busdaycal=cal)
    return np.where(np.asarray(after_close, dtype=np.bool_), next_day, same_day)


def reaction_session(report_date: date, release_time: str | None) -> date:
    """:func:`reaction_sessions` for one report (``release_time`` ``"pre"``, ``"post"`` or None)."""
    out = reaction_sessions(
        np.array([report_date], dtype="datetime64[D]"), np.array([release_time == "post"])
    )
    return _out(out[0])


if __name__ == "__main__":
    CLOSURES_PATH.write_text(render_closures(closures_from_holidays()), encoding="ascii")
    print(f"wrote {CLOSURES_PATH}")
