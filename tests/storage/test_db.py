"""URL resolution, engine settings and the Database handle."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from jax_assistant.storage import Database, open_database, resolve_database_url
from jax_assistant.storage.db import build_engine, normalise_database_url

ENV_VARS = ("JAX_DATABASE_URL", "DATABASE_URL", "JAX_DATA_DIR")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    # Never touch the real ~/.local/share from tests.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_explicit_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAX_DATABASE_URL", "postgresql://a@h/jax")
    monkeypatch.setenv("DATABASE_URL", "postgresql://b@h/other")
    assert resolve_database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"


def test_jax_database_url_beats_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAX_DATABASE_URL", "postgresql://a@h/jax")
    monkeypatch.setenv("DATABASE_URL", "postgresql://b@h/other")
    assert resolve_database_url() == "postgresql+asyncpg://a@h/jax"


def test_database_url_used_when_jax_variable_missing_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAX_DATABASE_URL", "")
    monkeypatch.setenv("DATABASE_URL", "postgres://b:pw@h:6543/other")
    assert resolve_database_url() == "postgresql+asyncpg://b:pw@h:6543/other"


def test_default_is_sqlite_in_jax_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data_dir = tmp_path / "data" / "nested"
    monkeypatch.setenv("JAX_DATA_DIR", str(data_dir))
    assert resolve_database_url() == f"sqlite+aiosqlite:///{data_dir / 'jax.db'}"
    assert data_dir.is_dir()


def test_default_data_dir_is_under_home(tmp_path: Path) -> None:
    expected = tmp_path / "home" / ".local" / "share" / "jax-assistant"
    assert resolve_database_url() == f"sqlite+aiosqlite:///{expected / 'jax.db'}"
    assert expected.is_dir()


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("postgres://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("postgresql://u@h:5433/db", "postgresql+asyncpg://u@h:5433/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///rel/jax.db", "sqlite+aiosqlite:///rel/jax.db"),
        ("sqlite:////abs/jax.db", "sqlite+aiosqlite:////abs/jax.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgres://u@h/db?sslmode=require", "postgresql+asyncpg://u@h/db?ssl=require"),
    ],
)
def test_normalisation(raw: str, normalised: str) -> None:
    assert normalise_database_url(raw) == normalised
    assert resolve_database_url(raw) == normalised


def test_rejects_non_url() -> None:
    with pytest.raises(ValueError, match="not a database URL"):
        resolve_database_url("jax.db")


async def test_password_is_masked() -> None:
    db = Database(build_engine("postgres://jax:s3cret@db.example:5432/jax"))
    try:
        for rendered in (repr(db), str(db), str(db.url), repr(db.url)):
            assert "s3cret" not in rendered
        assert "***" in repr(db)
        assert db.dialect == "postgresql"
    finally:
        await db.close()


async def test_sqlite_connection_settings(tmp_path: Path) -> None:
    async with await open_database(f"sqlite:///{tmp_path / 'jax.db'}") as db, db.engine.connect() as conn:
        assert (await conn.scalar(text("PRAGMA journal_mode"))) == "wal"
        assert (await conn.scalar(text("PRAGMA foreign_keys"))) == 1
        assert (await conn.scalar(text("PRAGMA busy_timeout"))) >= 1000
        # FAST (2), on the writer thread's connection too: see _install_sqlite_hooks.
        assert (await conn.scalar(text("PRAGMA secure_delete"))) == 2
        assert db.sync_writer is not None
        with db.sync_writer.connect() as sync:
            assert sync.exec_driver_sql("PRAGMA secure_delete").scalar() == 2


async def test_in_memory_sqlite_is_migrated() -> None:
    async with await open_database("sqlite://") as db, db.engine.connect() as conn:
        assert (await conn.scalar(text("SELECT count(*) FROM runs"))) == 0


async def test_default_database_is_created_in_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JAX_DATA_DIR", str(tmp_path / "d"))
    async with await open_database() as db:
        assert db.dialect == "sqlite"
    assert (tmp_path / "d" / "jax.db").is_file()
