"""The pieces that keep GET reads cheap: cached JSON bodies, admission's version, the correlation id
read from raw headers, and the trusted-host decisions remembered per Host value."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from jax_assistant.api.cached import CachedJson, render_json
from jax_assistant.observability.correlation import (
    ensure_correlation_id,
    is_valid_correlation_id,
    new_correlation_id,
)
from jax_assistant.service.admission import Admission, AdmissionRejectedError
from jax_assistant.service.correlation import inbound_correlation_id
from jax_assistant.service.hosts import TrustedHostMiddleware


def test_a_cached_body_is_built_again_only_when_its_key_changes() -> None:
    builds: list[int] = []

    def build() -> dict[str, int]:
        builds.append(1)
        return {"n": len(builds)}

    cache = CachedJson()
    first = cache.get((1, "a"), build)
    assert cache.get((1, "a"), build) is first and len(builds) == 1
    assert json.loads(cache.get((2, "a"), build)) == {"n": 2}
    # Keys are compared, not hashed: small dicts are fine, and an equal copy is a hit.
    cache.get((2, {"x": [1]}), build)
    cache.get((2, {"x": [1]}), build)
    assert len(builds) == 3
    # None: no key can follow this state, so every call builds.
    cache.get(None, build)
    cache.get(None, build)
    assert len(builds) == 5


def test_render_json_matches_what_a_json_response_sends() -> None:
    from starlette.responses import JSONResponse

    content = {"a": "é", "b": [1, 2.5, None], "c": {"d": True}}
    assert render_json(content) == JSONResponse(content).body
    with pytest.raises(ValueError):
        render_json({"x": float("nan")})  # as JSONResponse: NaN is not JSON


def test_admission_version_changes_with_every_change_snapshot_shows() -> None:
    admission = Admission(max_in_flight=1, max_queued=1)
    seen = {admission.version}

    def changed() -> bool:
        before = len(seen)
        seen.add(admission.version)
        return len(seen) > before

    first = admission.admit(1)
    assert changed()
    queued = admission.admit(1)
    assert changed()
    with pytest.raises(AdmissionRejectedError):
        admission.admit(1)
    assert changed()  # a rejection counts
    first.release()
    assert changed() and queued.granted.is_set()
    queued.release()
    assert changed()
    admission.enqueue_resumed(1).release()
    assert changed()
    admission.close()
    assert changed()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], None),
        ([(b"host", b"x")], None),
        ([(b"x-request-id", b"r"), (b"x-flow-id", b"f"), (b"x-correlation-id", b"c")], "c"),
        ([(b"x-request-id", b"r"), (b"x-flow-id", b"f")], "f"),
        ([(b"x-correlation-id", b"  "), (b"x-request-id", b"r")], "r"),  # unusable: the next one
        ([(b"x-correlation-id", b"bad\x01id"), (b"x-flow-id", b" f ")], "f"),
        ([(b"x-flow-id", b"first"), (b"x-flow-id", b"second")], "second"),
        ([(b"x-correlation-id", b"c" * 129)], None),
    ],
)
def test_inbound_id_from_raw_headers_chooses_like_ensure_correlation_id(
    headers: list[tuple[bytes, bytes]], expected: str | None
) -> None:
    assert inbound_correlation_id(headers) == expected
    if expected is not None:  # the same choice as the mapping-based helper
        as_map = {k.decode(): v.decode() for k, v in headers}
        assert ensure_correlation_id(as_map) == expected


@pytest.mark.parametrize(
    ("value", "valid"),
    [("corr_x", True), ("a b~!", True), ("", False), ("x\x7f", False), ("x\ty", False), ("é", False)],
)
def test_valid_ids_are_printable_ascii(value: str, valid: bool) -> None:
    assert is_valid_correlation_id(value) is valid


def test_new_ids_are_uuid4_hex() -> None:
    for _ in range(200):
        cid = new_correlation_id()
        assert cid.startswith("corr_") and len(cid) == 37
        parsed = uuid.UUID(hex=cid[5:])
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


async def test_trusted_host_decisions_stay_right_when_remembered() -> None:
    answered: list[int] = []

    async def app(scope: object, receive: object, send: object) -> None:
        answered.append(200)

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            answered.append(int(message["status"]))  # type: ignore[call-overload]

    async def receive() -> dict[str, object]:
        return {"type": "http.request"}

    guard = TrustedHostMiddleware(app, allowed=["127.0.0.1", "*.corp"])
    for _ in range(2):  # the second pass answers from the remembered decisions
        for host, status in ((b"127.0.0.1:8091", 200), (b"evil.example", 421), (b"a.corp", 200)):
            answered.clear()
            scope = {"type": "http", "headers": [(b"host", host)]}
            await guard(scope, receive, send)  # type: ignore[arg-type]
            assert answered == [status], host
    for i in range(600):  # many made-up hosts: the memory stays bounded
        await guard({"type": "http", "headers": [(b"host", f"h{i}.example".encode())]}, receive, send)  # type: ignore[arg-type]
    assert len(guard._decisions) <= 256


async def test_a_cached_response_sends_what_a_built_response_sends() -> None:
    from starlette.responses import Response

    cache = CachedJson()
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request"}

    first = cache.response(1, lambda: {"a": "é"})
    built = Response(render_json({"a": "é"}), media_type="application/json")
    assert (first.status_code, first.body, first.raw_headers) == (200, built.body, built.raw_headers)
    await first({"type": "http"}, receive, send)  # type: ignore[arg-type]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["headers"] == built.raw_headers and sent[1]["body"] == built.body
    # A header added to one response (a middleware may) is not sent with the next.
    first.headers["x-extra"] = "1"
    again = cache.response(1, lambda: {"a": "é"})
    assert again.body is first.body and again.raw_headers == built.raw_headers
    changed = cache.response(2, lambda: {"a": "longer"})
    assert changed.raw_headers == Response(changed.body, media_type="application/json").raw_headers


def test_repeated_bytes_reuse_their_headers_and_new_ones_get_their_own() -> None:
    from starlette.responses import Response

    from jax_assistant.api.cached import SameBytes

    text = "text/plain; version=0.0.4; charset=utf-8"
    responses = SameBytes()
    for body in (b"# a\n", b"# a\n", b"# longer\n", b"# longer\n"):
        sent = responses.response(body, text)
        built = Response(body, media_type=text)
        assert (sent.status_code, sent.body, sent.raw_headers) == (200, body, built.raw_headers)
        sent.headers["x-extra"] = "1"  # not carried into the next response
    assert responses.response(b"{}", "application/json").raw_headers == (
        Response(b"{}", media_type="application/json").raw_headers
    )


@pytest.mark.parametrize("own", [[], [(b"X-Flow-ID", b"the-app-s"), (b"x-correlation-id", b"the-app-s")]])
async def test_the_echoed_id_replaces_one_the_app_set_and_keeps_the_other_headers(
    own: list[tuple[bytes, bytes]],
) -> None:
    from jax_assistant.service.correlation import CorrelationIdMiddleware

    async def app(scope: object, receive: object, send: Any) -> None:
        headers = [(b"content-type", b"text/plain"), *own, (b"x-other", b"1")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request"}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"x-correlation-id", b"caller-1")]}
    await CorrelationIdMiddleware(app)(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["headers"] == [
        (b"content-type", b"text/plain"),
        (b"x-other", b"1"),
        (b"x-correlation-id", b"caller-1"),
        (b"x-flow-id", b"caller-1"),
    ]
