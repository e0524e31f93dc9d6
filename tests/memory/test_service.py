"""The jax-memory contract over HTTP against `jax memory serve`'s app (real uvicorn on loopback).

Its own store is parametrised over SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import make_url
from tests.memory.svc import MemoryService, decision, memory_service
from tests.pgutil import admin_url, backend_url

from jax_assistant.memory import Memory
from jax_assistant.memory.hindsight import HindsightBackend

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
ITEM_KEYS = {"id", "ts", "type", "symbol", "tags", "summary", "data", "source"}


@pytest.fixture(params=BACKENDS)
async def svc(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MemoryService]:
    async with backend_url(request.param, tmp_path, prefix="jax_memsvc") as url, memory_service(url) as s:
        yield s


async def test_retain_then_recall_in_the_contract_shapes(svc: MemoryService) -> None:
    r = await svc.tool("memory.retain", {"bank": "trade_decisions", "item": decision("AAPL", 1)})
    assert r.status_code == 200, r.text
    assert r.json() == {"output": {"id": "decision:AAPL:1"}}
    await svc.tool("memory.retain", {"bank": "trade_decisions", "item": decision("MSFT", 2)})
    r = await svc.tool("memory.recall", {"bank": "trade_decisions", "query": {"q": "gap", "symbol": "aapl"}})
    assert r.status_code == 200, r.text
    [hit] = r.json()["output"]["items"]
    assert set(hit) >= ITEM_KEYS
    assert hit["id"] == "decision:AAPL:1" and hit["symbol"] == "AAPL" and hit["type"] == "decision"
    assert hit["source"] == {"system": "jax-orchestrator", "ref": "run_1"}
    assert hit["data"]["broker_key"] == "[REDACTED]"  # redacted before it was stored


async def test_retain_many_is_idempotent_by_document_id(svc: MemoryService) -> None:
    items = [decision("AAPL", n) for n in range(3)]
    r = await svc.tool("memory.retain_many", {"bank": "trade_decisions", "items": items})
    assert r.json()["output"]["ids"] == [i["id"] for i in items]
    await svc.tool("memory.retain_many", {"bank": "trade_decisions", "items": items})
    r = await svc.tool("memory.recall", {"bank": "trade_decisions", "query": {"symbol": "AAPL", "limit": 50}})
    assert sorted(h["id"] for h in r.json()["output"]["items"]) == sorted(i["id"] for i in items)


async def test_reflect_answers_beliefs(svc: MemoryService) -> None:
    r = await svc.tool("memory.reflect", {"bank": "trade_outcomes", "params": {"query": "what worked"}})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["output"]["items"], list)


def _without(field: str) -> dict[str, Any]:
    item = decision("AAPL", 1)
    item.pop(field)
    return item


@pytest.mark.parametrize(
    ("tool", "inp", "message"),
    [
        ("memory.retain", {"item": decision("AAPL", 1)}, "bank is required"),
        ("memory.retain", {"bank": " ", "item": decision("AAPL", 1)}, "bank is required"),
        ("memory.recall", {"query": {"q": "x"}}, "bank is required"),
        ("memory.reflect", {"bank": "trade_outcomes", "params": {}}, "params.query is required"),
        ("memory.reflect", {"bank": "trade_outcomes"}, "params.query is required"),
        ("memory.reflect", {"bank": "trade_outcomes", "params": {"query": "  "}}, "params.query is required"),
        (
            "memory.retain",
            {"bank": "trade_decisions", "item": _without("ts")},
            "memory item timestamp required",
        ),
        (
            "memory.retain",
            {"bank": "trade_decisions", "item": {**decision("AAPL", 1), "type": " "}},
            "memory item type required",
        ),
        (
            "memory.retain",
            {"bank": "trade_decisions", "item": {**decision("AAPL", 1), "summary": ""}},
            "memory item summary length invalid",
        ),
        (
            "memory.retain",
            {"bank": "trade_decisions", "item": {**decision("AAPL", 1), "summary": "x" * 501}},
            "memory item summary length invalid",
        ),
        ("memory.retain", {"bank": "trade_decisions", "item": _without("data")}, "memory item data required"),
        (
            "memory.retain",
            {"bank": "trade_decisions", "item": _without("source")},
            "memory item source required",
        ),
        (
            "memory.retain",
            {"bank": "trade_decisions", "item": {**decision("AAPL", 1), "source": {"ref": "x"}}},
            "memory item source required",
        ),
        (
            "memory.retain",
            {
                "bank": "trade_decisions",
                "item": {**decision("AAPL", 1), "tags": [f"t{i}" for i in range(11)]},
            },
            "memory item has too many tags",
        ),
        (
            "memory.retain",
            {"bank": "trade_decisions", "item": {**decision("AAPL", 1), "tags": ["ok", "  "]}},
            "memory item tags must be lowercase and non-empty",
        ),
        ("memory.forget", {"bank": "trade_decisions"}, "unknown tool"),
    ],
)
async def test_every_validation_message(svc: MemoryService, tool: str, inp: Any, message: str) -> None:
    r = await svc.tool(tool, inp)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == message


async def test_validation_follows_the_contract_order(svc: MemoryService) -> None:
    # Several rules broken at once: the first in the contract's order is the one reported.
    item = {"type": "", "summary": "", "tags": ["A"] * 11}
    r = await svc.tool("memory.retain", {"bank": "trade_decisions", "item": item})
    assert r.json()["error"] == "memory item timestamp required"


async def test_tags_are_trimmed_and_lowercased(svc: MemoryService) -> None:
    item = {**decision("AAPL", 1), "tags": ["  Decision ", "SYM:AAPL"]}
    await svc.tool("memory.retain", {"bank": "trade_decisions", "item": item})
    r = await svc.tool("memory.recall", {"bank": "trade_decisions", "query": {"tags": ["sym:aapl"]}})
    assert r.json()["output"]["items"][0]["tags"] == ["decision", "sym:aapl"]


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"', b""])
async def test_invalid_json(svc: MemoryService, body: bytes) -> None:
    r = await svc.client.post("/tools", content=body, headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]) == (400, "invalid JSON")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_tools_is_post_only(svc: MemoryService, method: str) -> None:
    r = await svc.client.request(method, "/tools")
    assert r.status_code == 405
    assert r.json() == {"error": "method not allowed"}
    assert "POST" in r.headers["allow"]


async def test_unknown_memory_is_404(svc: MemoryService) -> None:
    r = await svc.tool("memory.invalidate", {"bank": "trade_decisions", "id": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["error"]


async def test_banks_and_search(svc: MemoryService) -> None:
    await svc.tool("memory.retain", {"bank": "signals", "item": decision("AAPL", 1)})
    await svc.tool("memory.retain", {"bank": "my_notes", "item": decision("NVDA", 2)})
    r = await svc.client.get("/v1/memory/banks")
    assert r.json() == sorted(
        ["trade_decisions", "trade_outcomes", "strategy_beliefs", "market_events", "signals", "my_notes"]
    )
    for param in ("q", "query"):
        r = await svc.client.get(
            "/v1/memory/search", params={param: "NVDA gap", "bank": "my_notes", "limit": 5}
        )
        assert r.status_code == 200, r.text
        assert [h["id"] for h in r.json()["items"]] == ["decision:NVDA:2"]
    r = await svc.client.get("/v1/memory/search", params={"q": "x", "bank": "Bad Bank"})
    assert r.status_code == 400 and "bank name" in r.json()["error"]


async def test_health_and_ready(svc: MemoryService) -> None:
    r = await svc.client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "healthy" and r.json()["service"] == "jax-memory"
    r = await svc.client.get("/ready")
    assert r.status_code == 200 and r.json()["status"] == "ready"


async def test_correlation_id_is_echoed_and_every_call_audited_under_it(svc: MemoryService) -> None:
    cid = "corr_memsvc_audit_1"
    r = await svc.tool(
        "memory.retain", {"bank": "trade_decisions", "item": decision("AAPL", 1)}, **{"X-Correlation-ID": cid}
    )
    assert r.headers["x-correlation-id"] == cid and r.headers["x-flow-id"] == cid
    await svc.tool(
        "memory.recall", {"bank": "trade_decisions", "query": {"symbol": "AAPL"}}, **{"X-Flow-ID": cid}
    )
    await svc.tool(
        "memory.reflect", {"bank": "trade_decisions", "params": {"query": "q"}}, **{"X-Flow-ID": cid}
    )
    await svc.tool("memory.retain", {"item": decision("AAPL", 2)}, **{"X-Correlation-ID": cid})  # rejected
    await svc.tool("memory.recall", {"bank": "trade_decisions"}, **{"X-Correlation-ID": "corr_other"})
    r = await svc.client.get("/audit", params={"correlationId": cid})
    events = r.json()
    assert [(e["action"], e["outcome"]) for e in events] == [
        ("memory.retain", "success"),
        ("memory.recall", "success"),
        ("memory.reflect", "success"),
        ("memory.retain", "rejected"),
    ]
    assert {e["correlationId"] for e in events} == {cid}
    assert events[0]["payload"]["id"] == "decision:AAPL:1"
    snake = await svc.client.get("/audit", params={"correlation_id": cid})
    assert snake.json() == events


async def test_a_rejected_call_is_audited_as_rejected(svc: MemoryService) -> None:
    cid = "corr_memsvc_rejected"
    r = await svc.tool(
        "memory.retain", {"bank": "trade_decisions", "item": _without("ts")}, **{"X-Correlation-ID": cid}
    )
    assert r.status_code == 400
    await svc.tool("memory.recall", {"query": {}}, **{"X-Correlation-ID": cid})  # refused: no bank
    events = (await svc.client.get("/audit", params={"correlationId": cid})).json()
    assert [(e["action"], e["outcome"], e["error"]) for e in events] == [
        ("memory.retain", "rejected", "memory item timestamp required"),
        ("memory.recall", "rejected", "bank is required"),
    ]


async def test_hindsight_clients_can_use_the_service(svc: MemoryService) -> None:
    """Our own Hindsight client, pointed at jax-memory: retain, recall, invalidate, restore, reflect."""
    memory = Memory(HindsightBackend(svc.url, timeout_s=10))
    try:
        await memory.retain_many([decision("AAPL", 1), decision("AAPL", 2), decision("MSFT", 3)])
        hits = await memory.recall({"symbol": "AAPL", "q": "gap"})
        assert {h.id for h in hits} == {"decision:AAPL:1", "decision:AAPL:2"}
        assert hits[0].scores is not None
        await memory.invalidate("decision:AAPL:1", reason="wrong fill")
        assert [h.id for h in await memory.recall({"symbol": "AAPL"})] == ["decision:AAPL:2"]
        await memory.restore("decision:AAPL:1")
        assert len(await memory.recall({"symbol": "AAPL"})) == 2
        beliefs = await memory.reflect({"query": "what worked"})
        assert isinstance(beliefs, list)
        assert "trade_decisions" in await memory.banks()
    finally:
        await memory.close()


async def test_hindsight_routes_in_their_own_shapes(svc: MemoryService) -> None:
    r = await svc.client.post(
        "/v1/default/banks/market_events/memories",
        json={
            "items": [
                {
                    "content": "TSLA volume spike after delivery numbers",
                    "timestamp": "2024-04-02T13:30:00",
                    "context": "volume_spike",
                    "metadata": {"symbol": "TSLA"},
                    "document_id": "ev-1",
                    "tags": ["sym:tsla"],
                }
            ],
            "async": False,
        },
    )
    assert r.status_code == 200, r.text
    assert (
        r.json()["success"] is True
        and r.json()["items_count"] == 1
        and r.json()["bank_id"] == "market_events"
    )
    r = await svc.client.post(
        "/v1/default/banks/market_events/memories/recall",
        json={"query": "volume spike", "tags": ["sym:tsla"], "tags_match": "all_strict"},
    )
    [hit] = r.json()["results"]
    assert {"id", "text", "type", "document_id", "metadata", "tags", "scores", "mentioned_at"} <= set(hit)
    assert hit["document_id"] == "ev-1" and hit["text"].startswith("TSLA volume spike")
    assert all(isinstance(v, str) for v in hit["metadata"].values())
    r = await svc.client.post(
        "/v1/default/banks/market_events/memories", json={"items": [{"content": "x", "metadata": {"n": 1}}]}
    )
    assert r.status_code == 400 and "metadata values must be strings" in r.json()["error"]
    r = await svc.client.post("/v1/default/banks/market_events/reflect", json={"query": "what happened"})
    assert r.status_code == 200 and "Reflected locally" in r.json()["text"]
    r = await svc.client.patch("/v1/default/banks/market_events/memories/ev-1", json={"state": "bogus"})
    assert r.status_code == 400
    r = await svc.client.get("/v1/default/banks")
    assert {"bank_id": "market_events", "name": "market_events"} in r.json()["banks"]


@pytest.mark.postgres
async def test_503_while_the_store_is_down_and_back_after(tmp_path: Path) -> None:
    async with backend_url("postgres", tmp_path, prefix="jax_memsvc_down") as url, memory_service(url) as svc:
        r = await svc.tool("memory.retain", {"bank": "trade_decisions", "item": decision("AAPL", 1)})
        assert r.status_code == 200
        name = make_url(url).database
        admin = await asyncpg.connect(
            make_url(admin_url()).set(drivername="postgresql").render_as_string(False)
        )
        try:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            for tool, inp in [
                ("memory.retain", {"bank": "trade_decisions", "item": decision("AAPL", 2)}),
                ("memory.recall", {"bank": "trade_decisions", "query": {"symbol": "AAPL"}}),
                ("memory.reflect", {"bank": "trade_decisions", "params": {"query": "q"}}),
            ]:
                r = await svc.tool(tool, inp)
                assert r.status_code == 503, (tool, r.text)
                assert r.json()["error"] == "memory store unavailable"
            assert (await svc.client.get("/ready")).status_code == 503
            assert (await svc.client.get("/health")).status_code == 200  # the process itself is alive
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
        statuses = []
        for _ in range(3):  # the pool may hand out one more dead connection before reconnecting
            r = await svc.tool("memory.recall", {"bank": "trade_decisions", "query": {"symbol": "AAPL"}})
            statuses.append(r.status_code)
            if r.status_code == 200:
                break
        assert statuses[-1] == 200, statuses
        assert [h["id"] for h in r.json()["output"]["items"]] == ["decision:AAPL:1"]
