"""Round trips per recall and per retain batch, counted at the driver (load-independent speed evidence).

Latency at 100 000 memories is dominated by connection check-outs and thread hand-offs (aiosqlite and
asyncpg hop per call), so the counts are what must not creep back up: a keyword recall on a small store
is one connection check-out running two statements (ranked candidates with their timestamps, then the
winners' rows), and a retain batch costs the same number of statements whatever its size.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from jax_assistant.config import MemoryConfig
from jax_assistant.memory import Memory
from jax_assistant.memory.embedded import EmbeddedBackend
from jax_assistant.storage import open_database
from jax_assistant.storage.db import Database

NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class Trips:
    statements: list[str] = field(default_factory=list)
    checkouts: int = 0


@contextmanager
def counting(db: Database) -> Iterator[Trips]:
    """Every statement and pool check-out on all of ``db``'s engines while the block runs."""
    trips = Trips()
    engines: list[Engine] = [db.engine.sync_engine]
    if db.sync_writer is not None:
        engines.append(db.sync_writer)

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        trips.statements.append(statement)

    def on_checkout(*_args: Any) -> None:
        trips.checkouts += 1

    for engine in engines:
        event.listen(engine, "before_cursor_execute", on_execute)
        event.listen(engine.pool, "checkout", on_checkout)
    try:
        yield trips
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", on_execute)
            event.remove(engine.pool, "checkout", on_checkout)


def items(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "ts": (NOW - timedelta(minutes=i)).isoformat(),
            "type": "event",
            "symbol": "AAPL" if i % 2 else "MSFT",
            "tags": ["sym:aapl" if i % 2 else "sym:msft", f"day:{i % 7}"],
            "summary": f"gap up {i} on earnings beat" if i % 3 else f"breakdown {i} below support",
            "data": {"n": i},
            "source": {"system": "jax-orchestrator"},
            "document_id": f"doc:{i}" if i % 5 == 0 else None,
        }
        for i in range(start, start + n)
    ]


def _data_statements(trips: Trips) -> list[str]:
    # Transaction control is not a query the store answers; SQLite's BEGIN IMMEDIATE is issued as one.
    return [s for s in trips.statements if s.split()[0].upper() not in {"BEGIN", "COMMIT", "ROLLBACK"}]


async def test_keyword_recall_is_one_checkout_and_two_statements(memory_db_url: str) -> None:
    db = await open_database(memory_db_url)
    try:
        memory = Memory(EmbeddedBackend(db, MemoryConfig()))
        await memory.retain_many(items(300))
        # Warm: the store size (which decides whether common terms are pruned) is cached for a while.
        await memory.recall({"q": "support"})
        with counting(db) as trips:
            hits = await memory.recall({"q": "earnings beat", "tags": ["sym:aapl"], "limit": 5})
        assert len(hits) == 5 and all("sym:aapl" in h.tags for h in hits)
        assert trips.checkouts == 1
        assert len(_data_statements(trips)) == 2, trips.statements
    finally:
        await db.close()


async def test_retain_batch_statements_do_not_grow_with_batch_size(memory_db_url: str) -> None:
    db = await open_database(memory_db_url)
    try:
        memory = Memory(EmbeddedBackend(db, MemoryConfig()))
        await memory.retain_many(items(1))  # the bank row exists from here on, as in steady state
        counts = []
        for start, n in ((1_000, 10), (2_000, 400)):
            with counting(db) as trips:
                ids = await memory.retain_many(items(n, start))
            assert len(set(ids)) == n
            counts.append((trips.checkouts, len(_data_statements(trips))))
        # Same check-outs and statements for 10 items as for 400: no per-item round trip.
        assert counts[0] == counts[1], (counts, sorted({s[:90] for s in trips.statements}))
        # Re-retaining the same batch stores nothing new and still costs no per-item trip.
        with counting(db) as trips:
            await memory.retain_many(items(400, 2_000))
        assert len(_data_statements(trips)) <= counts[1][1]
    finally:
        await db.close()
