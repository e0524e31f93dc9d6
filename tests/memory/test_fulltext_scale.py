"""The keyword arm's large-store behaviour (common-term pruning, bounded ranking) and the PostgreSQL upkeep
retain does for it (GIN pending list, planner statistics). Sizes are shrunk by lowering the thresholds."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from tests.pgutil import backend_url

from jax_assistant.config import MemoryConfig
from jax_assistant.memory import Memory, embedded
from jax_assistant.memory.embedded import EmbeddedBackend
from jax_assistant.storage import open_database

NOW = datetime.now(UTC).replace(microsecond=0)


def note(summary: str, days_ago: int, symbol: str = "AAPL") -> dict[str, Any]:
    return {
        "ts": (NOW - timedelta(days=days_ago)).isoformat(),
        "type": "market_event",
        "symbol": symbol,
        "tags": [],
        "summary": summary,
        "data": {},
        "source": {"system": "jax-test"},
        "document_id": f"{symbol}:{days_ago}:{summary}",
    }


async def test_common_terms_are_ranked_among_the_newest_filtered_memories_only(
    memory_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cap = 5: any term in more than 5 memories is common.
    monkeypatch.setattr(embedded, "COMMON_MIN_DOCS", 5)
    db = await open_database(memory_db_url)
    try:
        memory = Memory(EmbeddedBackend(db, MemoryConfig()))
        # Older AAPL notes repeat the words (a better text score); the newest say them once.
        await memory.retain_many(
            [note("open tape", d) for d in range(10)]
            + [note("open open open tape tape tape", d) for d in range(10, 30)]
            + [note("open tape", d, symbol="MSFT") for d in range(10)]
            + [note("open tape catalyst", 40)]
        )
        hits = await memory.recall({"q": "open tape", "symbol": "AAPL", "limit": 10})
        # Only the 5 newest AAPL memories are candidates: none of the older, better-scoring ones.
        assert sorted(h.ts for h in hits) == sorted(NOW - timedelta(days=d) for d in range(5))
        assert {h.symbol for h in hits} == {"AAPL"}
        # A rare term still searches the whole bank, however old the memory.
        rare = await memory.recall({"q": "open tape catalyst", "limit": 3})
        assert [h.summary for h in rare] == ["open tape catalyst"]
        backend = memory.backend
        assert isinstance(backend, EmbeddedBackend)

        def counts(conn: Any) -> dict[str, int]:
            return backend._term_counts(conn, ["open", "catalyst", "absent"], 5)

        async with db.engine.connect() as conn:
            # Counted in one statement, capped at cap + 1.
            assert await conn.run_sync(counts) == {"open": 6, "catalyst": 1, "absent": 0}
    finally:
        await db.close()


@pytest.mark.postgres
async def test_retain_leaves_no_gin_pending_list(tmp_path: Path) -> None:
    async with backend_url("postgres", tmp_path, "jax_mem") as url:
        db = await open_database(url)
        try:
            memory = Memory(EmbeddedBackend(db, MemoryConfig()))
            await memory.retain_many([note(f"gap note {i}", i) for i in range(200)], bank="market_events")
            async with db.engine.connect() as conn:
                # The number of pending-list pages a merge finds: retain already merged them all.
                left = await conn.scalar(text("SELECT gin_clean_pending_list('ix_memories_search')"))
            assert left == 0
            assert len(await memory.recall({"q": "gap note 7"}, bank="market_events")) > 0
        finally:
            await db.close()


@pytest.mark.postgres
async def test_retain_refreshes_planner_statistics_after_growth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "ANALYZE_MIN_ROWS", 20)
    async with backend_url("postgres", tmp_path, "jax_mem") as url:
        db = await open_database(url)
        try:
            memory = Memory(EmbeddedBackend(db, MemoryConfig()))

            async def analysed() -> bool:
                async with db.engine.connect() as conn:
                    stamp = await conn.scalar(
                        text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'memories'")
                    )
                return stamp is not None

            assert not await analysed()
            # The server's change counters lag by up to a second, so keep retaining until they show.
            deadline = time.monotonic() + 20
            batch = 0
            while not await analysed():
                assert time.monotonic() < deadline, "retain never refreshed the statistics"
                await memory.retain_many(
                    [note(f"batch {batch} note {i}", i) for i in range(30)], bank="market_events"
                )
                batch += 1
                await asyncio.sleep(0.3)
            async with db.engine.connect() as conn:
                banks = await conn.scalar(
                    text("SELECT n_distinct FROM pg_stats WHERE tablename = 'memories' AND attname = 'bank'")
                )
            assert banks is not None
        finally:
            await db.close()
