"""/health, /status and /metrics answered before routing (api/hot_reads.py): every guard still applies,
the answers are the routes' own, and whatever is not a plain GET of those paths takes the router."""

from __future__ import annotations

import io
import json
from typing import Any

from starlette.responses import JSONResponse, Response
from tests.api.helpers import serve

from jax_assistant.api import create_app
from jax_assistant.api.hot_reads import HotReadsMiddleware
from jax_assistant.config import ApiConfig, Settings
from jax_assistant.observability import logging as obs_logging
from jax_assistant.observability.logging import configure_logging
from jax_assistant.service.auth import ApiKeyStore, ApiScope
from jax_assistant.storage import open_database

HOT = ("/health", "/status", "/metrics")


async def read_key(url: str) -> str:
    db = await open_database(url)
    try:
        return (await ApiKeyStore(db).create("reader", [ApiScope.READ]))[1]
    finally:
        await db.close()


async def test_read_auth_and_the_host_check_still_guard_the_hot_reads(database_url: str) -> None:
    key = await read_key(database_url)
    api = ApiConfig(auth="required", read_auth=True, trusted_hosts=["127.0.0.1"])
    async with serve(create_app(Settings(database_url=database_url, api=api))) as svc:
        client = svc.client
        for path in ("/status", "/metrics"):
            refused = await client.get(path)
            assert refused.status_code == 401, path
            assert refused.json()["requiredScope"] == "read"
            assert (await client.get(path, headers={"Authorization": f"Bearer {key}"})).status_code == 200
        assert (await client.get("/health")).status_code == 200  # a probe has no key
        for path in HOT:
            rebound = await client.get(
                path, headers={"Host": "evil.example", "Authorization": f"Bearer {key}"}
            )
            assert rebound.status_code == 421, path


async def test_hot_reads_echo_the_correlation_id_and_answer_as_their_routes(database_url: str) -> None:
    async with serve(create_app(Settings(database_url=database_url))) as svc:
        client = svc.client
        for path in HOT:
            resp = await client.get(path, headers={"X-Request-ID": "req-hot-1"})
            assert resp.status_code == 200, path
            assert resp.headers["X-Correlation-ID"] == resp.headers["X-Flow-ID"] == "req-hot-1"
            generated = await client.get(path)
            assert generated.headers["X-Correlation-ID"].startswith("corr_")
        status = await client.get("/status")
        assert status.headers["content-type"] == "application/json"
        assert int(status.headers["content-length"]) == len(status.content)
        assert status.json()["service"] == "jax-orchestrator" and "admission" in status.json()
        assert (await client.get("/health")).json()["status"] == "healthy"
        assert (await client.get("/metrics")).headers["content-type"].startswith("text/plain")
        # The old scrape path is not a hot read: its route answers, with the same text.
        assert (await client.get("/metrics/prometheus")).status_code == 200
        # What the router answered before for anything but a plain GET of these exact paths.
        assert (await client.head("/status")).status_code == 405
        assert (await client.post("/health")).status_code == 405
        slash = await client.get("/status/", follow_redirects=False)
        assert slash.status_code == 307 and slash.headers["location"].endswith("/status")


async def test_disabled_metrics_answer_404_from_the_hot_path_too(database_url: str) -> None:
    async with serve(create_app(Settings(database_url=database_url, metrics_enabled=False))) as svc:
        resp = await svc.client.get("/metrics")
        assert resp.status_code == 404 and "JAX_METRICS_ENABLED" in resp.json()["error"]


async def test_the_access_log_has_a_line_for_a_hot_read(database_url: str, restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream, background=True)
    settings = Settings(
        database_url=database_url, api=ApiConfig(auth="off", access_log=True, trusted_hosts=["*"])
    )
    async with serve(create_app(settings)) as svc:
        assert (await svc.client.get("/status?token=secret")).status_code == 200
    obs_logging._stop_listener()  # writes what is queued
    records = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    (line,) = [r for r in records if r.get("logger") == "jax_assistant.access"]
    # The path without its query string, as for every other route.
    assert (line["method"], line["path"], line["status"]) == ("GET", "/status", 200)


# ------------------------------------------------------------------ the middleware alone


class Recorder:
    def __init__(self) -> None:
        self.routed: list[str] = []
        self.sent: list[dict[str, Any]] = []

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        self.routed.append(f"{scope['method']} {scope['path']}")
        await Response(b"routed")(scope, receive, send)

    async def send(self, message: Any) -> None:
        self.sent.append(message)


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def http(method: str, path: str, root_path: str = "") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": root_path, "headers": []}


async def test_only_a_plain_get_of_an_exact_path_is_answered_before_routing() -> None:
    calls: list[str] = []

    async def hot() -> Response:
        calls.append("hot")
        return JSONResponse({"ok": True})

    rec = Recorder()
    middleware = HotReadsMiddleware(rec.app, handlers={"/status": hot})
    await middleware(http("GET", "/status"), receive, rec.send)
    assert calls == ["hot"] and rec.routed == [] and rec.sent[-1]["body"] == b'{"ok":true}'
    for scope in (
        http("HEAD", "/status"),
        http("POST", "/status"),
        http("GET", "/status/"),
        http("GET", "/statusx"),
        http("GET", "/api/status", root_path="/api"),  # mounted: the router strips root_path
    ):
        rec.routed.clear()
        await middleware(scope, receive, rec.send)
        assert rec.routed == [f"{scope['method']} {scope['path']}"], scope
    passed: list[str] = []

    async def inner(scope: Any, _receive: Any, _send: Any) -> None:
        passed.append(scope["type"])

    await HotReadsMiddleware(inner, handlers={"/status": hot})({"type": "lifespan"}, receive, rec.send)
    assert passed == ["lifespan"]
    assert calls == ["hot"]


async def test_a_handler_that_raises_leaves_the_request_to_its_route() -> None:
    async def broken() -> Response:
        raise RuntimeError("database gone")

    rec = Recorder()
    await HotReadsMiddleware(rec.app, handlers={"/status": broken})(http("GET", "/status"), receive, rec.send)
    assert rec.routed == ["GET /status"]
    assert [m["type"] for m in rec.sent] == ["http.response.start", "http.response.body"]
    assert rec.sent[-1]["body"] == b"routed"
