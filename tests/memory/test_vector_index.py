"""The semantic arm's in-process index (memory/vector_index.py) against a plain-Python reference scan."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from jax_assistant.memory.vector_index import BankVectors, VectorFilter, VectorRow, micros

DIM = 8
T0 = datetime(2024, 1, 1, tzinfo=UTC)
SYMBOLS = ["AAPL", "MSFT", "KO", None]
TYPES = ["decision", "outcome", "belief"]
TAGS = ["a", "b", "c", "d"]


def unit(rng: np.random.Generator) -> npt.NDArray[np.float32]:
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def make_row(seq: int, rng: np.random.Generator, pyrng: random.Random, **over: object) -> VectorRow:
    fields: dict[str, object] = {
        "seq": seq,
        "id": f"m{seq}",
        "content_hash": f"h{pyrng.getrandbits(64):x}",
        "ts": T0 + timedelta(hours=pyrng.randrange(2000), microseconds=pyrng.randrange(3)),
        "type": pyrng.choice(TYPES),
        "symbol": pyrng.choice(SYMBOLS),
        "tags": tuple(pyrng.sample(TAGS, pyrng.randrange(3))),
        "invalidated": pyrng.random() < 0.1,
        "vector": unit(rng),
    }
    fields.update(over)
    return VectorRow(**fields)  # type: ignore[arg-type]


def reference(
    rows: dict[int, VectorRow], query: npt.NDArray[np.float32], k: int, where: VectorFilter
) -> list[tuple[int, float]]:
    """What the SQL filters plus a full scan would return: score descending, then seq ascending."""
    scored = []
    for seq, row in rows.items():
        if row.invalidated:
            continue
        if where.symbol and row.symbol != where.symbol:
            continue
        if where.types and row.type not in where.types:
            continue
        if where.from_ is not None and row.ts < where.from_:
            continue
        if where.to is not None and row.ts > where.to:
            continue
        if not set(where.tags) <= set(row.tags):
            continue
        scored.append((seq, float(np.float32(row.vector @ query))))
    scored.sort(key=lambda s: (-s[1], s[0]))
    return scored[:k]


def random_filter(pyrng: random.Random) -> VectorFilter:
    start = T0 + timedelta(hours=pyrng.randrange(2000)) if pyrng.random() < 0.3 else None
    return VectorFilter(
        symbol=pyrng.choice(["AAPL", "KO", "ZZZ", None, None]),
        types=tuple(pyrng.sample(TYPES, pyrng.randrange(3))) if pyrng.random() < 0.4 else (),
        from_=start,
        to=start + timedelta(hours=500) if start is not None and pyrng.random() < 0.5 else None,
        tags=tuple(pyrng.sample([*TAGS, "zz"], pyrng.randrange(3))) if pyrng.random() < 0.4 else (),
    )


def assert_same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [s for s, _ in got] == [s for s, _ in want]
    assert np.allclose([x for _, x in got], [x for _, x in want], atol=1e-5)


def test_search_matches_a_full_scan_through_adds_replacements_removals_and_compaction() -> None:
    rng, pyrng = np.random.default_rng(3), random.Random(3)
    index = BankVectors(DIM)
    truth: dict[int, VectorRow] = {}
    seq = 0
    for step in range(12):
        batch = []
        for _ in range(400):
            seq += 1
            batch.append(make_row(seq, rng, pyrng))
        # A re-retained document: a new seq under an id already held replaces it.
        old = pyrng.choice(sorted(truth)) if truth else None
        if old is not None:
            seq += 1
            batch.append(make_row(seq, rng, pyrng, id=truth[old].id))
            del truth[old]
        index.add(batch)
        truth.update((r.seq, r) for r in batch)
        gone = pyrng.sample(sorted(truth), 300)  # enough removals to trigger compaction
        index.remove(gone)
        for g in gone:
            del truth[g]
        flip = pyrng.sample(sorted(truth), 20)
        index.set_invalidated(flip, step % 2 == 0)
        for f in flip:
            truth[f] = VectorRow(**{**truth[f].__dict__, "invalidated": step % 2 == 0})
        assert len(index) == len(truth) and index.seqs() == set(truth)
        assert index.hashes() == {s: r.content_hash for s, r in truth.items()}
        assert index.invalidated() == {s for s, r in truth.items() if r.invalidated}
        for _ in range(15):
            where = random_filter(pyrng)
            query = unit(rng)
            k = pyrng.choice([1, 5, 100, 10_000])
            assert_same(index.search(query, k, where), reference(truth, query, k, where))
    assert index._size < seq  # dead slots were compacted away


def test_equal_scores_rank_by_seq_whatever_the_slot_order() -> None:
    rng, pyrng = np.random.default_rng(5), random.Random(5)
    same = unit(rng)
    index = BankVectors(DIM)
    # Added newest first, so slot order is the reverse of seq order.
    index.add([make_row(s, rng, pyrng, vector=same, invalidated=False) for s in range(50, 0, -1)])
    assert [s for s, _ in index.search(same, 5)] == [1, 2, 3, 4, 5]


def test_a_held_seq_only_takes_the_new_invalidation_state() -> None:
    rng, pyrng = np.random.default_rng(7), random.Random(7)
    row = make_row(1, rng, pyrng, invalidated=False, symbol="AAPL", tags=())
    index = BankVectors(DIM)
    index.add([row])
    index.add([VectorRow(**{**row.__dict__, "invalidated": True})])
    assert len(index) == 1 and index.search(row.vector, 5) == []
    index.set_invalidated_ids(["m1"], False)
    assert [s for s, _ in index.search(row.vector, 5)] == [1]


def test_a_seq_back_with_other_content_replaces_the_held_row() -> None:
    # SQLite reuses the highest rowid after a delete: a replaced document can come back under its seq.
    rng, pyrng = np.random.default_rng(9), random.Random(9)
    first = make_row(1, rng, pyrng, invalidated=False)
    index = BankVectors(DIM)
    index.add([first, make_row(2, rng, pyrng, invalidated=False)])
    second = make_row(1, rng, pyrng, id=first.id, invalidated=False)
    index.add([second])
    assert len(index) == 2 and index.hashes()[1] == second.content_hash
    hits = dict(index.search(second.vector, 5))
    assert np.isclose(hits[1], 1.0, atol=1e-5)


def test_micros_is_exact_and_reads_naive_as_utc() -> None:
    ts = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert micros(ts) == int(ts.timestamp()) * 1_000_000 + 123456
    assert micros(ts.replace(tzinfo=None)) == micros(ts)
    assert micros(ts + timedelta(microseconds=1)) == micros(ts) + 1
