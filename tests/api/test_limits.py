"""Request limits against a real uvicorn on loopback: 413, depth and length 422s, trusted hosts,
slow clients, bounded unknown-symbol messages. Nothing refused is stored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn
from tests.api.helpers import LiveServer, Service, serve

from jax_assistant.api import create_app
from jax_assistant.config import ApiConfig, Settings
from jax_assistant.service.server import header_deadline_protocol


def limited(database_url: str, **api: object) -> Settings:
    return Settings(database_url=database_url, api=ApiConfig(trusted_hosts=["127.0.0.1", "localhost"], **api))


@pytest.fixture
async def svc(database_url: str) -> AsyncIterator[Service]:
    async with serve(create_app(limited(database_url, auth="off"))) as service:
        yield service


async def nothing_stored(client: httpx.AsyncClient) -> None:
    assert (await client.get("/runs")).json() == []
    assert (await client.get("/audit")).json() == []


async def test_a_body_over_the_limit_is_413_whether_declared_or_streamed(svc: Service) -> None:
    big = {"symbol": "ACME.SIM", "trigger_type": "manual", "context": {"blob": "x" * 1_200_000}}
    declared = await svc.client.post("/orchestrate", json=big)
    assert declared.status_code == 413
    assert "1000000 bytes" in declared.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer encoding
        raw = json.dumps(big).encode()
        for i in range(0, len(raw), 65_536):
            yield raw[i : i + 65_536]

    streamed = await svc.client.post(
        "/orchestrate", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    await nothing_stored(svc.client)


async def test_300_deep_context_is_a_422_from_the_limit_and_health_keeps_answering(svc: Service) -> None:
    context: object = "leaf"
    for _ in range(300):
        context = {"k": context}
    body = {"symbol": "ACME.SIM", "trigger_type": "manual", "context": context}
    headers = {"Authorization": "Bearer secret-token-value", "Cookie": "session=abc"}
    deep, *healths = await asyncio.gather(
        svc.client.post("/orchestrate", json=body, headers=headers),
        *(svc.client.get("/health") for _ in range(5)),
    )
    assert deep.status_code == 422, deep.text
    (detail,) = deep.json()["details"]
    assert detail["type"] == "max_json_depth"  # refused by the limit, before the app parsed it
    assert detail["field"].startswith("body.context.k.k")
    assert all(h.status_code == 200 for h in healths)
    await nothing_stored(svc.client)


async def test_list_and_string_lengths_are_422_naming_the_field(svc: Service) -> None:
    long_list = await svc.client.post(
        "/orchestrate",
        json={"symbol": "ACME.SIM", "trigger_type": "manual", "context": {"ids": list(range(10_001))}},
    )
    assert long_list.status_code == 422
    assert long_list.json()["details"][0] == {
        "field": "body.context.ids",
        "in": "body",
        "message": "list of 10001 items; at most 10000 allowed",
        "type": "max_list_length",
    }
    long_text = await svc.client.post(
        "/orchestrate",
        json={"symbol": "ACME.SIM", "trigger_type": "manual", "context": {"note": "y" * 100_001}},
    )
    assert long_text.status_code == 422
    assert long_text.json()["details"][0]["type"] == "max_string_length"
    await nothing_stored(svc.client)


async def test_limits_are_configurable(database_url: str) -> None:
    settings = limited(database_url, auth="off", max_body_bytes=2_000, max_json_depth=3)
    async with serve(create_app(settings)) as svc:
        small_but_deep = {"symbols": ["ACME.SIM"], "stageOverrides": {"persist": {"retry": {"a": {"b": 1}}}}}
        resp = await svc.client.post("/process", json=small_but_deep)
        assert resp.status_code == 422 and resp.json()["details"][0]["type"] == "max_json_depth"
        resp = await svc.client.post("/process", json={"symbols": ["A" * 10] * 300})
        assert resp.status_code == 413


async def test_5000_unknown_symbols_get_a_bounded_answer(svc: Service) -> None:
    symbols = [f"NOPE{i}" for i in range(5_000)]
    resp = await svc.client.post("/process", json={"symbols": symbols})
    assert resp.status_code == 400
    message = resp.json()["error"]
    assert "NOPE0" in message and "and 4980 more" in message
    assert len(message) < 2_000
    assert (await svc.client.get("/runs")).json() == []


async def test_an_untrusted_host_is_refused(svc: Service) -> None:
    rebound = await svc.client.get("/runs", headers={"Host": "evil.example"})
    assert rebound.status_code == 421
    assert "evil.example" in rebound.json()["error"] and "trusted_hosts" in rebound.json()["error"]
    posted = await svc.client.post("/process", json={}, headers={"Host": "evil.example:8091"})
    assert posted.status_code == 421
    await nothing_stored(svc.client)
    assert (await svc.client.get("/health", headers={"Host": "localhost:1"})).status_code == 200


async def raw_exchange(port: int, data: bytes, read_timeout_s: float = 10.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65_536), read_timeout_s)
    finally:
        writer.close()


async def test_a_body_that_never_arrives_is_408(database_url: str) -> None:
    async with serve(create_app(limited(database_url, auth="off", body_timeout_s=0.5))) as svc:
        port = int(svc.server.url.rsplit(":", 1)[1])
        head = (
            b"POST /process HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        answer = await raw_exchange(port, head)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"not received within 0.5 s" in answer
        assert (await svc.client.get("/health")).status_code == 200


@asynccontextmanager
async def deadline_server(database_url: str, header_timeout_s: float, parser: str) -> AsyncIterator[int]:
    """A limited server (auth off) on ``parser`` with a ``header_timeout_s`` header deadline; its port."""
    app = create_app(limited(database_url, auth="off"))
    server = LiveServer(app)
    server.server.config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=None,
        http=header_deadline_protocol(header_timeout_s, parser=parser),
    )
    await server.start()
    try:
        yield int(server.url.rsplit(":", 1)[1])
    finally:
        await server.stop()


@pytest.mark.parametrize("parser", ["h11", "httptools"])
async def test_headers_trickled_too_slowly_close_the_connection(database_url: str, parser: str) -> None:
    pytest.importorskip(parser)
    async with deadline_server(database_url, 0.5, parser) as port:
        # Headers never completed: the server closes the connection (EOF) instead of waiting forever.
        assert await raw_exchange(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n") == b""
        # A prompt client on the same server is served, twice on one connection (the deadline re-arms).
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 200")
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            await reader.readuntil(b"}")
        writer.close()


def test_the_header_deadline_sits_on_the_c_parser_when_installed() -> None:
    # h11 parsing and writing was about a quarter of an accept's CPU; uvicorn's "auto" choice.
    httptools_impl = pytest.importorskip("uvicorn.protocols.http.httptools_impl")
    assert issubclass(header_deadline_protocol(1.0), httptools_impl.HttpToolsProtocol)
    assert not issubclass(header_deadline_protocol(1.0, parser="h11"), httptools_impl.HttpToolsProtocol)
    with pytest.raises(ValueError, match="unknown HTTP parser"):
        header_deadline_protocol(1.0, parser="llhttp")


@pytest.mark.parametrize("parser", ["h11", "httptools"])
async def test_oversized_headers_are_a_400_on_either_parser(database_url: str, parser: str) -> None:
    pytest.importorskip(parser)
    async with deadline_server(database_url, 5, parser) as port:
        # ~21 KiB of headers still incomplete (h11 caps what it buffers of an unfinished request).
        lines = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 100) for i in range(200))
        answer = await raw_exchange(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + lines)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert answer.endswith(b"Invalid HTTP request received.")
        # A body well past the cap, in the same write as its headers, is no header excess.
        body = b'{"symbols": ["' + b"A" * 30_000 + b'"]}'
        head = b"POST /process HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        answer = await raw_exchange(port, head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert not answer.startswith(b"HTTP/1.1 400"), answer[:200]
