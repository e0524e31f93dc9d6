"""Learning fixtures: both storage backends and a real-data provider limited to a few symbols."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.pgutil import backend_url

from jax_assistant.marketdata import CsvProvider
from jax_assistant.storage import Database, Repository, open_database

SP500 = "daily_ohlcv_stooq_sp500.csv.gz"
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="module")
def aapl(shared_data: Path) -> CsvProvider:
    """Real AAPL/MSFT bars (the outcome rules are hand-checked against them)."""
    return CsvProvider(shared_data / SP500, symbols=["AAPL", "MSFT"])


@pytest.fixture(params=BACKENDS)
async def repo(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Repository]:
    async with backend_url(request.param, tmp_path) as url:
        db: Database = await open_database(url)
        try:
            yield Repository(db)
        finally:
            await db.close()
