"""Service endpoints: health, status, metrics, and the JSON error shape."""

from __future__ import annotations

import httpx
import pytest
from tests.api.helpers import SIM_SYMBOLS, Service, serve, wait_for_run

from jax_assistant import __version__
from jax_assistant.api import create_app
from jax_assistant.config import DEFAULT_PIPELINE, Settings


async def test_health_has_the_contract_shape(service: Service) -> None:
    resp = await service.client.get("/health")
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"status", "service", "version", "uptime"}
    assert body["status"] == "healthy"
    assert body["service"] == "jax-orchestrator"
    assert body["version"] == __version__
    assert isinstance(body["uptime"], float) and body["uptime"] >= 0


async def test_status_shows_flow_control_breakers_and_pipeline(service: Service) -> None:
    resp = await service.client.get("/status")
    assert resp.status_code == 200
    body = resp.json()
    assert body["pipeline"] == DEFAULT_PIPELINE
    assert body["queueDepth"] == 0 and body["inFlight"] == 0
    assert body["activeRuns"] == {}
    assert body["uptime"] >= 0
    breakers = body["resilience"]["breakers"]
    assert {"memory", "research.dexter"} <= set(breakers)
    assert {"state", "failure_rate", "calls", "not_permitted"} <= set(breakers["memory"])
    assert breakers["memory"]["state"] == "closed"
    assert {"rate_limits", "bulkheads"} <= set(body["resilience"])
    assert body["runs"]["startupResume"]["state"] == "done"


@pytest.mark.parametrize("path", ["/metrics", "/metrics/prometheus"])
async def test_metrics_after_a_run(service: Service, path: str) -> None:
    client = service.client
    resp = await client.post("/process", json={"symbols": list(SIM_SYMBOLS[:2])})
    await wait_for_run(client, resp.json()["runId"])
    resp = await client.get(path)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert "jax_orchestrator_runs_total 1.0" in text
    assert "jax_orchestrator_runs_completed_total 1.0" in text
    assert "jax_orchestrator_runs_failed_total 0.0" in text
    assert 'jax_stage_duration_seconds_count{stage="detect_events",status="ok"} 2.0' in text


async def test_metrics_disabled_is_a_clear_404(database_url: str) -> None:
    settings = Settings(database_url=database_url, metrics_enabled=False)
    async with serve(create_app(settings)) as svc:
        for path in ("/metrics", "/metrics/prometheus"):
            resp = await svc.client.get(path)
            assert resp.status_code == 404
            assert "metrics are disabled" in resp.json()["error"]


async def test_errors_are_json_with_the_correlation_id(service: Service) -> None:
    client = service.client
    resp = await client.get("/no/such/route")
    assert resp.status_code == 404
    assert resp.json() == {"error": "Not Found"}
    assert resp.headers["X-Correlation-ID"]

    resp = await client.delete("/health")
    assert resp.status_code == 405
    assert "error" in resp.json()


async def test_an_unhandled_error_is_a_json_500_that_keeps_the_correlation_id(settings: Settings) -> None:
    app = create_app(settings)

    async def boom() -> None:
        raise RuntimeError("kaput")

    app.add_api_route("/boom", boom, methods=["GET"])
    async with serve(app) as svc:
        resp = await svc.client.get("/boom", headers={"X-Correlation-ID": "corr-boom-1"})
        assert resp.status_code == 500
        assert resp.json() == {"error": "internal server error", "correlationId": "corr-boom-1"}
        assert resp.headers["X-Correlation-ID"] == "corr-boom-1"
        assert resp.headers["X-Flow-ID"] == "corr-boom-1"
        # The server survives it.
        assert (await svc.client.get("/health")).status_code == 200


async def test_requests_before_startup_never_see_a_closed_orchestrator(settings: Settings) -> None:
    """In-process clients (no lifespan) get a clear 500, not an AttributeError deep in storage."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        resp = await client.get("/runs")
    assert resp.status_code == 500
    assert resp.json()["error"] == "internal server error"
