"""Storage fixtures, parametrised over both backends (SQLite file and throwaway PostgreSQL DB).

The postgres parameter fails (never skips) when the server is unreachable: CI requires both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.pgutil import PostgresUnavailableError, throwaway_postgres_url

from jax_assistant.storage import Database, Repository, open_database

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'jax.db'}"


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty, unmigrated database of each backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    try:
        async with throwaway_postgres_url() as url:
            yield url
    except PostgresUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await open_database(database_url)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def repo(db: Database) -> Repository:
    return Repository(db)
