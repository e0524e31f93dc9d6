"""`POST /process` answered before routing (api/hot_reads.py): the plain request skips FastAPI's
routing, every other form takes the route, and both give the same answers, errors and audit rows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tests.api.helpers import SIM_SYMBOLS, serve, wait_for_run

from jax_assistant.api import create_app
from jax_assistant.api.hot_reads import HotReadsMiddleware
from jax_assistant.config import ApiConfig, Settings
from jax_assistant.pipeline import plugins

# `?wait=false` is what the plain request means, through the route.
ROUTED = "/process?wait=false"


def count_route_calls(app: Any) -> list[Scope]:
    """The requests that reach the `POST /process` route (its ASGI app, wrapped)."""
    calls: list[Scope] = []
    scope = {"type": "http", "method": "POST", "path": "/process", "root_path": ""}
    route = next(r for r in app.router.routes if r.matches(scope)[0] is Match.FULL)
    inner: ASGIApp = route.app

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope)
        await inner(scope, receive, send)

    route.app = counted
    return calls


def without_ids(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("runId", "correlationId")}


async def test_the_plain_request_skips_the_route_and_answers_as_it(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url))
    calls = count_route_calls(app)
    async with serve(app) as svc:
        client = svc.client
        hot = await client.post(
            "/process", json={"symbols": [SIM_SYMBOLS[0]]}, headers={"X-Request-ID": "r-1"}
        )
        assert hot.status_code == 202, hot.text
        assert calls == []
        routed = await client.post(ROUTED, json={"symbols": [SIM_SYMBOLS[0]]})
        assert routed.status_code == 202 and len(calls) == 1
        assert without_ids(hot.json()) == without_ids(routed.json()) == {"status": "running"}
        assert hot.json()["correlationId"] == hot.headers["X-Correlation-ID"] == "r-1"
        assert hot.headers["location"] == f"/runs/{hot.json()['runId']}"
        assert sorted(hot.headers.keys()) == sorted(routed.headers.keys())
        for resp in (hot, routed):
            done = await wait_for_run(client, resp.json()["runId"])
            assert done["run"]["status"] == "completed"
        started = [
            e
            for e in (await client.get("/audit")).json()
            if e["action"] == "api.process" and e["outcome"] == "started"
        ]
        assert [without_ids(e["payload"]) for e in started] == [
            without_ids(e["payload"]) for e in started[:1]
        ] * 2


async def test_every_other_form_takes_the_route(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url))
    calls = count_route_calls(app)
    async with serve(app) as svc:
        client = svc.client
        body = {"symbols": [SIM_SYMBOLS[0]]}
        forms: list[dict[str, Any]] = [
            {"url": ROUTED, "json": body},  # a query string
            {"url": "/process", "json": body, "headers": {"Idempotency-Key": "k-1"}},
            {"url": "/process", "content": b'{"symbols": []}', "headers": {"Content-Type": "text/plain"}},
            {"url": "/process", "content": b"", "headers": {"Content-Type": "application/json"}},
            {"url": "/process", "content": b"null", "headers": {"Content-Type": "application/json"}},
            {"url": "/process", "json": {"symbols": "ACME.SIM"}},  # refused by the model: a 422
            {"url": "/process", "json": {"nope": 1}},
            {"url": "/process", "content": b"{not json", "headers": {"Content-Type": "application/json"}},
        ]
        codes = []
        for form in forms:
            codes.append((await client.post(**form)).status_code)
        assert len(calls) == len(forms)
        assert codes == [202, 202, 422, 202, 202, 422, 422, 422]


async def test_errors_and_rejected_audit_rows_match_the_route(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url))
    calls = count_route_calls(app)
    async with serve(app) as svc:
        client = svc.client
        for body in ({"symbols": ["NOPE.SIM"]}, {"symbols": [SIM_SYMBOLS[0]], "asOf": "2999-01-01"}):
            hot = await client.post("/process", json=body)
            routed = await client.post(ROUTED, json=body)
            assert hot.status_code == routed.status_code == 400, hot.text
            assert hot.json() == routed.json()
            assert hot.headers["content-type"] == routed.headers["content-type"]
        assert len(calls) == 2  # only the routed ones
        rejected = [e for e in (await client.get("/audit")).json() if e["outcome"] == "rejected"]
        assert len(rejected) == 4  # one a request, either way
        assert [e["payload"] for e in rejected[0::2]] == [e["payload"] for e in rejected[1::2]]


async def test_a_full_queue_answers_the_hot_request_429_with_retry_after(database_url: str) -> None:
    api = ApiConfig(auth="off", max_symbols_in_flight=1, max_queued_runs=0)
    app = create_app(Settings(database_url=database_url, api=api))
    async with serve(app) as svc:
        app.state.admission.close()  # stopping: every run request is refused
        hot = await svc.client.post("/process", json={"symbols": [SIM_SYMBOLS[0]]})
        routed = await svc.client.post(ROUTED, json={"symbols": [SIM_SYMBOLS[0]]})
        assert hot.status_code == routed.status_code == 503, hot.text
        assert hot.json() == routed.json()
        assert hot.headers["Retry-After"] == routed.headers["Retry-After"]


async def _call(mw: HotReadsMiddleware, scope: Scope, body: bytes) -> list[Message]:
    sent: list[Message] = []
    pending = [{"type": "http.request", "body": body[:2], "more_body": True}]
    pending.append({"type": "http.request", "body": body[2:], "more_body": False})

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await mw(scope, receive, send)
    return sent


async def test_the_middleware_replays_a_declined_body_and_maps_what_the_call_raises() -> None:
    routed: list[bytes] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        routed.append(message["body"])
        await PlainTextResponse("routed")(scope, receive, send)

    async def teapot(_: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"mapped {exc}", status_code=418)

    async def fails() -> Response:
        raise LookupError("x")

    def post(scope: Scope, body: bytes) -> Callable[[], Awaitable[Response]] | None:
        if body == b"decline":
            return None
        return fails if body == b"raise" else (lambda: answer(body))

    async def answer(body: bytes) -> Response:
        return PlainTextResponse(f"hot {body.decode()}")

    mw = HotReadsMiddleware(route, handlers={}, posts={"/p": post}, exception_handlers={LookupError: teapot})
    scope: Scope = {"type": "http", "method": "POST", "path": "/p", "headers": [], "query_string": b""}
    assert (await _call(mw, dict(scope), b"hello"))[1]["body"] == b"hot hello"
    assert (await _call(mw, dict(scope), b"decline"))[1]["body"] == b"routed"
    assert routed == [b"de"]  # the body as it came, message by message
    mapped = await _call(mw, dict(scope), b"raise")
    assert mapped[0]["status"] == 418 and mapped[1]["body"] == b"mapped x"
    # FastAPI's telemetry names the request's span after its route: such a request takes the route.
    routed.clear()
    assert (await _call(mw, {**scope, "fastapi.telemetry": object()}, b"hello"))[1]["body"] == b"routed"
    assert routed == [b"he"]


async def test_the_pipeline_is_built_before_serving_and_a_broken_one_still_serves(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = plugins.discover_stage_factories
    discovered: list[int] = []

    def counting() -> dict[str, Any]:
        discovered.append(1)
        return found()

    monkeypatch.setattr(plugins, "discover_stage_factories", counting)
    async with serve(create_app(Settings(database_url=database_url))) as svc:
        assert discovered == [1]  # at start-up, not in the first run request
        assert (await svc.client.post("/process", json={"symbols": [SIM_SYMBOLS[0]]})).status_code == 202
        assert discovered == [1]
    broken = Settings(database_url=database_url, pipeline=["no_such_stage"])
    async with serve(create_app(broken)) as svc:
        assert (await svc.client.get("/health")).status_code == 200
        refused = await svc.client.post("/process", json={"symbols": [SIM_SYMBOLS[0]]})
        assert refused.status_code == 500 and "no_such_stage" in refused.json()["error"]
