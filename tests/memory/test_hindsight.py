"""The ``hindsight`` backend against a fake Hindsight server on loopback (tests/fakes/hindsight.py)."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tests.api.helpers import LiveServer
from tests.fakes.hindsight import FakeHindsight, create_fake_hindsight

from jax_assistant.memory import Memory, MemoryItem, MemoryQuery, MemoryUnavailableError
from jax_assistant.memory.hindsight import ITEM_METADATA_KEY, HindsightBackend
from jax_assistant.observability.correlation import bind_correlation_id

T0 = datetime(2024, 5, 1, 13, 30, tzinfo=UTC)


def decision(symbol: str, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"decision:{symbol}:{n}",
        "document_id": f"decision:{symbol}:{n}",
        "ts": (T0 + timedelta(days=n)).isoformat(),
        "type": "decision",
        "symbol": symbol,
        "tags": ["decision", "event:gap_open"],
        "summary": f"{symbol} gap up {n}: long setup allowed",
        "data": {"setups": [{"entry": 100 + n}], "api_token": "s3cret"},
        "source": {"system": "jax-orchestrator", "ref": f"run_{n}"},
        **extra,
    }


@dataclass
class Rig:
    fake: FakeHindsight
    url: str
    memory: Memory
    backend: HindsightBackend


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    fake = FakeHindsight()
    server = LiveServer(create_fake_hindsight(fake))
    await server.start()
    backend = HindsightBackend(server.url, timeout_s=1.0, connect_timeout_s=0.5)
    try:
        yield Rig(fake, server.url, Memory(backend), backend)
    finally:
        await backend.close()
        await server.stop()


async def test_retain_maps_filters_to_tags_and_metadata_to_strings(rig: Rig) -> None:
    ids = await rig.memory.retain_many([decision("AAPL", 1), decision("MSFT", 2)])
    assert ids == ["decision:AAPL:1", "decision:MSFT:2"]
    method, path, _, body = next(r for r in rig.fake.requests if r[0] == "POST")
    assert (method, path) == ("POST", "/v1/default/banks/trade_decisions/memories")
    first = body["items"][0]
    assert first["document_id"] == "decision:AAPL:1"
    # The item's own tags as given, our filters in their own namespace (no collision with a "sym:" tag).
    assert first["tags"] == ["decision", "event:gap_open", "jax:type:decision", "jax:sym:aapl"]
    assert all(isinstance(v, str) for item in body["items"] for v in item["metadata"].values())
    assert "s3cret" not in str(body)  # redacted by the facade before it left the process


async def test_recall_is_strict_per_symbol_and_round_trips_the_item(rig: Rig) -> None:
    await rig.memory.retain_many([decision("AAPL", 1), decision("MSFT", 2)])
    # An untagged memory written by some other Hindsight client: "all"/"any" would return it.
    async with httpx.AsyncClient(base_url=rig.url) as client:
        r = await client.post(
            "/v1/default/banks/trade_decisions/memories",
            json={"items": [{"content": "AAPL gap up untagged"}]},
        )
        assert r.status_code == 200
    hits = await rig.memory.recall({"q": "AAPL gap", "symbol": "AAPL"})
    assert [h.id for h in hits] == ["decision:AAPL:1"]
    hit = hits[0]
    assert hit.ts == T0 + timedelta(days=1) and hit.symbol == "AAPL" and hit.type == "decision"
    assert hit.data == {"setups": [{"entry": 101}], "api_token": "[REDACTED]"}
    assert hit.score is not None and hit.scores is not None
    recall_body = [r[3] for r in rig.fake.requests if r[1].endswith("/recall")][-1]
    assert recall_body["tags_match"] == "all_strict" and "jax:sym:aapl" in recall_body["tags"]


async def test_document_id_makes_retain_idempotent(rig: Rig) -> None:
    await rig.memory.retain(decision("AAPL", 1))
    await rig.memory.retain(decision("AAPL", 1, summary="AAPL gap up 1: revised"))
    units = [u for u in rig.fake.units.values() if u.document_id == "decision:AAPL:1"]
    assert len(units) == 1 and units[0].text == "AAPL gap up 1: revised"


async def test_time_window_and_several_types_are_applied_to_the_results(rig: Rig) -> None:
    await rig.memory.retain_many(
        [
            decision("AAPL", 1),
            decision("AAPL", 5),
            decision("AAPL", 9, type="outcome", id="o9", document_id="o9"),
        ]
    )
    window = await rig.memory.recall(
        MemoryQuery(symbol="AAPL", from_=T0 + timedelta(days=4), to=T0 + timedelta(days=6))
    )
    assert [h.id for h in window] == ["decision:AAPL:5"]
    both = await rig.memory.recall(MemoryQuery(symbol="AAPL", types=["decision", "outcome"], limit=10))
    assert {h.id for h in both} == {"decision:AAPL:1", "decision:AAPL:5", "o9"}
    only = await rig.memory.recall(MemoryQuery(symbol="AAPL", types=["outcome"]))
    assert [h.id for h in only] == ["o9"]


async def test_invalidation_is_reversible(rig: Rig) -> None:
    await rig.memory.retain_many([decision("AAPL", 1), decision("AAPL", 2)])
    await rig.memory.invalidate("decision:AAPL:1", reason="bad tick")
    assert [h.id for h in await rig.memory.recall({"symbol": "AAPL"})] == ["decision:AAPL:2"]
    await rig.memory.restore("decision:AAPL:1")
    assert {h.id for h in await rig.memory.recall({"symbol": "AAPL"})} == {
        "decision:AAPL:1",
        "decision:AAPL:2",
    }


async def test_every_call_carries_the_correlation_id_and_a_traceparent(rig: Rig) -> None:
    with bind_correlation_id("corr_hindsight_test"):
        await rig.memory.retain(decision("AAPL", 1))
        await rig.memory.recall({"symbol": "AAPL"})
    assert len(rig.fake.requests) == 2
    for _, _, headers, _ in rig.fake.requests:
        assert headers["x-correlation-id"] == "corr_hindsight_test"
        assert headers["x-flow-id"] == "corr_hindsight_test"
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", headers["traceparent"])


async def test_banks_and_health(rig: Rig) -> None:
    await rig.memory.retain(decision("AAPL", 1))
    await rig.memory.retain(decision("AAPL", 2), bank="signals")
    assert await rig.memory.banks() == ["signals", "trade_decisions"]
    assert (await rig.memory.health()).ok


@pytest.mark.parametrize(
    ("faults", "needle"),
    [
        ({"status": 503}, "HTTP 503"),
        ({"status": 500}, "HTTP 500"),
        ({"status": 429, "retry_after": 30}, "HTTP 429"),
        ({"garbage": True}, "not JSON"),
        ({"oversized": True}, "larger than"),
        ({"hang_s": 1.5}, "timed out"),
    ],
)
async def test_failure_modes_raise_memory_unavailable(rig: Rig, faults: dict[str, Any], needle: str) -> None:
    for key, value in faults.items():
        setattr(rig.fake.faults, key, value)
    with pytest.raises(MemoryUnavailableError, match=needle):
        await rig.memory.recall({"symbol": "AAPL"})
    rig.fake.faults.clear()
    assert await rig.memory.recall({"symbol": "AAPL"}) == []  # and it recovers once the server does


async def test_a_short_retry_after_is_honoured_once(rig: Rig) -> None:
    rig.fake.faults.status, rig.fake.faults.retry_after, rig.fake.faults.count = 429, 0.05, 1
    assert await rig.memory.retain(decision("AAPL", 1)) == "decision:AAPL:1"
    assert [r[1] for r in rig.fake.requests].count("/v1/default/banks/trade_decisions/memories") == 2
    assert len(rig.fake.units) == 1


async def test_a_server_that_is_not_there_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = HindsightBackend(f"http://127.0.0.1:{port}", timeout_s=0.5, connect_timeout_s=0.5)
    try:
        with pytest.raises(MemoryUnavailableError, match="unreachable"):
            await backend.retain("trade_decisions", MemoryItem.model_validate(decision("AAPL", 1)))
        assert not (await backend.health()).ok
    finally:
        await backend.close()


async def test_items_from_other_clients_are_mapped_field_by_field(rig: Rig) -> None:
    async with httpx.AsyncClient(base_url=rig.url) as client:
        await client.post(
            "/v1/default/banks/market_events/memories",
            json={
                "items": [
                    {
                        "content": "NVDA earnings beat " + "x" * 600,
                        "timestamp": "2024-05-22T20:05:00",
                        "context": "earnings",
                        "metadata": {"symbol": "NVDA"},
                        "document_id": "ext-1",
                        # Found by symbol through our namespaced filter tag; its own tags stay its own.
                        "tags": ["sym:nvda", "jax:sym:nvda"],
                    }
                ]
            },
        )
    [hit] = await rig.memory.recall({"symbol": "NVDA", "q": "earnings"}, bank="market_events")
    assert hit.id == "ext-1" and hit.type == "earnings" and hit.symbol == "NVDA"
    assert len(hit.summary) == 500 and hit.data is not None and hit.data["content"].startswith("NVDA")
    assert hit.ts == datetime(2024, 5, 22, 20, 5, tzinfo=UTC)
    assert ITEM_METADATA_KEY not in (hit.data.get("metadata") or {})
    assert hit.tags == ["sym:nvda"]


def outcome(symbol: str, n: int, result: str) -> dict[str, Any]:
    ts = datetime.now(UTC) - timedelta(days=n)
    return {
        "id": f"outcome:{symbol}:{n}",
        "ts": ts.isoformat(),
        "type": "outcome",
        "symbol": symbol,
        "tags": ["outcome", f"outcome:{result}"],
        "summary": f"{symbol} trade {n} closed: {result}",
        "data": {"outcome": result},
        "source": {"system": "jax-orchestrator"},
    }


async def test_reflect_falls_back_to_local_reflection_without_an_llm_and_says_so(rig: Rig) -> None:
    await rig.memory.retain_many(
        [outcome("AAPL", 1, "win"), outcome("AAPL", 2, "win"), outcome("AAPL", 3, "loss")],
        bank="trade_outcomes",
    )
    beliefs = await rig.memory.reflect(
        {"query": "how did AAPL trades go", "window_days": 30}, bank="trade_outcomes"
    )
    reflect_calls = [r for r in rig.fake.requests if r[1].endswith("/reflect")]
    assert len(reflect_calls) == 1  # the server was asked first (and answered 400: no LLM)
    balance = next(b for b in beliefs if b.data and b.data["belief_type"] == "outcome_balance")
    assert (
        balance.type == "belief" and balance.source is not None and balance.source.system == "jax-reflection"
    )
    assert balance.data is not None
    assert balance.data["reflection"] == "local" and "HTTP 400" in balance.data["fallback_reason"]
    assert balance.data["confidence"] == pytest.approx(0.65)  # 2 wins, 1 loss
    assert set(balance.data["evidence_ids"]) == {"outcome:AAPL:1", "outcome:AAPL:2", "outcome:AAPL:3"}


async def test_reflect_uses_the_servers_answer_when_it_has_an_llm(rig: Rig) -> None:
    rig.fake.faults.reflect_llm = True
    await rig.memory.retain(outcome("AAPL", 1, "win"), bank="trade_outcomes")
    [belief] = await rig.memory.reflect({"query": "AAPL trade"}, bank="trade_outcomes")
    assert belief.data is not None and belief.data["reflection"] == "hindsight"
    assert belief.summary.startswith("Based on 1 memories")
    assert len(belief.data["evidence_ids"]) == 1
