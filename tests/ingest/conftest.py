"""Ingest fixtures: a clean environment and a database of each backend."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.pgutil import backend_url


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("JAX_") or key in ("DATABASE_URL", "PORT"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("JAX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with backend_url(request.param, tmp_path) as url:
        yield url
