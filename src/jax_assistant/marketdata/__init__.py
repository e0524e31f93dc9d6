"""Market data: the provider interface, the CSV provider for real data, and the simulated sample.

``create_provider("sample")`` needs no files (a clearly labelled SIMULATED market, ``*.SIM`` tickers);
``create_provider("csv", path)`` reads real daily bars from a long-format file or a folder of files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from jax_assistant.marketdata.base import (
    AsOfClock,
    BarSeries,
    DataIssue,
    DataSourceError,
    EarningsReport,
    MarketDataError,
    MarketDataProvider,
    UnknownSymbolError,
)
from jax_assistant.marketdata.calendar import load_earnings_calendar, load_earnings_reports, load_sectors
from jax_assistant.marketdata.csv_provider import CsvProvider
from jax_assistant.marketdata.sample import SAMPLE_LAST_SESSION, SAMPLE_UNIVERSE, SampleProvider, SimSymbol
from jax_assistant.marketdata.validation import BadSymbolError, clean_series

__all__ = [
    "PROVIDER_KINDS",
    "SAMPLE_LAST_SESSION",
    "SAMPLE_UNIVERSE",
    "AsOfClock",
    "BadSymbolError",
    "BarSeries",
    "CsvProvider",
    "DataIssue",
    "DataSourceError",
    "EarningsReport",
    "MarketDataError",
    "MarketDataProvider",
    "SampleProvider",
    "SimSymbol",
    "UnknownSymbolError",
    "clean_series",
    "create_provider",
    "load_earnings_calendar",
    "load_earnings_reports",
    "load_sectors",
]

PROVIDER_KINDS = ("sample", "csv")


def create_provider(
    kind: str,
    data_path: Path | str | None = None,
    *,
    earnings_path: Path | str | None = None,
    sectors_path: Path | str | None = None,
    symbols: Iterable[str] | None = None,
) -> MarketDataProvider:
    """Build a provider by name: ``"sample"`` (simulated, no files) or ``"csv"`` (needs ``data_path``).

    Raises ValueError for an unknown kind and DataSourceError when "csv" has no path or cannot be read.
    The sample ignores the path arguments: it is generated, and labelled ``simulated``.
    """
    k = kind.strip().lower()
    if k == "sample":
        return SampleProvider()
    if k == "csv":
        if data_path is None:
            raise DataSourceError(
                "the csv provider needs a data path: a long-format CSV (symbol,date,open,high,low,close,"
                "volume; plain or .gz) or a folder of per-symbol CSV files"
            )
        return CsvProvider(data_path, earnings_path=earnings_path, sectors_path=sectors_path, symbols=symbols)
    raise ValueError(f"unknown market data provider {kind!r}; valid kinds: {', '.join(PROVIDER_KINDS)}")
