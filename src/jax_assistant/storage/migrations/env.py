"""Alembic environment for the bundled migrations.

Normally ``jax_assistant.storage.db.migrate`` runs the upgrade on a connection it already holds
(inside its locked transaction) and passes it in ``config.attributes["connection"]``. Invoked any
other way (say an ``alembic`` command line whose config sets ``sqlalchemy.url``), this opens an
async engine itself and runs the migrations in one transaction through ``connection.run_sync``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from jax_assistant.storage.db import build_engine, write_transaction
from jax_assistant.storage.tables import Base

config = context.config
target_metadata = Base.metadata


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds tables for future migrations.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    # Inside a caller's transaction Alembic joins it; otherwise it opens and commits its own.
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    engine = build_engine(url, for_migrations=True)
    try:
        async with write_transaction(engine) as connection:
            await connection.run_sync(_configure_and_run)
    finally:
        await engine.dispose()


def _run_offline(url: str) -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    shared = config.attributes.get("connection")
    if shared is not None:
        _configure_and_run(shared)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection passed and no sqlalchemy.url set for the migrations")
    if context.is_offline_mode():
        _run_offline(url)
    else:
        asyncio.run(_run_with_own_engine(url))


_main()
