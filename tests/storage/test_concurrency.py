"""Many writers at once: every write lands exactly once, none fail on locks."""

from __future__ import annotations

import asyncio

from tests.storage.factories import (
    count_rows,
    make_event,
    make_item,
    make_run,
    make_stage_result,
    make_symbol_result,
)

from jax_assistant.storage import Database, Repository, open_database
from jax_assistant.storage.tables import EventRow, StageCheckpointRow

WRITERS = 50


async def test_fifty_concurrent_checkpoint_writers(db: Database, repo: Repository) -> None:
    await repo.create_run(make_run())

    async def write(i: int) -> None:
        symbol = f"SYM{i:02d}"
        await repo.save_checkpoint(
            "run-1", symbol, 0, make_stage_result("detect_events"), make_item(symbol=symbol)
        )

    await asyncio.gather(*(write(i) for i in range(WRITERS)))
    assert await count_rows(db, StageCheckpointRow) == WRITERS
    assert len(await repo.load_checkpoints("run-1")) == WRITERS


async def test_racing_writers_of_the_same_checkpoint_store_it_once(db: Database, repo: Repository) -> None:
    await repo.create_run(make_run())
    results = await asyncio.gather(
        *(
            repo.save_checkpoint("run-1", "AAPL", 0, make_stage_result("detect_events"), make_item())
            for _ in range(WRITERS)
        )
    )
    assert len(results) == WRITERS  # every writer succeeded (no unique-key error escaped)
    assert await count_rows(db, StageCheckpointRow) == 1


async def test_overlapping_event_batches_from_two_handles(database_url: str, db: Database) -> None:
    # A second Database on the same URL stands in for another process sharing the file/server.
    other = await open_database(database_url)
    try:
        repos = [Repository(db), Repository(other)]
        events = [make_event(f"ev-{i}", minutes=i) for i in range(60)]
        # Each writer saves a sliding window, so every event is offered by several writers, and
        # every other window is reversed: overlapping batches in opposite orders must not deadlock.
        windows = [events[i : i + 10] for i in range(WRITERS)]
        inserted = await asyncio.gather(
            *(
                repos[i % 2].save_events(w if i % 2 else w[::-1], run_id=f"run-{i}", simulated=True)
                for i, w in enumerate(windows)
            )
        )
    finally:
        await other.close()
    assert sum(inserted) == 59
    assert await count_rows(db, EventRow) == 59


async def test_concurrent_read_then_write_transactions(database_url: str, db: Database) -> None:
    # save_symbol_result reads the run before writing: on SQLite that only survives contention
    # because write transactions take the lock up front (BEGIN IMMEDIATE).
    other = await open_database(database_url)
    try:
        repos = [Repository(db), Repository(other)]
        await repos[0].create_run(make_run())
        results = [make_symbol_result(f"S{i:02d}") for i in range(WRITERS)]
        await asyncio.gather(*(repos[i % 2].save_symbol_result(r) for i, r in enumerate(results)))
    finally:
        await other.close()
    assert await repos[0].get_symbol_results("run-1") == results
