"""Recall quality on labelled trading memories built from the real events in ../shared/data.

The floor is below the measured figures (recall_any@5 full text 0.55 on SQLite, 0.83 on PostgreSQL;
docs/memory.md) with room for ranking noise, and far above what ranking without the text arm gives,
so it fails when the keyword arm or the fusion breaks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.memory_dataset import labelled_queries, load_events, memory_item, recall_at

from jax_assistant.config import MemoryConfig
from jax_assistant.memory import Memory
from jax_assistant.memory.embedded import EmbeddedBackend
from jax_assistant.storage import open_database

FLOOR_ANY = 0.45


@pytest.mark.realdata
async def test_full_text_recall_at_5_floor(memory_db_url: str, shared_data: Path) -> None:
    events = load_events(shared_data)
    queries = labelled_queries(events)
    assert len(events) > 300 and len(queries) > 50
    db = await open_database(memory_db_url)
    memory = Memory(EmbeddedBackend(db, MemoryConfig()))
    try:
        await memory.retain_many([memory_item(e) for e in events], bank="market_events")
        ranked = []
        for query in queries:
            hits = await memory.recall({"q": query.q, "limit": 5}, bank="market_events")
            ranked.append([h.document_id or "" for h in hits])
        textless = []
        for _ in queries:
            hits = await memory.recall({"limit": 5}, bank="market_events")
            textless.append([h.document_id or "" for h in hits])
    finally:
        await db.close()
    quality = recall_at(ranked, queries, 5)
    baseline = recall_at(textless, queries, 5)
    assert quality["any"] >= FLOOR_ANY, quality
    assert baseline["any"] < 0.2 < quality["any"] - baseline["any"]
