"""Issue 8 §6: every compatibility route answers in the shape of shared/reference/jax-contracts.md."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.api.helpers import SIM_SYMBOLS, Service, serve, wait_for_run

from jax_assistant.api import create_app
from jax_assistant.config import Settings


@pytest.fixture
async def svc(settings: Settings, api_headers: dict[str, str]) -> AsyncIterator[Service]:
    async with serve(create_app(settings), headers=api_headers) as service:
        yield service


async def test_orchestrate_defaults_trigger_and_takes_a_string_context(svc: Service) -> None:
    client = svc.client
    resp = await client.post(
        "/orchestrate",
        json={"symbol": "acme.sim", "context": "gap up on earnings"},
        headers={"X-Flow-ID": "f-o"},
    )
    assert resp.status_code == 201, resp.text
    assert set(resp.json()) == {"run_id", "status"} and resp.json()["status"] == "running"
    done = await wait_for_run(client, resp.json()["run_id"])
    assert done["run"]["symbols"] == ["ACME.SIM"]
    audit = (await client.get("/audit", params={"correlation_id": "f-o"})).json()
    request = audit[-1]
    assert request["payload"]["trigger_type"] == "manual"
    assert request["payload"]["context"] == "gap up on earnings"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"symbol": "ACME.SIM", "trigger_type": "cron"}, "trigger_type"),
        ({"trigger_type": "manual"}, "symbol"),
        ({"symbol": "ACME.SIM", "context": 42}, "context"),
        ([1, 2], "body"),
    ],
)
async def test_orchestrate_validation_errors_are_400(svc: Service, body: Any, field: str) -> None:
    resp = await svc.client.post("/orchestrate", json=body)
    assert resp.status_code == 400, resp.text
    payload = resp.json()
    assert field in payload["error"]
    assert payload["details"][0]["field"].startswith(field)
    assert (await svc.client.get("/runs")).json() == []


async def test_v1_orchestrate_then_poll_as_the_front_end_does(svc: Service) -> None:
    client = svc.client
    resp = await client.post(
        "/api/v1/orchestrate",
        json={
            "bank": "trade_decisions",
            "symbol": SIM_SYMBOLS[1],
            "strategy": "earnings_gap_v1",
            "constraints": {"maxRisk": 2},
            "userContext": "watch the gap",
            "tags": ["gap"],
            "researchQueries": ["why did it gap?"],
        },
    )
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["runId"]
    assert resp.headers["Location"] == f"/api/v1/orchestrate/runs/{run_id}"

    deadline = time.monotonic() + 30
    while True:  # the front end polls every 2 s; faster here
        view = (await client.get(f"/api/v1/orchestrate/runs/{run_id}")).json()
        assert set(view) == {"plan", "tools", "runId", "duration", "status"}
        assert view["status"] in ("running", "completed", "failed")
        if view["status"] != "running":
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert view["status"] == "completed" and view["runId"] == run_id
    plan = view["plan"]
    assert set(plan) == {"summary", "steps", "action", "confidence", "reasoningNotes"}
    assert SIM_SYMBOLS[1] in plan["summary"] and plan["steps"]
    assert all(step.startswith(f"{SIM_SYMBOLS[1]}: ") for step in plan["steps"])
    assert 0 <= plan["confidence"] <= 1 and isinstance(plan["action"], str) and plan["action"]
    assert [t["name"] for t in view["tools"]] == (await client.get("/status")).json()["pipeline"]
    assert all(t["success"] for t in view["tools"])
    assert view["duration"] >= 0

    # The run's own stored decisions decide the action: an allowed setup, or no_trade.
    detail = await wait_for_run(client, run_id)
    allowed = [t for s in detail["symbols"] for t in s["trades"] if t["risk"]["constraints"]["allowed"]]
    if allowed:
        best = max(allowed, key=lambda t: t["setup"]["confidence"])
        assert plan["action"].startswith(f"{best['setup']['direction']} {SIM_SYMBOLS[1]}")
        assert plan["confidence"] == best["setup"]["confidence"]
    else:
        assert plan["action"] == "no_trade" and plan["confidence"] == 0

    runs = (await client.get("/api/v1/orchestrate/runs", params={"limit": 20})).json()
    assert runs == [
        {"runId": run_id, "symbol": SIM_SYMBOLS[1], "timestamp": runs[0]["timestamp"], "success": True}
    ]
    assert runs[0]["timestamp"].endswith("Z")
    assert (await client.get("/api/v1/orchestrate/runs/run_nope")).status_code == 404
    bad = await client.post("/api/v1/orchestrate", json={"bank": "x"})
    assert bad.status_code == 400 and "symbol" in bad.json()["error"]


async def test_v1_symbol_process_returns_events_and_sized_trades(svc: Service) -> None:
    client = svc.client
    body = {"accountSize": 25_000, "riskPercent": 1, "gapThresholdPct": 0.5}
    resp = await client.post(f"/symbols/{SIM_SYMBOLS[0].lower()}/process", json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert set(out) == {"events", "trades"}
    for event in out["events"]:
        assert {"id", "symbol", "type", "time", "payload"} <= set(event)
        if event["type"] == "gap_open":
            assert abs(event["payload"]["gapPct"]) >= 0.5  # the request's threshold was applied
    for trade in out["trades"]:
        assert set(trade) == {"setup", "risk"}
        assert {"id", "symbol", "direction", "entry", "stop", "targets", "strategyId"} <= set(trade["setup"])
        assert {"positionSize", "riskPerUnit", "totalRisk", "rMultiple"} <= set(trade["risk"])
        assert trade["risk"]["accountSize"] == 25_000

    # A lower threshold never finds fewer gaps than the default one.
    default = (await client.post(f"/symbols/{SIM_SYMBOLS[0]}/process")).json()
    gaps = sum(1 for e in out["events"] if e["type"] == "gap_open")
    assert gaps >= sum(1 for e in default["events"] if e["type"] == "gap_open")

    unknown = await client.post("/symbols/NOPE.SIM/process", json={})
    assert unknown.status_code == 400 and "unknown symbol" in unknown.json()["error"]
    bad = await client.post(f"/symbols/{SIM_SYMBOLS[0]}/process", json={"riskPercent": -1})
    assert bad.status_code == 400 and "riskPercent" in bad.json()["error"]


async def test_risk_calc_contract_formulas_and_errors(svc: Service) -> None:
    client = svc.client
    resp = await client.post(
        "/risk/calc", json={"accountSize": 10_000, "riskPercent": 1, "entry": 1.1, "stop": 1.0, "target": 1.4}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"positionSize": 1000, "riskPerUnit": 0.1, "totalRisk": 100.0, "rMultiple": 3.0}
    defaults = (await client.post("/risk/calc", json={"entry": 50, "stop": 48})).json()
    assert defaults["positionSize"] == 150  # 10 000 x 3 % / 2
    assert defaults["rMultiple"] == 0.0

    for body, field in (
        ({"accountSize": 0, "riskPercent": 1, "entry": 10, "stop": 9}, "accountSize"),
        ({"accountSize": 1000, "riskPercent": -2, "entry": 10, "stop": 9}, "riskPercent"),
        ({"accountSize": 1000, "riskPercent": 1, "entry": 10, "stop": 10}, "stop"),
        ({"accountSize": 1000, "riskPercent": 1, "stop": 9}, "entry"),
        ({"accountSize": "lots", "riskPercent": 1, "entry": 10, "stop": 9}, "accountSize"),
    ):
        resp = await client.post("/risk/calc", json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["error"].startswith(field), resp.json()


async def test_trades_in_the_v1_shape(svc: Service) -> None:
    client = svc.client
    await wait_for_run(
        client, (await client.post("/process", json={"symbols": list(SIM_SYMBOLS)})).json()["runId"]
    )
    trades = (await client.get("/trades", params={"limit": 1000})).json()
    assert trades
    for t in trades:
        assert {"setup", "risk", "event", "createdAt"} <= set(t)
        assert {"positionSize", "riskPerUnit", "totalRisk", "rMultiple"} <= set(t["risk"])
    one = await client.get(f"/trades/{trades[0]['setup']['id']}")
    assert one.status_code == 200 and one.json()["setup"]["id"] == trades[0]["setup"]["id"]
    assert (await client.get("/trades/ts_nope")).status_code == 404
    strategy = trades[0]["setup"]["strategyId"]
    by = (await client.get("/trades", params={"strategyId": strategy, "limit": 1})).json()
    assert len(by) == 1 and by[0]["setup"]["strategyId"] == strategy
