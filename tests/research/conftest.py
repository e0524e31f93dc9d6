"""Research fixtures: a real-data extract, fake providers on loopback, and an orchestrator runner.

The run used throughout (20 real S&P 500 symbols, as of 2017-11-03, lookback 5) allocates setups for
7 symbols (XOM, JPM, BA, WMT, IBM, JNJ, MCD) under the shipped constraints: enough to batch, trip a
breaker and spend a budget.
"""

from __future__ import annotations

import csv
import gzip
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.dexter import FakeDexter
from tests.fakes.openai import FakeOpenAI
from tests.pgutil import backend_url

from jax_assistant.config import Settings, load_settings
from jax_assistant.domain import SymbolResult, TradeRecord
from jax_assistant.orchestrator import Orchestrator, RunOutcome, RunRequest

SYMBOLS = [
    *("AAPL", "MSFT", "AMZN", "NFLX", "JPM", "EIX", "XOM", "KO", "PG", "JNJ"),
    *("WMT", "CAT", "BA", "GE", "IBM", "INTC", "MCD", "CVX", "PFE", "T"),
]
ALLOCATED = {"XOM", "JPM", "BA", "WMT", "IBM", "JNJ", "MCD"}
AS_OF = date(2017, 11, 3)
LOOKBACK = 5

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session")
def research_data(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    folder = tmp_path_factory.mktemp("research_real")
    target = folder / "bars.csv.gz"
    wanted = set(SYMBOLS)
    with (
        gzip.open(shared_data / "daily_ohlcv_stooq_sp500.csv.gz", "rt", newline="") as src,
        gzip.open(target, "wt", newline="") as dst,
    ):
        reader, writer = csv.reader(src), csv.writer(dst)
        writer.writerow(next(reader))
        for row in reader:
            if row[0] in wanted:
                writer.writerow(row)
    for name in ("earnings_dates.csv", "earnings_details.csv", "sectors.csv"):
        shutil.copy(shared_data / name, folder / name)
    return target


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with backend_url(request.param, tmp_path, prefix="jax_research") as url:
        yield url


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[str]:
    async with backend_url("sqlite", tmp_path) as url:
        yield url


@pytest.fixture
def dexter() -> Iterator[FakeDexter]:
    with FakeDexter() as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server  # type: ignore[misc]


def make_settings(data: Path, db: str, research: dict[str, Any], **extra: Any) -> Settings:
    extra.setdefault("metrics_enabled", False)
    return load_settings(provider="csv", data_path=data, database_url=db, research=research, **extra)


@dataclass
class Ran:
    outcome: RunOutcome

    @property
    def results(self) -> list[SymbolResult]:
        return self.outcome.results

    def by_symbol(self) -> dict[str, SymbolResult]:
        return {r.symbol: r for r in self.outcome.results}

    def allocated(self) -> list[TradeRecord]:
        return [t for r in self.results for t in r.trades if t.risk.allowed]

    def not_allocated(self) -> list[TradeRecord]:
        return [t for r in self.results for t in r.trades if not t.risk.allowed]


async def run_once(
    orch: Orchestrator, symbols: list[str] | tuple[str, ...] = SYMBOLS, correlation_id: str | None = None
) -> Ran:
    outcome = await orch.start_run(
        RunRequest(symbols=list(symbols), as_of=AS_OF, lookback=LOOKBACK, correlation_id=correlation_id)
    )
    return Ran(outcome)
