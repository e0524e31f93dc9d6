"""The SQLite writer thread's priority lane: a run's creation (what a 202 waits for) goes before the
run batches already queued, so accepting a run never waits behind the runs executing."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from sqlalchemy import Connection, func, select
from tests.storage.factories import make_audit, make_run

from jax_assistant.storage import Database, Repository, open_database
from jax_assistant.storage.tables import AuditEventRow, RunRow


async def test_run_creation_overtakes_queued_batches(tmp_path: Path) -> None:
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}")
    repo = Repository(db)
    try:
        in_batch = threading.Event()
        release = threading.Event()
        seen: list[tuple[int, int]] = []  # per queued batch: (runs, audit rows) visible when it ran

        def blocking(conn: Connection) -> None:
            in_batch.set()
            release.wait(10)

        def queued(conn: Connection) -> None:
            runs = conn.execute(select(func.count()).select_from(RunRow)).scalar_one()
            audits = conn.execute(select(func.count()).select_from(AuditEventRow)).scalar_one()
            seen.append((runs, audits))

        busy = asyncio.ensure_future(db.run_write(blocking))
        await asyncio.to_thread(in_batch.wait, 10)  # a batch is committing: the writer thread is taken
        batches = [asyncio.ensure_future(db.run_write(queued)) for _ in range(3)]
        await asyncio.sleep(0)  # the three batches are queued before the request-path writes
        created = asyncio.ensure_future(repo.create_run(make_run("run-urgent")))
        audited = asyncio.ensure_future(repo.record_audit(make_audit("audit-urgent"), idempotency_key="k-1"))
        await asyncio.sleep(0.05)
        assert not created.done()  # it waits for the batch in progress, as it must (one writer)
        release.set()
        assert await created and await audited
        await asyncio.gather(busy, *batches)
        assert seen == [(1, 1)] * 3  # every queued batch ran after both request-path writes
        assert not await repo.create_run(make_run("run-urgent"))  # still idempotent
    finally:
        await db.close()


async def test_a_write_cancelled_before_it_starts_is_not_run(tmp_path: Path) -> None:
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}")
    try:
        in_batch = threading.Event()
        release = threading.Event()
        ran: list[str] = []

        def blocking(conn: Connection) -> None:
            in_batch.set()
            release.wait(10)

        busy = asyncio.ensure_future(db.run_write(blocking))
        await asyncio.to_thread(in_batch.wait, 10)
        doomed = asyncio.ensure_future(db.run_write(lambda conn: ran.append("doomed")))
        kept = asyncio.ensure_future(db.run_write(lambda conn: ran.append("kept")))
        await asyncio.sleep(0)  # both are queued behind the batch in progress
        doomed.cancel()
        release.set()
        await asyncio.gather(busy, kept)
        assert doomed.cancelled()
        assert ran == ["kept"]  # the waiter gave up before its turn: its write never ran
    finally:
        await db.close()


def test_the_writer_outlives_a_loop_that_closed_while_it_wrote(tmp_path: Path) -> None:
    """A loop that goes away mid-write (a CLI command ended by an error) must not kill the writer
    thread: the next loop's writes still run and answer."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}"
    in_write = threading.Event()
    release = threading.Event()

    def blocking(conn: Connection) -> str:
        in_write.set()
        release.wait(10)
        return "done"

    pending: list[asyncio.Future[str]] = []

    async def start() -> Database:
        db = await open_database(url)
        pending.append(asyncio.ensure_future(db.run_write(blocking)))
        await asyncio.to_thread(in_write.wait, 10)
        return db  # asyncio.run cancels the waiting task and closes the loop: the write goes on

    db = asyncio.run(start())
    assert pending[0].cancelled()
    release.set()

    async def later() -> int:
        try:
            return await asyncio.wait_for(db.run_write(lambda conn: 7), 10)
        finally:
            await db.close()

    assert asyncio.run(later()) == 7
