"""Fixtures for the engine suite: a fake clock, real storage (SQLite file and throwaway PostgreSQL),
test stages registered by name for the Orchestrator, and an environment free of stray JAX_* settings.

The postgres parameter fails (never skips) when the server is unreachable: CI requires both backends.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.engines.helpers import BACKENDS
from tests.pgutil import backend_url, sqlite_url

from jax_assistant.pipeline import plugins
from jax_assistant.pipeline.resilience import FakeClock
from jax_assistant.pipeline.stages import BUILTIN_STAGES
from jax_assistant.storage import Repository, open_database


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_000.0)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No jax.toml from the working directory and no JAX_* variables from the caller leak in."""
    for key in list(os.environ):
        if key.startswith("JAX_") or key == "DATABASE_URL":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("JAX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of each backend (migrated when opened)."""
    async with backend_url(request.param, tmp_path, "jax_engine_test") as url:
        yield url


@pytest.fixture
async def repository(database_url: str) -> AsyncIterator[Repository]:
    db = await open_database(database_url)
    try:
        yield Repository(db)
    finally:
        await db.close()


@pytest.fixture
async def sqlite_repository(tmp_path: Path) -> AsyncIterator[Repository]:
    db = await open_database(sqlite_url(tmp_path, "engine.db"))
    try:
        yield Repository(db)
    finally:
        await db.close()


@pytest.fixture
def register_stages(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """``register_stages(name=factory, ...)``: make test stages discoverable by name, the way installed
    plugins are, so the Orchestrator builds and validates them through its real code path."""
    extra: dict[str, Any] = {}
    monkeypatch.setattr(plugins, "discover_stage_factories", lambda: {**BUILTIN_STAGES, **extra})

    def register(**factories: Any) -> None:
        extra.update(factories)

    yield register
