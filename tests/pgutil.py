"""Throwaway PostgreSQL databases for tests (importable as ``tests.pgutil`` from any test folder).

``throwaway_postgres_url()`` creates a fresh, empty database on the test server, yields its
SQLAlchemy URL (``postgresql+asyncpg://...``) and drops it (``WITH (FORCE)``) afterwards. The
server is ``$JAX_TEST_PG_ADMIN_URL``, by default ``postgresql://postgres@127.0.0.1:5432/test``;
the admin connection only issues CREATE/DROP DATABASE.

Unreachable servers raise ``PostgresUnavailableError`` with a readable message: callers should
fail the test with it, not skip, because CI requires both backends.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import make_url

ADMIN_URL_ENV = "JAX_TEST_PG_ADMIN_URL"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT_S = 5.0


class PostgresUnavailableError(RuntimeError):
    """The test PostgreSQL server could not be reached."""


def admin_url() -> str:
    return os.environ.get(ADMIN_URL_ENV) or DEFAULT_ADMIN_URL


async def _admin_connection() -> asyncpg.Connection:
    url = admin_url()
    # asyncpg wants a libpq-style DSN, without SQLAlchemy's "+driver" suffix.
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        masked = make_url(url).render_as_string(hide_password=True)
        raise PostgresUnavailableError(
            f"PostgreSQL is required for the 'postgres' backend tests but {masked} is unreachable "
            f"({type(exc).__name__}: {exc}). Start the server or point {ADMIN_URL_ENV} at one."
        ) from exc


async def create_database(name: str) -> None:
    conn = await _admin_connection()
    try:
        for attempt in range(5):
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
                return
            except asyncpg.ObjectInUseError:
                # Another session briefly holds template1 (e.g. a parallel worker); try again.
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
    finally:
        await conn.close()


async def drop_database(name: str) -> None:
    conn = await _admin_connection()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def throwaway_postgres_url(prefix: str = "jax_test") -> AsyncIterator[str]:
    """A new empty database for the duration of the block; yields its async SQLAlchemy URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    await create_database(name)
    url = make_url(admin_url()).set(drivername="postgresql+asyncpg", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        await drop_database(name)


def sqlite_url(directory: Path, name: str = "jax.db") -> str:
    return f"sqlite+aiosqlite:///{directory / name}"


@asynccontextmanager
async def backend_url(backend: str, tmp_path: Path, prefix: str = "jax_test") -> AsyncIterator[str]:
    """An empty database of ``backend`` ("sqlite" file in tmp_path, or a throwaway PostgreSQL one).

    PostgreSQL being unreachable FAILS the test (never skips): CI requires both backends.
    """
    if backend == "sqlite":
        yield sqlite_url(tmp_path)
        return
    try:
        async with throwaway_postgres_url(prefix) as url:
            yield url
    except PostgresUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)
