"""Memory fixtures. ``memory_backend`` is THE parametrisation the one contract suite runs over.

Legs: the embedded backend on a SQLite file and on a throwaway PostgreSQL database (PostgreSQL being
unreachable fails, never skips). The service helper adds its ``remote`` and ``hindsight`` legs by
appending to ``BACKEND_LEGS`` and handling the name in ``_open_leg``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from tests.pgutil import backend_url

from jax_assistant.config import MemoryConfig
from jax_assistant.memory import Memory
from jax_assistant.memory.embedded import EmbeddedBackend
from jax_assistant.storage import open_database

BACKEND_LEGS = [
    pytest.param("embedded-sqlite", id="embedded-sqlite"),
    pytest.param("embedded-postgres", id="embedded-postgres", marks=pytest.mark.postgres),
]


async def _open_leg(name: str, tmp_path: Path, stack: AsyncExitStack) -> Memory:
    if name.startswith("embedded-"):
        url = await stack.enter_async_context(
            backend_url(name.removeprefix("embedded-"), tmp_path, "jax_mem")
        )
        db = await open_database(url)
        stack.push_async_callback(db.close)
        memory = Memory(EmbeddedBackend(db, MemoryConfig()))
        stack.push_async_callback(memory.close)
        return memory
    raise AssertionError(f"unknown memory backend leg {name!r}")


@pytest.fixture(params=BACKEND_LEGS)
async def memory_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Memory]:
    """A ``Memory`` facade over each backend, on an empty store."""
    async with AsyncExitStack() as stack:
        yield await _open_leg(request.param, tmp_path, stack)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def memory_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of each backend, for embedded-only tests."""
    async with backend_url(request.param, tmp_path, "jax_mem") as url:
        yield url
