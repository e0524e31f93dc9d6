"""The market-data provider interface, the bar series it returns and the as-of clock.

Bars are held as numpy arrays (one per column) because every consumer — the detectors, the
indicators, the strategies — is vectorised; a list of pydantic ``Bar`` objects per session would be
two orders of magnitude slower on 1.5 M rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from datetime import date
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from jax_assistant.domain import Bar
from jax_assistant.domain.errors import DataError

FloatArray = npt.NDArray[np.float64]
DateArray = npt.NDArray[np.datetime64]


class MarketDataError(DataError):
    """Base class of market-data errors (clear, user-facing messages)."""


class UnknownSymbolError(MarketDataError, KeyError):
    symbol: str  # always known here (DataError allows None)

    def __init__(self, symbol: str, hint: str = "") -> None:
        self.symbol = symbol
        super().__init__(f"unknown symbol {symbol!r}" + (f": {hint}" if hint else ""), symbol=symbol)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DataSourceError(MarketDataError):
    """The data source itself could not be read (missing file, unreadable, wrong columns)."""


@dataclass(frozen=True)
class DataIssue:
    """One problem found in the raw data and what was done about it."""

    symbol: str
    date: date | None
    rule: str  # e.g. "nan_price", "non_positive_price", "high_below_low", "duplicate_date", "missing_days"
    detail: str
    action: str = "row skipped"  # or "symbol skipped", "reported"

    def __str__(self) -> str:
        when = f" {self.date.isoformat()}" if self.date else ""
        return f"{self.symbol}{when}: {self.rule} ({self.detail}) -> {self.action}"


ReleaseTime = Literal["pre", "post"]


class EarningsReport(BaseModel):
    """One earnings report: its date and, when known, whether it came before the open or after the close.

    ``release_time`` decides the reaction session (``domain.sessions.reaction_sessions``): ``pre`` (and
    unknown) reacts on the report date, ``post`` on the next session. ``eps``/``eps_estimate`` are
    what the report said and what was expected, when the source has them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    date: dt.date
    release_time: ReleaseTime | None = None
    eps_estimate: float | None = None
    eps: float | None = None


@dataclass(frozen=True)
class BarSeries:
    """Clean daily bars of one symbol, ascending by date, no duplicates, positive finite prices."""

    symbol: str
    dates: DateArray  # datetime64[D]
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    issues: tuple[DataIssue, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.dates.shape[0])

    @property
    def last_date(self) -> date | None:
        return None if len(self) == 0 else self.date_at(len(self) - 1)

    def date_at(self, i: int) -> date:
        return self.dates[i].astype("datetime64[D]").item()  # type: ignore[no-any-return]

    def upto(self, as_of: date) -> BarSeries:
        """Only the bars on or before ``as_of`` (no look-ahead)."""
        n = int(np.searchsorted(self.dates, np.datetime64(as_of, "D"), side="right"))
        if n == len(self):
            return self
        return BarSeries(
            self.symbol,
            self.dates[:n],
            self.open[:n],
            self.high[:n],
            self.low[:n],
            self.close[:n],
            self.volume[:n],
            tuple(i for i in self.issues if i.date is None or i.date <= as_of),
        )

    def bar(self, i: int) -> Bar:
        return Bar(
            symbol=self.symbol,
            date=self.date_at(i),
            open=float(self.open[i]),
            high=float(self.high[i]),
            low=float(self.low[i]),
            close=float(self.close[i]),
            volume=float(self.volume[i]),
        )


@runtime_checkable
class MarketDataProvider(Protocol):
    """Where bars, earnings dates and sectors come from.

    ``bars`` never returns a bar after ``as_of``: replaying any past date sees exactly what a trader
    would have seen at that session's close.
    """

    name: str
    simulated: bool  # True only for the bundled simulated market; shown in every output

    def symbols(self) -> list[str]: ...

    def latest_date(self) -> date: ...

    def bars(self, symbol: str, as_of: date | None = None) -> BarSeries:
        """Clean bars up to ``as_of`` (inclusive). Raises UnknownSymbolError, DataSourceError."""
        ...

    def earnings_dates(self, symbol: str) -> list[date]: ...

    def earnings_reports(self, symbol: str) -> list[EarningsReport]:
        """The symbol's reports by date, with release time (pre/post market) where known."""
        ...

    def sector(self, symbol: str) -> str | None: ...

    def issues(self, symbol: str | None = None) -> list[DataIssue]:
        """Data problems found and handled (per symbol, or all)."""
        ...


@dataclass(frozen=True)
class AsOfClock:
    """The replay clock: 'now' is the close of ``as_of``. Everything downstream reads time from here."""

    as_of: date

    def today(self) -> date:
        return self.as_of
