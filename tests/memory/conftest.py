"""Memory fixtures. ``memory_backend`` is THE parametrisation the one contract suite runs over.

Legs: the embedded backend on a SQLite file and on a throwaway PostgreSQL database (PostgreSQL being
unreachable fails, never skips). The service helper adds its ``remote`` and ``hindsight`` legs by
appending to ``BACKEND_LEGS`` and handling the name in ``_open_leg``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from tests.pgutil import backend_url, sqlite_url

from jax_assistant.config import MemoryConfig
from jax_assistant.memory import Memory
from jax_assistant.memory.embedded import EmbeddedBackend
from jax_assistant.storage import open_database


@pytest.fixture(autouse=True)
def service_auth_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory service applies the orchestrator's API keys (on by default); these suites test memory,
    tests/memory/test_service_auth.py tests the keys (with settings that turn auth back on)."""
    monkeypatch.setenv("JAX_API__AUTH", "off")


BACKEND_LEGS = [
    pytest.param("embedded-sqlite", id="embedded-sqlite"),
    pytest.param("embedded-postgres", id="embedded-postgres", marks=pytest.mark.postgres),
    # memsvc: the jax-memory service over HTTP (its own SQLite store), and a real Hindsight, opt-in.
    pytest.param("remote", id="remote"),
    pytest.param(
        "hindsight",
        id="hindsight",
        marks=pytest.mark.skipif(not os.environ.get("HINDSIGHT_URL"), reason="set HINDSIGHT_URL to run"),
    ),
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
    if name == "remote":
        from tests.memory.svc import memory_service

        from jax_assistant.memory.remote import RemoteBackend

        svc = await stack.enter_async_context(memory_service(sqlite_url(tmp_path, "memory.db")))
        memory = Memory(RemoteBackend(svc.url, timeout_s=10.0))
        stack.push_async_callback(memory.close)
        return memory
    if name == "hindsight":
        import secrets

        from jax_assistant.memory.hindsight import HindsightBackend

        # A real server keeps its banks across tests and runs: a fresh bank prefix per test gives every
        # test its own empty namespace (``banks()`` lists only it), as the other legs' fresh stores do.
        memory = Memory(
            HindsightBackend(
                os.environ["HINDSIGHT_URL"], timeout_s=30.0, bank_prefix=f"jaxt{secrets.token_hex(4)}_"
            )
        )
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
