"""The embedded backend's vector arm keeps its in-process index equal to the database.

A deterministic bag-of-words embedder stands in for the model (so these run without the `semantic`
extra, in CI too); what is tested is the index bookkeeping: the arm's answer equals a scan of the stored
vectors filtered by the SQL filters, after this backend's own writes (applied in place, no reload) and
after writes by another backend on the same database (seen through the bank revision).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import select
from tests.pgutil import backend_url

from jax_assistant.config import MemoryConfig
from jax_assistant.memory import Memory, MemoryQuery
from jax_assistant.memory.embedded import EmbeddedBackend, M
from jax_assistant.storage import open_database
from jax_assistant.storage.db import Database

T0 = datetime(2024, 3, 1, tzinfo=UTC)
BANK = "market_events"
WORDS = [
    "gap",
    "up",
    "down",
    "earnings",
    "beat",
    "miss",
    "volume",
    "spike",
    "rally",
    "selloff",
    "guidance",
    "dividend",
]


class WordEmbedder:
    """Sum of a fixed random unit vector per word, normalised: texts sharing words are close."""

    model_name = "test/bag-of-words"
    dim = 16

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def _word(self, word: str) -> npt.NDArray[np.float32]:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big")
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i] += self._word(word)
            out[i] /= max(float(np.linalg.norm(out[i])), 1e-6)
        return out


def memory(i: int, rng: random.Random, **over: Any) -> dict[str, Any]:
    words = " ".join(rng.sample(WORDS, 3))
    return {
        "ts": (T0 + timedelta(hours=rng.randrange(500))).isoformat(),
        "type": rng.choice(["decision", "outcome"]),
        "symbol": rng.choice(["AAPL", "MSFT", "KO"]),
        "tags": rng.sample(["earnings", "gap", "swing"], rng.randrange(3)),
        "summary": f"event {i}: {words}",
        "data": {},
        "source": {"system": "test"},
    } | over


QUERIES = [
    MemoryQuery(q="earnings beat rally"),
    MemoryQuery(q="volume spike selloff", symbol="KO"),
    MemoryQuery(q="gap down guidance", types=["outcome"], tags=["earnings"]),
    MemoryQuery(q="dividend", tags=["gap", "swing"], limit=3),
    MemoryQuery.model_validate(
        {"q": "miss", "from": T0 + timedelta(hours=100), "to": T0 + timedelta(hours=300)}
    ),
]


async def scan(db: Database, backend: EmbeddedBackend, query: MemoryQuery, k: int) -> list[int]:
    """The reference: every stored vector passing the SQL filters, scored, score desc then seq asc."""
    vector = WordEmbedder().embed([query.q or ""])[0]
    conds = backend._filters(BANK, query)
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(M.c.seq, M.c.embedding).where(*conds))).all()
    scored = [(float(np.frombuffer(r[1], dtype=np.float32) @ vector), int(r[0])) for r in rows]
    scored.sort(key=lambda s: (-s[0], s[1]))
    return [seq for _, seq in scored[:k]]


async def arm(backend: EmbeddedBackend, query: MemoryQuery, k: int) -> list[int]:
    return [seq for seq, _ in await backend._semantic(BANK, query, backend._filters(BANK, query), k)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with backend_url(request.param, tmp_path, "jax_memvec") as url:
        database = await open_database(url)
        try:
            yield database
        finally:
            await database.close()


async def assert_arm_is_a_scan(db: Database, backend: EmbeddedBackend) -> None:
    for query in QUERIES:
        for k in (1, 7, 500):
            assert await arm(backend, query, k) == await scan(db, backend, query, k), (query, k)


async def test_vector_arm_follows_its_own_writes_in_place(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(1)
    backend = EmbeddedBackend(db, MemoryConfig(semantic=True), embedder=WordEmbedder())
    mem = Memory(backend)
    ids = await mem.retain_many([memory(i, rng) for i in range(120)], bank=BANK)
    await assert_arm_is_a_scan(db, backend)  # first use loads the bank
    reloads: list[str] = []
    original = backend._reload

    async def counting(bank: str) -> Any:
        reloads.append(bank)
        return await original(bank)

    monkeypatch.setattr(backend, "_reload", counting)
    await mem.retain_many([memory(i, rng) for i in range(120, 160)], bank=BANK)
    await mem.retain(memory(0, rng, document_id="doc-1"), bank=BANK)
    await mem.retain(memory(1, rng, document_id="doc-1"), bank=BANK)  # changed document: new seq
    await mem.invalidate(ids[3], bank=BANK)
    await mem.invalidate(ids[4], bank=BANK)
    await mem.restore(ids[3], bank=BANK)
    await assert_arm_is_a_scan(db, backend)
    assert reloads == []  # every change above was applied to the loaded index in place


async def test_vector_arm_sees_writes_of_another_backend(db: Database) -> None:
    rng = random.Random(2)
    mine = EmbeddedBackend(db, MemoryConfig(semantic=True), embedder=WordEmbedder())
    theirs = Memory(EmbeddedBackend(db, MemoryConfig(semantic=True), embedder=WordEmbedder()))
    plain = Memory(EmbeddedBackend(db, MemoryConfig()))  # semantic off: stores no vectors
    ids = await theirs.retain_many([memory(i, rng) for i in range(80)], bank=BANK)
    await assert_arm_is_a_scan(db, mine)
    await theirs.retain_many([memory(i, rng) for i in range(80, 100)], bank=BANK)
    await theirs.retain(memory(5, rng, document_id="doc-9"), bank=BANK)
    await assert_arm_is_a_scan(db, mine)
    await theirs.retain(memory(6, rng, document_id="doc-9"), bank=BANK)  # replaced under its id
    await theirs.invalidate(ids[0], bank=BANK)
    await plain.invalidate(ids[1], bank=BANK)
    late = await plain.retain(memory(200, rng, summary="dividend dividend", tags=["gap", "swing"]), bank=BANK)
    await assert_arm_is_a_scan(db, mine)  # the plain retain was embedded (backfilled) before searching
    assert late in {h.id for h in await Memory(mine).recall(QUERIES[3], bank=BANK)}
    await plain.restore(ids[1], bank=BANK)
    await assert_arm_is_a_scan(db, mine)


async def test_query_vectors_come_from_a_small_cache(db: Database) -> None:
    embedder = WordEmbedder()
    backend = EmbeddedBackend(db, MemoryConfig(semantic=True), embedder=embedder)
    mem = Memory(backend)
    await mem.retain_many([memory(i, random.Random(i)) for i in range(10)], bank=BANK)
    embedder.calls.clear()
    for _ in range(3):
        await mem.recall({"q": "earnings beat"}, bank=BANK)
    await mem.recall({"q": "volume spike"}, bank=BANK)
    assert embedder.calls == [["earnings beat"], ["volume spike"]]


def test_a_query_is_encoded_on_one_torch_thread() -> None:
    torch = pytest.importorskip("torch")  # the `semantic` extra
    from jax_assistant.memory.semantic import MODEL_DIM, SMALL_BATCH, SentenceTransformerEmbedder

    seen: list[tuple[int, int]] = []

    class Model:
        def encode(self, texts: list[str], **_: Any) -> npt.NDArray[np.float32]:
            seen.append((len(texts), torch.get_num_threads()))
            return np.zeros((len(texts), MODEL_DIM), dtype=np.float32)

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        embedder = SentenceTransformerEmbedder(Model())
        embedder.embed(["one query"])
        embedder.embed(["a batch of retains"] * (SMALL_BATCH + 1))
        assert seen == [(1, 1), (SMALL_BATCH + 1, 2)]
        assert torch.get_num_threads() == 2  # put back after the query
    finally:
        torch.set_num_threads(previous)
