"""Fixtures for the API suite: an isolated SQLite database per test and a live service on loopback."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from tests.api.helpers import GateStage, Service, serve

from jax_assistant.api import create_app
from jax_assistant.config import DEFAULT_PIPELINE, Settings
from jax_assistant.observability import logging as obs_logging
from jax_assistant.observability.logging import _HANDLER_MARK
from jax_assistant.pipeline import plugins
from jax_assistant.pipeline.stages import BUILTIN_STAGES


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No jax.toml from the working directory and no JAX_* / PORT variables from the caller leak in."""
    for key in list(os.environ):
        if key.startswith("JAX_") or key in ("DATABASE_URL", "PORT"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("JAX_DATA_DIR", str(tmp_path / "data"))
    # Auth is on by default; these suites test the routes, tests/api/test_auth.py tests the keys.
    # In-process clients use made-up hosts (http://api); tests/api/test_limits.py tests the host check.
    monkeypatch.setenv("JAX_API__AUTH", "off")
    monkeypatch.setenv("JAX_API__TRUSTED_HOSTS", '["*"]')
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The process's logging as it was: tests that configure structlog and the queue listener undo it."""
    root = logging.getLogger()
    level = root.level
    yield
    obs_logging._stop_listener()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url)


@pytest.fixture
def gated_settings(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose pipeline ends in the ``gate`` stage (discoverable like an installed plugin)."""
    GateStage.reset()
    monkeypatch.setattr(plugins, "discover_stage_factories", lambda: {**BUILTIN_STAGES, "gate": GateStage})
    yield Settings(database_url=database_url, pipeline=[*DEFAULT_PIPELINE, "gate"])
    GateStage.opened.set()  # never leave a run blocked behind a closed gate


@pytest.fixture
def api_headers() -> dict[str, str]:
    """Headers every route test sends: the one place to add an API key once routes require one."""
    return {}


@pytest.fixture
async def service(settings: Settings, api_headers: dict[str, str]) -> AsyncIterator[Service]:
    async with serve(create_app(settings), headers=api_headers) as svc:
        yield svc
