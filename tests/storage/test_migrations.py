"""The bundled Alembic migrations: they build the schema, match the models and re-run harmlessly."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from tests.pgutil import sqlite_url
from tests.storage.factories import make_run

from jax_assistant.domain import RunStatus
from jax_assistant.storage import Repository, open_database
from jax_assistant.storage.db import (
    HEAD_REVISION,
    MIGRATIONS_DIR,
    _migrate_with,
    alembic_config,
    build_engine,
    migrate,
)
from jax_assistant.storage.snapshot import SNAPSHOT_PATH, build_snapshot, render
from jax_assistant.storage.tables import ALL_TABLES, UNMODELLED_NAMES, Base

HEAD = "0008_outcomes"


def _schema(conn: Connection) -> dict[str, Any]:
    insp = inspect(conn)
    return {
        name: (
            [c["name"] for c in insp.get_columns(name)],
            sorted(i["name"] or "" for i in insp.get_indexes(name)),
            sorted(u["name"] or "" for u in insp.get_unique_constraints(name)),
        )
        for name in insp.get_table_names()
        if name not in UNMODELLED_NAMES
    }


def _version(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(
        conn,
        opts={"compare_type": True, "include_name": lambda name, *_: name not in UNMODELLED_NAMES},
    )
    return list(compare_metadata(ctx, Base.metadata))


async def _inspect(url: str, fn: Any) -> Any:
    engine = build_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def test_migrations_ship_inside_the_package() -> None:
    assert MIGRATIONS_DIR.parent == Path(__import__("jax_assistant.storage").storage.__file__).parent
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert heads == [HEAD] == [HEAD_REVISION]  # a new migration must move HEAD_REVISION too


# A fresh process opening a database: is Alembic ever loaded?
_OPEN = """
import asyncio, sys
from jax_assistant.storage import open_database
async def main():
    db = await open_database(sys.argv[1])
    await db.close()
