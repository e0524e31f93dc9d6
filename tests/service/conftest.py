"""Both storage backends for the key store (postgres fails, never skips, when unreachable)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.pgutil import backend_url

from jax_assistant.storage import Database, open_database

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with backend_url(request.param, tmp_path) as url:
        database = await open_database(url)
        try:
            yield database
        finally:
            await database.close()
