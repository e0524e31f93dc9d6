"""Embedded-backend specifics: outages, the facade's config wiring, persistence, the semantic arm."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from tests.pgutil import sqlite_url

from jax_assistant.config import MemoryConfig, load_settings
from jax_assistant.domain.errors import ConfigError
from jax_assistant.memory import Memory, MemoryUnavailableError, open_memory
from jax_assistant.memory.embedded import MAX_BODY_DATA_CHARS, EmbeddedBackend, item_body, query_terms
from jax_assistant.memory.models import MemoryItem
from jax_assistant.memory.semantic import semantic_available
from jax_assistant.storage import open_database
from jax_assistant.storage.db import Database, build_engine

NOW = datetime.now(UTC).replace(microsecond=0)


def item(summary: str, **over: Any) -> dict[str, Any]:
    return {
        "ts": (NOW - timedelta(days=1)).isoformat(),
        "type": "decision",
        "symbol": "AAPL",
        "tags": ["sym:aapl"],
        "summary": summary,
        "data": {},
        "source": {"system": "jax-orchestrator"},
    } | over


def test_query_terms_cannot_inject_match_syntax() -> None:
    assert query_terms('AAPL" OR x* NEAR(a b) -- the; DROP') == ["aapl", "x", "near", "b", "drop"]
    assert query_terms(None) == [] and query_terms("the of and") == []


async def test_unreachable_store_raises_unavailable(tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    db = Database(build_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nothing"))
    memory = Memory(EmbeddedBackend(db, MemoryConfig()))
    try:
        with pytest.raises(MemoryUnavailableError):
            await memory.retain(item("AAPL decision"))
        with pytest.raises(MemoryUnavailableError):
            await memory.recall({"q": "AAPL"})
        health = await memory.health()
        assert health.ok is False and "unavailable" in (health.detail or "")
    finally:
        await db.close()
    settings = load_settings(database_url="postgresql://postgres@127.0.0.1:1/nothing")
    with pytest.raises(MemoryUnavailableError):
        await open_memory(settings)


async def test_open_memory_uses_the_configured_database(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    settings = load_settings(database_url=url)
    assert settings.memory.backend == "embedded" and settings.memory.bank == "trade_decisions"
    async with await open_memory(settings) as memory:
        first = await memory.retain(item("AAPL long, pending fill", document_id="dec:AAPL:1"))
    # A new process (here: a new facade) sees the same memory and keeps retain idempotent.
    async with await open_memory(settings) as memory:
        assert await memory.retain(item("AAPL long, pending fill", document_id="dec:AAPL:1")) == first
        assert [h.id for h in await memory.recall({"q": "pending fill"})] == [first]
    shared = await open_database(url)
    try:
        memory = await open_memory(settings, database=shared)
        await memory.close()  # does not close a database it was handed
        assert [h.id for h in await Memory(EmbeddedBackend(shared, MemoryConfig())).recall({"q": "pending"})]
    finally:
        await shared.close()


async def test_unknown_backend_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jax_assistant.memory import facade

    settings = load_settings(database_url=sqlite_url(tmp_path))
    monkeypatch.setitem(facade.BACKEND_MODULES, "embedded", "jax_assistant.memory.no_such_module")
    with pytest.raises(ConfigError, match=r"memory\.backend"):
        await open_memory(settings)
    with pytest.raises(ConfigError):
        load_settings(memory={"backend": "carrier-pigeon"})


async def test_concurrent_retains_of_one_document_keep_one_memory(memory_db_url: str) -> None:
    dbs = [await open_database(memory_db_url) for _ in range(2)]
    try:
        memories = [Memory(EmbeddedBackend(db, MemoryConfig())) for db in dbs]
        ids = await asyncio.gather(
            *(
                m.retain(item("AAPL decision for 2026-03-02", document_id="dec:AAPL:2026-03-02"))
                for m in memories
                for _ in range(3)
            )
        )
        assert len(set(ids)) == 1
        assert len(await memories[0].recall({"symbol": "AAPL", "limit": 50})) == 1
    finally:
        for db in dbs:
            await db.close()


async def test_replacing_a_document_keeps_its_invalidation(memory_db_url: str) -> None:
    db = await open_database(memory_db_url)
    try:
        memory = Memory(EmbeddedBackend(db, MemoryConfig()))
        memory_id = await memory.retain(item("first take", document_id="doc:1"))
        await memory.invalidate(memory_id, reason="wrong")
        assert await memory.retain(item("second take", document_id="doc:1")) == memory_id
        assert await memory.recall({"q": "second take"}) == []
        await memory.restore(memory_id)
        assert [h.summary for h in await memory.recall({"q": "second take"})] == ["second take"]
    finally:
        await db.close()


needs_semantic = pytest.mark.skipif(not semantic_available(), reason="the `semantic` extra is not installed")


class OtherSpace:
    """The shipped model under another name: stands for another embedding model (a second vector space)."""

    model_name = "test/other-vector-space"

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.dim = inner.dim

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return self.inner.embed(texts)  # type: ignore[no-any-return]


@needs_semantic
async def test_semantic_arm_finds_paraphrases_and_never_mixes_spaces(tmp_path: Path) -> None:
    from jax_assistant.memory.semantic import MODEL_NAME, load_embedder

    model = load_embedder()
    db = await open_database(sqlite_url(tmp_path))
    try:
        plain = Memory(EmbeddedBackend(db, MemoryConfig()))
        # Retained while semantic is off: no vectors yet.
        early = await plain.retain(item("Company posted record quarterly profits; shares soared at the bell"))
        semantic = Memory(EmbeddedBackend(db, MemoryConfig(semantic=True), embedder=model))
        other = await semantic.retain(item("Dividend unchanged, board meeting routine", symbol="KO", tags=[]))
        query = {"q": "stock jumped after strong earnings results"}
        assert await plain.recall(query) == []  # no shared word: the keyword arm alone finds nothing
        hits = await semantic.recall(query | {"limit": 2})
        assert hits[0].id == early  # backfilled, then found by meaning
        assert hits[0].scores is not None and hits[0].scores.semantic is not None
        assert hits[0].scores.keyword is None
        assert {h.id for h in hits} == {early, other}
        assert [h.id for h in await semantic.recall(query | {"symbol": "KO"})] == [other]
        await semantic.invalidate(early)
        assert early not in {h.id for h in await semantic.recall(query)}
        await semantic.restore(early)

        elsewhere = EmbeddedBackend(db, MemoryConfig(semantic=True), embedder=OtherSpace(model))
        with pytest.raises(ConfigError, match="never mixed"):
            await Memory(elsewhere).retain(item("anything"))
        with pytest.raises(ConfigError, match="never mixed"):
            await Memory(elsewhere).recall(query)
        assert await elsewhere.reembed("trade_decisions") == 2
        assert (await Memory(elsewhere).recall(query))[0].id == early
        with pytest.raises(ConfigError, match=MODEL_NAME):
            await semantic.recall(query)
    finally:
        await db.close()


def _full_body(data: Any) -> str:
    """The body's data text as the whole walk gives it (what the bounded walk must equal)."""
    strings: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            strings.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x)

    walk(data)
    return " ".join(strings)[:MAX_BODY_DATA_CHARS]


@pytest.mark.parametrize("width", [1, 7, 99, 1999, 2000, 2001, 3000])
def test_item_body_reads_only_what_it_keeps_yet_keeps_the_same_text(width: int) -> None:
    # Strings of every length around the 2 000-character cut, nested in dicts, lists and tuples, with
    # non-string leaves between them.
    data = {
        "a": ["x" * width, 3, {"b": ("y" * (width // 2 + 1), None, ["z" * 5] * 400)}],
        "c": {"d": "w" * width, "e": 1.5},
        "f": "tail",
    }
    model = MemoryItem.model_validate(item("s", data=data))
    body = item_body(model)
    assert body == f"s AAPL decision sym:aapl {_full_body(data)}".strip()