asyncio.run(main())
print("alembic" in sys.modules)
"""


async def _opens_with_alembic(url: str) -> bool:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _OPEN, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode().strip() == "True"


async def test_a_database_at_head_opens_without_alembic(database_url: str) -> None:
    await migrate(database_url, "0002_symbol_extras")
    assert await _opens_with_alembic(database_url)  # behind: migrated
    assert await _inspect(database_url, _version) == HEAD
    assert not await _opens_with_alembic(database_url)  # at head: nothing to load or run
    assert await _inspect(database_url, _diff) == []


def test_the_shipped_sqlite_schema_is_what_the_migrations_build() -> None:
    # A new migration must regenerate it: python -m jax_assistant.storage.snapshot
    built = build_snapshot()
    assert built.revision == HEAD_REVISION
    assert SNAPSHOT_PATH.read_text(encoding="utf-8") == render(built)


def _dump(path: Path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return list(con.iterdump())
    finally:
        con.close()


async def test_a_new_sqlite_file_gets_the_schema_alembic_would_build_without_alembic(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    fresh, by_alembic = tmp_path / "a" / "jax.db", tmp_path / "b" / "jax.db"
    assert not await _opens_with_alembic(sqlite_url(tmp_path / "a"))  # built from the snapshot
    engine = build_engine(sqlite_url(tmp_path / "b"), for_migrations=True)
    try:
        await _migrate_with(engine, "head")  # every migration, as before the snapshot
    finally:
        await engine.dispose()
    assert _dump(fresh) == _dump(by_alembic)  # tables, indexes, FTS5 and triggers, version row, rows
    assert await _inspect(sqlite_url(tmp_path / "a"), _diff) == []
    # ...and the full-text triggers work on it.
    db = await open_database(sqlite_url(tmp_path / "a"))
    await db.close()
    con = sqlite3.connect(fresh)
    try:
        assert con.execute("SELECT count(*) FROM memories_fts").fetchone() == (0,)
    finally:
        con.close()


async def test_a_sqlite_file_that_holds_anything_is_left_to_alembic(tmp_path: Path) -> None:
    path = tmp_path / "jax.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE notes (body TEXT)")
    con.close()
    assert await _opens_with_alembic(sqlite_url(tmp_path))  # not empty: the snapshot does not apply
    assert await _inspect(sqlite_url(tmp_path), _version) == HEAD


async def test_an_in_memory_database_gets_the_same_schema() -> None:
    db = await open_database("sqlite+aiosqlite:///:memory:")
    try:
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_version) == HEAD
            assert await conn.run_sync(_diff) == []
    finally:
        await db.close()


async def test_upgrade_creates_every_table(database_url: str) -> None:
    await migrate(database_url)
    schema = await _inspect(database_url, _schema)
    assert set(ALL_TABLES) | {"alembic_version"} == set(schema)
    assert await _inspect(database_url, _version) == HEAD


async def test_migrated_schema_matches_the_models(database_url: str) -> None:
    await migrate(database_url)
    assert await _inspect(database_url, _diff) == []


async def test_rerunning_upgrade_is_a_no_op(database_url: str) -> None:
    db = await open_database(database_url)
    await Repository(db).create_run(make_run(), lease_owner="me", lease_ttl_s=600)
    await db.close()
    before = await _inspect(database_url, _schema)

    await migrate(database_url)
    db = await open_database(database_url)  # open_database migrates again
    try:
        assert await Repository(db).get_run("run-1") == make_run()
    finally:
        await db.close()
    assert await _inspect(database_url, _schema) == before
    assert await _inspect(database_url, _version) == HEAD


async def test_concurrent_upgrades_in_one_process(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = sqlite_url(tmp_path / "other")
    # Same database several times plus a second database: Alembic's global context must not mix.
    await asyncio.gather(*(migrate(database_url) for _ in range(4)), migrate(other))
    for url in (database_url, other):
        assert await _inspect(url, _version) == HEAD
        assert await _inspect(url, _diff) == []


# Imports first, then every process sleeps until the same instant so the upgrades truly overlap.
_MIGRATE_AT = """
import asyncio, sys, time
from jax_assistant.storage.db import migrate
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
asyncio.run(migrate(sys.argv[1]))
"""


@pytest.mark.slow
async def test_processes_starting_together_migrate_once(database_url: str) -> None:
    start_at = str(time.time() + 2.0)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _MIGRATE_AT,
            database_url,
            start_at,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    assert await _inspect(database_url, _version) == HEAD
    assert await _inspect(database_url, _diff) == []


async def test_migrations_can_run_without_a_shared_connection(database_url: str) -> None:
    # The path the alembic command line takes: env.py opens its own engine from sqlalchemy.url.
    from alembic import command

    await asyncio.to_thread(command.upgrade, alembic_config(database_url), "head")
    assert await _inspect(database_url, _version) == HEAD
    rows = await _inspect(database_url, lambda c: c.execute(text("SELECT count(*) FROM runs")).scalar())
    assert rows == 0


async def test_upgrade_from_0001_keeps_existing_symbol_results(database_url: str) -> None:
    """Rows written under the first schema survive the upgrade and read back with empty extras."""
    await migrate(database_url, "0001_initial")
    engine = build_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "insert into runs (id, status, correlation_id, started_at, provider, simulated, symbols,"
                    " pipeline, params, counts) values ('r1', 'completed', 'c', CURRENT_TIMESTAMP, 'csv',"
                    " false, '[]', '[]', '{}', '{}')"
                )
            )
            await conn.execute(
                text(
                    "insert into symbol_results (run_id, symbol, status, data_issues, stages, event_ids,"
                    " trade_ids, updated_at) values ('r1', 'AAPL', 'succeeded', '[]', '[]', '[]', '[]',"
                    " CURRENT_TIMESTAMP)"
                )
            )
    finally:
        await engine.dispose()
    db = await open_database(database_url)
    try:
        [result] = await Repository(db).get_symbol_results("r1")
        assert result.symbol == "AAPL" and result.extras == {}
    finally:
        await db.close()
    assert await _inspect(database_url, _version) == HEAD


async def test_upgrade_from_0002_backfills_decisions_and_leaves_old_runs_interrupted(
    database_url: str,
) -> None:
    """Runs stored before per-run decisions still show their setups' sizes after the upgrade, and a
    run left `running` then (no lease yet) reads as interrupted, so it can be resumed."""
    await migrate(database_url, "0002_symbol_extras")
    risk = (
        '{"position_size": 12, "risk_per_unit": 5.0, "total_risk": 60.0, "r_multiple": 2.0,'
        ' "risk_percent": 3.0, "account_size": 10000.0, "constraints": {"allowed": true, "reason": "",'
        ' "violations": [], "adjustments": [], "risk_metrics": {}}}'
    )
    setup = (
        '{"id": "s-1", "symbol": "AAPL", "direction": "long", "entry": 100.0, "stop": 95.0,'
        ' "targets": [110.0], "strategy_id": "gap", "confidence": 0.5, "time": "2024-03-01T00:00:00Z"}'
    )
    engine = build_engine(database_url)
    try:
        async with engine.begin() as conn:
            for run_id, status in (("r1", "completed"), ("r2", "running")):
                await conn.execute(
                    text(
                        "insert into runs (id, status, correlation_id, started_at, provider, simulated,"
                        " symbols, pipeline, params, counts) values (:id, :status, 'c', CURRENT_TIMESTAMP,"
                        " 'csv', false, '[]', '[]', '{}', '{}')"
                    ),
                    {"id": run_id, "status": status},
                )
                await conn.execute(
                    text(
                        "insert into symbol_results (run_id, symbol, status, data_issues, stages, event_ids,"
                        " trade_ids, updated_at) values (:id, 'AAPL', 'succeeded', '[]', '[]', '[]',"
                        ' \'["s-1", "gone"]\', CURRENT_TIMESTAMP)'
                    ),
                    {"id": run_id},
                )
            await conn.execute(
                text(
                    "insert into trades (id, symbol, strategy_id, direction, allowed, position_size, setup,"
                    " risk, created_at, simulated) values ('s-1', 'AAPL', 'gap', 'long', true, 12, :setup,"
                    " :risk, CURRENT_TIMESTAMP, false)"
                ),
                {"setup": setup, "risk": risk},
            )
    finally:
        await engine.dispose()

    db = await open_database(database_url)
    try:
        repo = Repository(db)
        for run_id in ("r1", "r2"):
            [result] = await repo.get_symbol_results(run_id)
            assert [(t.setup.id, t.risk.position_size, t.risk.account_size) for t in result.trades] == [
                ("s-1", 12, 10_000.0)
            ]
            assert [t.risk.position_size for t in await repo.list_trades(run_id=run_id)] == [12]
        statuses = {r.id: r.status for r in await repo.list_runs()}
        assert statuses == {"r1": RunStatus.COMPLETED, "r2": RunStatus.INTERRUPTED}
    finally:
        await db.close()
    assert await _inspect(database_url, _version) == HEAD
    assert await _inspect(database_url, _diff) == []
