"""Batched recall: ``Memory.recall_many`` returns exactly what one ``recall`` per query returns, the embedded
backend answers a run's symbols in one SQL statement per bank, and the ``recall_memory`` stage uses it
(once per run, never across runs), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from tests.pgutil import backend_url

from jax_assistant.config import MemoryConfig, Settings
from jax_assistant.domain import SymbolStatus
from jax_assistant.memory import Memory, MemoryUnavailableError
from jax_assistant.memory.base import BatchRecallBackend, MemoryHealth
from jax_assistant.memory.embedded import EmbeddedBackend
from jax_assistant.memory.models import MemoryItem, MemoryQuery, MemoryValidationError, ReflectionParams
from jax_assistant.orchestrator import Orchestrator, RunRequest
from jax_assistant.storage import open_database
from jax_assistant.storage.db import Database

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
SOURCE = {"system": "jax-test"}
SYMBOLS = ["ACME.SIM", "BOLT.SIM", "BYTE.SIM", "MEDX.SIM"]


@pytest.fixture(params=BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with backend_url(request.param, tmp_path, "jax_recall") as url:
        database = await open_database(url)
        try:
            yield database
        finally:
            await database.close()


def _memory(db: Database) -> Memory:
    # A fixed clock: recency scores of the batched and the single recalls are then comparable exactly.
    return Memory(EmbeddedBackend(db, MemoryConfig(), clock=lambda: NOW))


async def _populate(memory: Memory) -> list[str]:
    """A bank where the per-symbol "newest 5" is not trivial: symbols with 0..9 memories, equal
    timestamps (ties broken by insertion), other types, invalidated memories and another bank."""
    symbols = [f"S{n:03d}" for n in range(40)]
    items: list[dict[str, Any]] = []
    for n, symbol in enumerate(symbols):
        for k in range(n % 10):
            ts = NOW - timedelta(days=k // 2)  # pairs share a timestamp
            items.append(
                {
                    "ts": ts.isoformat(),
                    "type": "decision" if k % 4 else "note",
                    "symbol": symbol,
                    "tags": ["decision", f"k:{k}"],
                    "summary": f"{symbol} memory {k}",
                    "data": {"k": k},
                    "document_id": f"decision:{symbol}:{k}",
                    "source": SOURCE,
                }
            )
    await memory.retain_many(items, bank="trade_decisions")
    await memory.retain_many(
        [
            {
                "ts": NOW.isoformat(),
                "type": "decision",
                "symbol": s,
                "summary": f"{s} elsewhere",
                "source": SOURCE,
                "data": {},
            }
            for s in symbols
        ],
        bank="trade_outcomes",
    )
    for symbol in symbols[3:30:4]:
        found = await memory.recall({"symbol": symbol, "limit": 1}, bank="trade_decisions")
        await memory.invalidate(found[0].id or "", bank="trade_decisions", reason="test")
    return symbols


def _dump(results: Sequence[Sequence[MemoryItem]]) -> list[list[dict[str, Any]]]:
    return [[i.model_dump(mode="json") for i in items] for items in results]


@contextmanager
def _statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", count)


async def test_batched_recall_equals_one_recall_per_query(db: Database) -> None:
    memory = _memory(db)
    symbols = await _populate(memory)
    queries: list[MemoryQuery | dict[str, Any]] = [
        *({"symbol": s, "types": ["decision"], "limit": 5} for s in symbols),
        *({"symbol": s, "limit": 3} for s in symbols[::3]),
        {"symbol": "NOPE", "limit": 5},  # a symbol without memories
        {"symbol": "s001", "limit": 5},  # normalised like a single recall's symbol
        {"symbol": symbols[9], "tags": ["k:2"], "limit": 5},
        {"symbol": symbols[9], "from": (NOW - timedelta(days=2)).isoformat(), "limit": 2},
        {"q": "memory", "symbol": symbols[8], "limit": 4},  # text: ranked alone, as recall does
        {"types": ["note"], "limit": 7},  # no symbol: not batched
    ]
    batched = await memory.recall_many(queries, bank="trade_decisions")
    single = [await memory.recall(q, bank="trade_decisions") for q in queries]
    assert _dump(batched) == _dump(single)
    # The comparison is not vacuous: most symbols have several decisions, some more than the limit.
    assert sum(len(r) for r in batched[: len(symbols)]) > 80
    assert any(len(r) == 5 for r in batched) and batched[len(symbols) + len(symbols[::3])] == []
    other = await memory.recall_many([{"symbol": s} for s in symbols[:5]], bank="trade_outcomes")
    assert _dump(other) == _dump(
        [await memory.recall({"symbol": s}, bank="trade_outcomes") for s in symbols[:5]]
    )


async def test_the_embedded_batch_is_one_statement_per_bank_for_a_505_symbol_run(db: Database) -> None:
    memory = _memory(db)
    symbols = [f"T{n:03d}" for n in range(505)]
    await memory.retain_many(
        [
            {
                "ts": (NOW - timedelta(hours=k)).isoformat(),
                "type": "decision",
                "symbol": s,
                "summary": f"{s} {k}",
                "source": SOURCE,
                "data": {},
            }
            for s in symbols
            for k in range(2)
        ]
    )
    queries = [MemoryQuery(symbol=s, types=["decision"], limit=5) for s in symbols]
    with _statements(db) as seen:
        batched = await memory.recall_many(queries)
    selects = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) <= 2  # 505 symbols in IN-lists of at most 500: two statements, not 505
    assert [len(r) for r in batched] == [2] * 505
    assert all(
        r[0].symbol == s and r[0].ts is not None and r[0].ts > (r[1].ts or NOW)
        for s, r in zip(symbols, batched, strict=True)
    )


async def test_a_bad_query_rejects_the_batch_naming_its_index(db: Database) -> None:
    memory = _memory(db)
    with pytest.raises(MemoryValidationError) as err:
        await memory.recall_many([{"symbol": "AAPL"}, {"symbol": "AAPL", "limit": 0}])
    assert err.value.field == "queries[1].limit"
    assert await memory.recall_many([]) == []


class _SingleOnly:
    """A backend without ``recall_many`` (like remote and hindsight): the facade loops over ``recall``."""

    name = "single"

    def __init__(self, inner: EmbeddedBackend) -> None:
        self.inner = inner
        self.recalls = 0

    async def retain(self, bank: str, item: MemoryItem) -> str:
        return await self.inner.retain(bank, item)

    async def retain_many(self, bank: str, items: Sequence[MemoryItem]) -> list[str]:
        return await self.inner.retain_many(bank, items)

    async def recall(self, bank: str, query: MemoryQuery) -> list[MemoryItem]:
        self.recalls += 1
        return await self.inner.recall(bank, query)

    async def reflect(self, bank: str, params: ReflectionParams) -> list[MemoryItem]:
        return await self.inner.reflect(bank, params)

    async def invalidate(self, bank: str, memory_id: str, reason: str | None = None) -> None:
        await self.inner.invalidate(bank, memory_id, reason)

    async def restore(self, bank: str, memory_id: str) -> None:
        await self.inner.restore(bank, memory_id)

    async def banks(self) -> list[str]:
        return await self.inner.banks()

    async def health(self) -> MemoryHealth:
        return await self.inner.health()

    async def close(self) -> None:
        await self.inner.close()


async def test_backends_without_a_batch_get_one_recall_per_query(db: Database) -> None:
    embedded = EmbeddedBackend(db, MemoryConfig(), clock=lambda: NOW)
    single = _SingleOnly(embedded)
    assert isinstance(embedded, BatchRecallBackend) and not isinstance(single, BatchRecallBackend)
    symbols = await _populate(Memory(embedded))
    queries = [{"symbol": s, "limit": 5} for s in symbols]
    looped = await Memory(single).recall_many(queries)
    assert single.recalls == len(symbols)
    assert _dump(looped) == _dump(await Memory(embedded).recall_many(queries))


# --------------------------------------------------------------------------- the stage, in real runs


@pytest.fixture(params=BACKENDS)
async def settings(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Settings]:
    async with backend_url(request.param, tmp_path) as url:
        yield Settings(database_url=url, lookback=20)


def _recalled_ids(outcome: Any) -> dict[str, list[str]]:
    return {r.symbol: [d["id"] for d in r.extras["recall_memory"]["decisions"]] for r in outcome.results}


async def test_the_stage_recalls_each_symbols_slice_once_per_run(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"recall": 0, "recall_many": 0}
    recall, recall_many = EmbeddedBackend.recall, EmbeddedBackend.recall_many

    async def count_recall(self: EmbeddedBackend, bank: str, query: MemoryQuery) -> list[MemoryItem]:
        # Only the stage's bank: the research stage recalls outcomes per setup on its own.
        calls["recall"] += bank == "trade_decisions"
        return await recall(self, bank, query)

    async def count_many(
        self: EmbeddedBackend, bank: str, queries: Sequence[MemoryQuery]
    ) -> list[list[MemoryItem]]:
        calls["recall_many"] += bank == "trade_decisions"
        return await recall_many(self, bank, queries)

    monkeypatch.setattr(EmbeddedBackend, "recall", count_recall)
    monkeypatch.setattr(EmbeddedBackend, "recall_many", count_many)
    async with Orchestrator(settings) as orch:
        memory = orch.memory
        assert memory is not None
        first = await orch.start_run(RunRequest(symbols=SYMBOLS))
        # A fresh database: no bank holds anything, so nothing is recalled at all.
        assert calls == {"recall": 0, "recall_many": 0}
        assert all(r.extras["recall_memory"]["decisions"] == [] for r in first.results)
        expected = {}
        for symbol in SYMBOLS:
            found = await memory.recall(
                {"symbol": symbol, "types": ["decision"], "limit": 5}, bank="trade_decisions"
            )
            expected[symbol] = [i.id for i in sorted(found, key=lambda i: i.ts or NOW, reverse=True)]
        assert sum(map(len, expected.values())) >= len(SYMBOLS)
        calls.update(recall=0, recall_many=0)

        second = await orch.start_run(RunRequest(symbols=SYMBOLS))
        assert all(r.status is SymbolStatus.SUCCEEDED for r in second.results)
        assert _recalled_ids(second) == expected
        assert calls == {"recall": 0, "recall_many": 1}  # one batch for the decisions bank, per run

        # Never cached across runs: a memory taken out after run 2 is gone from run 3's recall.
        gone = expected[SYMBOLS[0]][0]
        await memory.invalidate(gone, bank="trade_decisions")
        third = await orch.start_run(RunRequest(symbols=SYMBOLS))
        assert _recalled_ids(third)[SYMBOLS[0]] == [i for i in expected[SYMBOLS[0]] if i != gone]
        assert calls["recall_many"] == 2


async def test_memory_down_during_the_batch_degrades_every_symbol(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Orchestrator(settings) as orch:
        await orch.start_run(RunRequest(symbols=SYMBOLS))

        async def down(
            self: EmbeddedBackend, bank: str, queries: Sequence[MemoryQuery]
        ) -> list[list[MemoryItem]]:
            raise MemoryUnavailableError("memory store unavailable: connection refused")

        monkeypatch.setattr(EmbeddedBackend, "recall_many", down)
        outcome = await orch.start_run(RunRequest(symbols=SYMBOLS))
    for result in outcome.results:
        recall = next(s for s in result.stages if s.stage == "recall_memory")
        assert recall.status in ("failed", "short_circuited") and result.status is SymbolStatus.DEGRADED
        assert next(s for s in result.stages if s.stage == "persist").status == "ok"
