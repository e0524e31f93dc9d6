"""Correlation ids: read from X-Correlation-ID / X-Flow-ID / X-Request-ID, generated when absent,
echoed under both names, and carried by the runs a request starts and by their audit rows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from tests.api.helpers import SIM_SYMBOLS, Service, wait_for_run

from jax_assistant.api import create_app
from jax_assistant.config import Settings
from jax_assistant.observability.correlation import bind_correlation_id


@pytest.fixture
async def asgi_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client; ASGITransport does not run the lifespan, so it is entered here."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        yield client


@pytest.mark.parametrize("header", ["X-Correlation-ID", "X-Flow-ID", "X-Request-ID", "x-flow-id"])
async def test_given_id_is_echoed_under_both_names(service: Service, header: str) -> None:
    resp = await service.client.get("/health", headers={header: "flow_1700000000000000000_abcd1234"})
    assert resp.headers["X-Correlation-ID"] == "flow_1700000000000000000_abcd1234"
    assert resp.headers["X-Flow-ID"] == "flow_1700000000000000000_abcd1234"


async def test_primary_header_wins_over_aliases(service: Service) -> None:
    resp = await service.client.get(
        "/health", headers={"X-Request-ID": "req-3", "X-Flow-ID": "flow-2", "X-Correlation-ID": "corr-1"}
    )
    assert resp.headers["X-Correlation-ID"] == "corr-1"


async def test_an_unusable_header_falls_back_to_the_next_alias_or_a_new_id(service: Service) -> None:
    resp = await service.client.get(
        "/health", headers={"X-Correlation-ID": "x" * 500, "X-Flow-ID": "flow-ok"}
    )
    assert resp.headers["X-Correlation-ID"] == "flow-ok"
    resp = await service.client.get("/health", headers={"X-Correlation-ID": "y" * 500})
    assert resp.headers["X-Correlation-ID"].startswith("corr_")


async def test_an_id_is_generated_per_request_when_absent(service: Service) -> None:
    first = await service.client.get("/health")
    second = await service.client.get("/health")
    for resp in (first, second):
        cid = resp.headers["X-Correlation-ID"]
        assert cid.startswith("corr_") and len(cid) == len("corr_") + 32
        assert resp.headers["X-Flow-ID"] == cid
    assert first.headers["X-Correlation-ID"] != second.headers["X-Correlation-ID"]


async def test_in_process_requests_never_inherit_the_callers_id(asgi_client: httpx.AsyncClient) -> None:
    """With an in-process transport the app runs in the caller's context; a bound id must not leak in."""
    with bind_correlation_id("corr-of-the-test-itself"):
        resp = await asgi_client.get("/health")
        echoed = await asgi_client.get("/health", headers={"X-Flow-ID": "flow-given"})
    assert resp.headers["X-Correlation-ID"] != "corr-of-the-test-itself"
    assert resp.headers["X-Correlation-ID"].startswith("corr_")
    assert echoed.headers["X-Correlation-ID"] == "flow-given"
    assert echoed.headers["X-Flow-ID"] == "flow-given"


@pytest.mark.parametrize("header", ["X-Correlation-ID", "X-Flow-ID", None])
async def test_the_request_id_reaches_the_run_and_its_audit_rows(
    service: Service, header: str | None
) -> None:
    client = service.client
    given = {header: f"flow-run-{header}"} if header else {}
    resp = await client.post("/process", json={"symbols": list(SIM_SYMBOLS[:2])}, headers=given)
    assert resp.status_code == 202
    cid = resp.headers["X-Correlation-ID"]
    if header:
        assert cid == f"flow-run-{header}"
    assert resp.json()["correlationId"] == cid
    run_id = resp.json()["runId"]

    body = await wait_for_run(client, run_id)
    assert body["run"]["correlationId"] == cid

    audit = (await client.get("/audit", params={"correlation_id": cid})).json()
    assert {e["correlationId"] for e in audit} == {cid}
    actions = [e["action"] for e in reversed(audit)]  # served newest first
    assert actions[0] == "api.process"  # the request is audited before the run starts
    assert {"run.started", "run.finished", "symbol.finished", "stage.detect_events"} <= set(actions)
    assert actions.count("symbol.finished") == 2
    by_run = (await client.get("/audit", params={"run_id": run_id})).json()
    assert {e["id"] for e in by_run} == {e["id"] for e in audit}
    assert set(audit[0]) == {"id", "correlationId", "action", "outcome", "timestamp", "payload", "error"}


async def test_audit_filters_and_limits(service: Service) -> None:
    client = service.client
    resp = await client.post("/process", json={"symbols": [SIM_SYMBOLS[0]]}, headers={"X-Flow-ID": "flow-a"})
    await wait_for_run(client, resp.json()["runId"])
    assert (await client.get("/audit", params={"correlation_id": "flow-nobody"})).json() == []
    assert len((await client.get("/audit", params={"correlation_id": "flow-a", "limit": 2})).json()) == 2
    assert (await client.get("/audit", params={"limit": 0})).status_code == 422
