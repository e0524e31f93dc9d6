"""The one memory contract suite: every backend leg of ``memory_backend`` must pass all of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jax_assistant.memory import Memory, MemoryNotFoundError, MemoryValidationError

NOW = datetime.now(UTC).replace(microsecond=0)


def item(summary: str, *, days_ago: float = 1.0, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ts": (NOW - timedelta(days=days_ago)).isoformat(),
        "type": "decision",
        "symbol": "AAPL",
        "tags": ["sym:aapl", "kind:decision"],
        "summary": summary,
        "data": {"entry": 101.5, "strategy": "earnings_gap_v1"},
        "source": {"system": "jax-orchestrator", "ref": "run_1"},
    }
    return base | over


async def test_retain_then_recall_with_provenance(memory_backend: Memory) -> None:
    memory_id = await memory_backend.retain(item("AAPL gapped up 4% on earnings; long setup taken."))
    assert isinstance(memory_id, str) and memory_id
    hits = await memory_backend.recall({"q": "earnings gap", "symbol": "AAPL"})
    assert [h.id for h in hits] == [memory_id]
    hit = hits[0]
    assert hit.summary == "AAPL gapped up 4% on earnings; long setup taken."
    assert hit.type == "decision" and hit.symbol == "AAPL"
    assert hit.tags == ["sym:aapl", "kind:decision"]
    assert hit.source is not None and hit.source.system == "jax-orchestrator" and hit.source.ref == "run_1"
    assert hit.ts == NOW - timedelta(days=1)
    assert hit.data == {"entry": 101.5, "strategy": "earnings_gap_v1"}
    assert hit.score is not None and hit.score > 0
    assert hit.scores is not None and hit.scores.final == hit.score and hit.scores.keyword is not None


async def test_invalid_items_are_refused_and_nothing_is_stored(memory_backend: Memory) -> None:
    with pytest.raises(MemoryValidationError, match="memory item summary length invalid"):
        await memory_backend.retain(item(""))
    with pytest.raises(MemoryValidationError, match=r"^items\[1\]: memory item source required$"):
        await memory_backend.retain_many([item("fine one"), item("bad one", source={"ref": "x"})])
    assert await memory_backend.recall({"q": "fine one"}) == []
    assert await memory_backend.banks() == []


async def test_secrets_are_redacted_before_storage(memory_backend: Memory) -> None:
    await memory_backend.retain(
        item("Order placed with the broker.", data={"order_payload": {"qty": 5}, "api_key": "sk-1", "qty": 5})
    )
    [hit] = await memory_backend.recall({"q": "broker order"})
    assert hit.data == {"order_payload": "[REDACTED]", "api_key": "[REDACTED]", "qty": 5}
    # The secret is not searchable either: it never reached the store.
    assert await memory_backend.recall({"q": "sk"}) == []


async def test_document_id_makes_retain_idempotent(memory_backend: Memory) -> None:
    first = await memory_backend.retain(item("AAPL decision v1 pending", document_id="dec:AAPL:2026-03-02"))
    again = await memory_backend.retain(item("AAPL decision v1 pending", document_id="dec:AAPL:2026-03-02"))
    assert again == first
    changed = await memory_backend.retain(
        item("AAPL decision v2 filled at target", document_id="dec:AAPL:2026-03-02")
    )
    assert changed == first
    hits = await memory_backend.recall({"symbol": "AAPL", "limit": 50})
    assert [(h.id, h.summary) for h in hits] == [(first, "AAPL decision v2 filled at target")]
    assert hits[0].document_id == "dec:AAPL:2026-03-02"
    assert await memory_backend.recall({"q": "pending"}) == []


async def test_same_content_is_not_duplicated(memory_backend: Memory) -> None:
    a = await memory_backend.retain(item("MSFT broke out above the 50-day average", symbol="MSFT"))
    b = await memory_backend.retain(item("MSFT broke out above the 50-day average", symbol="MSFT"))
    batch = await memory_backend.retain_many(
        [item("MSFT broke out above the 50-day average", symbol="MSFT"), item("another", symbol="MSFT")]
    )
    assert a == b == batch[0] and batch[1] != a
    hits = await memory_backend.recall({"symbol": "MSFT", "limit": 50})
    assert sorted(h.id for h in hits) == sorted({a, batch[1]})


async def test_invalidation_is_reversible(memory_backend: Memory) -> None:
    keep = await memory_backend.retain(item("NVDA volatility spike, stood aside", symbol="NVDA"))
    wrong = await memory_backend.retain(item("NVDA volatility spike, bought the dip", symbol="NVDA"))
    await memory_backend.invalidate(wrong, reason="entered by mistake")
    assert [h.id for h in await memory_backend.recall({"q": "NVDA volatility spike"})] == [keep]
    assert [h.id for h in await memory_backend.recall({"symbol": "NVDA"})] == [keep]
    await memory_backend.restore(wrong)
    assert {h.id for h in await memory_backend.recall({"q": "NVDA volatility spike"})} == {keep, wrong}
    with pytest.raises(MemoryNotFoundError):
        await memory_backend.invalidate("mem_does_not_exist")
    with pytest.raises(MemoryNotFoundError):
        await memory_backend.restore(wrong, bank="signals")  # banks are isolated


async def test_tags_match_strictly(memory_backend: Memory) -> None:
    both = await memory_backend.retain(item("gap up with volume", tags=["sym:aapl", "setup:gap"]))
    one = await memory_backend.retain(item("gap up without volume", tags=["sym:aapl"]))
    untagged = await memory_backend.retain(item("gap up, no tags", tags=[]))
    assert {h.id for h in await memory_backend.recall({"q": "gap", "tags": ["SYM:AAPL"]})} == {both, one}
    assert [h.id for h in await memory_backend.recall({"q": "gap", "tags": ["sym:aapl", "setup:gap"]})] == [
        both
    ]
    assert [h.id for h in await memory_backend.recall({"tags": ["setup:gap"]})] == [both]
    assert untagged in {h.id for h in await memory_backend.recall({"q": "gap"})}


async def test_symbol_type_and_time_filters(memory_backend: Memory) -> None:
    old = await memory_backend.retain(item("AAPL earnings gap, old", days_ago=40))
    new = await memory_backend.retain(item("AAPL earnings gap, new", days_ago=2))
    outcome = await memory_backend.retain(item("AAPL earnings gap outcome", type="outcome", days_ago=1))
    other = await memory_backend.retain(item("MSFT earnings gap", symbol="MSFT"))
    got = await memory_backend.recall({"q": "earnings gap", "symbol": "aapl", "limit": 10})
    assert {h.id for h in got} == {old, new, outcome}
    got = await memory_backend.recall({"q": "earnings gap", "types": ["outcome"]})
    assert [h.id for h in got] == [outcome]
    got = await memory_backend.recall(
        {"q": "earnings", "from": (NOW - timedelta(days=10)).isoformat(), "to": NOW.isoformat()}
    )
    assert {h.id for h in got} == {new, outcome, other}
    assert other not in {h.id for h in await memory_backend.recall({"symbol": "AAPL", "limit": 10})}


async def test_banks_are_isolated_and_listed(memory_backend: Memory) -> None:
    mine = await memory_backend.retain(item("signal: unusual volume in AMD", symbol="AMD"), bank="signals")
    await memory_backend.retain(item("decision on AMD", symbol="AMD"))
    assert [h.id for h in await memory_backend.recall({"q": "unusual volume"}, bank="signals")] == [mine]
    assert await memory_backend.recall({"q": "unusual volume"}) == []
    assert await memory_backend.banks() == ["signals", "trade_decisions"]
    with pytest.raises(MemoryValidationError, match="bank is required"):
        await memory_backend.recall({"q": "x"}, bank="")


async def test_recency_breaks_ties_and_orders_textless_recall(memory_backend: Memory) -> None:
    older = await memory_backend.retain(item("TSLA gap down on delivery miss", symbol="TSLA", days_ago=200))
    newer = await memory_backend.retain(item("TSLA gap down on delivery miss", symbol="TSLA", days_ago=3))
    hits = await memory_backend.recall({"q": "TSLA gap down delivery miss"})
    if memory_backend.backend.name == "hindsight":
        # A real Hindsight (RRF passthrough reranker, no cross-encoder) seeds each hit's score from its
        # fused RANK, 1.0 down to 0.1, and recency only multiplies that by ±10 %: two near-identical
        # hits keep the order their arms gave them. Both must come back, and recall without text (listed
        # newest first) must still order by time.
        assert {h.id for h in hits} == {newer, older}
    else:
        assert [h.id for h in hits] == [newer, older]
        assert hits[0].score is not None and hits[1].score is not None and hits[0].score > hits[1].score
    assert [h.id for h in await memory_backend.recall({"symbol": "TSLA"})] == [newer, older]


async def test_limit_and_ranking_by_relevance(memory_backend: Memory) -> None:
    ids = await memory_backend.retain_many(
        [item(f"routine note {i} about bonds", symbol="TLT", days_ago=1, data={"n": i}) for i in range(12)]
        + [item("TLT earnings surprise sent bonds sharply higher", symbol="TLT", days_ago=5, data={})]
    )
    assert len(set(ids)) == 13
    hits = await memory_backend.recall({"q": "earnings surprise", "limit": 3})
    assert [h.id for h in hits] == [ids[-1]]
    assert len(await memory_backend.recall({"q": "bonds", "limit": 5})) == 5


async def test_reflect_outcome_balance_golden_case(memory_backend: Memory) -> None:
    outcomes = [("out_1", "win", 3), ("out_2", "loss", 2), ("out_3", "win", 1)]
    for memory_id, result, days in outcomes:
        await memory_backend.retain(
            item(
                f"AAPL trade closed: {result}",
                id=memory_id,
                type="outcome",
                days_ago=days,
                tags=["sym:aapl", "kind:outcome"],
                data={"outcome": result},
            ),
            bank="trade_outcomes",
        )
    with pytest.raises(MemoryValidationError, match=r"^params\.query is required$"):
        await memory_backend.reflect({"window_days": 30}, bank="trade_outcomes")
    beliefs = await memory_backend.reflect(
        {"query": "how did AAPL trades go", "window_days": 30}, bank="trade_outcomes"
    )
    [balance] = [b for b in beliefs if b.data and b.data["belief_type"] == "outcome_balance"]
    assert balance.type == "belief"
    assert balance.source is not None and balance.source.system == "jax-reflection"
    assert balance.data is not None
    assert balance.data["confidence"] == pytest.approx(0.65)
    assert balance.data["evidence_ids"] == ["out_1", "out_2", "out_3"]
    assert (balance.data["wins"], balance.data["losses"]) == (2, 1)
    assert set(balance.data["time_window"]) == {"from", "to"}
    patterns = {b.data["tag"]: b.data for b in beliefs if b.data and b.data["belief_type"] == "tag_pattern"}
    assert set(patterns) == {"sym:aapl", "kind:outcome"}
    assert patterns["sym:aapl"]["count"] == 3 and patterns["sym:aapl"]["wins"] == 2
    # Outside the window, nothing to believe.
    assert await memory_backend.reflect({"query": "q", "window_days": 1}, bank="trade_outcomes") == []


async def test_health(memory_backend: Memory) -> None:
    health = await memory_backend.health()
    assert health.ok is True and health.backend
