"""Accepted runs' writes: the run row and its audit record in one transaction, the accepts waiting
together sharing one commit (each in its own savepoint), and the write lock waited for by short polls
instead of SQLite's coarse busy handler."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event, func, select
from sqlalchemy.exc import OperationalError
from tests.storage.factories import make_audit, make_run

from jax_assistant.storage import Database, Repository, open_database
from jax_assistant.storage import db as db_module
from jax_assistant.storage.repository import AuditWrite
from jax_assistant.storage.tables import AuditEventRow, RunRow


@pytest.fixture
async def file_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}")
    try:
        yield db
    finally:
        await db.close()


def count_commits(db: Database) -> list[int]:
    assert db.sync_writer is not None
    commits = [0]

    @event.listens_for(db.sync_writer, "commit")
    def _commit(_conn: Any) -> None:
        commits[0] += 1

    return commits


async def hold_writer(db: Database) -> tuple[threading.Event, asyncio.Future[None]]:
    """Occupy the writer thread until the returned event is set, so the next writes queue up."""
    entered, release = threading.Event(), threading.Event()

    def blocking(_conn: Connection) -> None:
        entered.set()
        release.wait(10)

    busy = asyncio.ensure_future(db.run_write(blocking))
    await asyncio.to_thread(entered.wait, 10)
    return release, busy


def audit_for(run_id: str, key: str) -> AuditWrite:
    return AuditWrite(make_audit(f"audit-{run_id}", action="api.process", outcome="started"), key, run_id)


async def counts(db: Database) -> tuple[int, int]:
    async with db.engine.connect() as conn:
        runs = (await conn.execute(select(func.count()).select_from(RunRow))).scalar_one()
        audits = (await conn.execute(select(func.count()).select_from(AuditEventRow))).scalar_one()
    return runs, audits


async def test_accepts_waiting_together_share_one_commit(file_db: Database) -> None:
    repo = Repository(file_db)
    commits = count_commits(file_db)
    release, busy = await hold_writer(file_db)
    accepts = [
        asyncio.ensure_future(repo.create_run_audited(make_run(f"run-{i}"), audit_for(f"run-{i}", f"k-{i}")))
        for i in range(10)
    ]
    await asyncio.sleep(0.05)
    assert not any(a.done() for a in accepts)  # answered only once their commit is done
    release.set()
    await busy
    assert await asyncio.gather(*accepts) == [True] * 10
    assert commits[0] == 2  # the blocking transaction, then ONE for the ten accepts
    assert await counts(file_db) == (10, 10)
    assert (await repo.get_run("run-3")) is not None


async def test_a_failing_accept_fails_alone_in_its_group(file_db: Database) -> None:
    repo = Repository(file_db)
    assert await repo.create_run_audited(make_run("run-taken"), audit_for("run-taken", "k-first"))
    release, busy = await hold_writer(file_db)
    ok = asyncio.ensure_future(repo.create_run_audited(make_run("run-a"), audit_for("run-a", "k-a")))
    # The same idempotency key as a stored accept: nothing written, reported as None.
    same_key = asyncio.ensure_future(
        repo.create_run_audited(make_run("run-b"), audit_for("run-b", "k-first"))
    )
    # An existing run id: its audit row is rolled back with it, reported as False.
    taken = asyncio.ensure_future(repo.create_run_audited(make_run("run-taken"), audit_for("run-c", "k-c")))

    def explode(_conn: Connection) -> None:
        raise RuntimeError("boom")

    broken = asyncio.ensure_future(file_db.run_write(explode, urgent=True, group=True))
    after = asyncio.ensure_future(repo.create_run_audited(make_run("run-d"), audit_for("run-d", "k-d")))
    await asyncio.sleep(0.05)
    release.set()
    await busy
    assert await ok is True
    assert await same_key is None
    assert await taken is False
    with pytest.raises(RuntimeError, match="boom"):
        await broken
    assert await after is True
    assert await counts(file_db) == (3, 3)  # run-taken, run-a, run-d and their audit rows
    assert await repo.get_audit_by_key("k-c") is None


async def test_accepts_without_a_writer_thread_are_atomic_too() -> None:
    db = await open_database("sqlite+aiosqlite:///:memory:")
    try:
        repo = Repository(db)
        assert db.sync_writer is None
        assert await repo.create_run_audited(make_run("run-1"), audit_for("run-1", "k-1")) is True
        assert await repo.create_run_audited(make_run("run-2"), audit_for("run-2", "k-1")) is None
        assert await repo.create_run_audited(make_run("run-1"), audit_for("run-3", "k-3")) is False
        assert await counts(db) == (1, 1)
    finally:
        await db.close()


def hold_lock(path: Path, seconds: float, locked: threading.Event) -> None:
    """Another process's writer (a plain connection here) holding the write lock for ``seconds``."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
    finally:
        conn.close()


async def test_the_writer_gets_the_lock_soon_after_its_release(file_db: Database, tmp_path: Path) -> None:
    repo = Repository(file_db)
    assert await repo.create_run(make_run("run-warm"))  # the writer's connection is open (and set up)
    locked = threading.Event()
    holder = threading.Thread(target=hold_lock, args=(tmp_path / "jax.db", 0.13, locked))
    holder.start()
    try:
        await asyncio.to_thread(locked.wait, 5)
        started = time.monotonic()
        assert await repo.create_run(make_run("run-1"))
        waited = time.monotonic() - started
    finally:
        holder.join()
    # SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50 ms: it would retry at 128 ms,
    # then 178 ms. Polling (at most LOCK_POLL_MAX_S apart) gets the lock within a few ms of 130 ms.
    assert 0.1 <= waited < 0.165, waited
    # The busy timeout is back for the transaction's own statements.
    assert file_db.sync_writer is not None
    with file_db.sync_writer.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db_module.SQLITE_BUSY_TIMEOUT_MS


async def test_the_lock_wait_still_times_out(
    file_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_MS", 100)
    repo = Repository(file_db)
    locked = threading.Event()
    holder = threading.Thread(target=hold_lock, args=(tmp_path / "jax.db", 0.5, locked))
    holder.start()
    try:
        await asyncio.to_thread(locked.wait, 5)
        with pytest.raises(OperationalError, match="locked"):
            await repo.create_run(make_run("run-1"))
    finally:
        holder.join()
    assert await repo.create_run(make_run("run-1"))  # the writer works again once the lock is free
