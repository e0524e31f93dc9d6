"""Correlation-id ingress for every HTTP request.

Pure ASGI rather than ``BaseHTTPMiddleware``: the latter runs the endpoint in a separate task and buffers
through a memory stream, which is awkward for Server-Sent Events and loses contextvars set downstream.
Here the id is bound in the request's own context for the whole request, streaming bodies included.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jax_assistant.observability.correlation import (
    CORRELATION_ID_HEADER,
    FLOW_ID_HEADER,
    INBOUND_CORRELATION_HEADERS,
    is_valid_correlation_id,
    new_correlation_id,
    reset_correlation_id,
    set_correlation_id,
)

log = logging.getLogger("jax_assistant.service")

_ECHO_HEADERS = (CORRELATION_ID_HEADER.lower().encode("latin-1"), FLOW_ID_HEADER.lower().encode("latin-1"))
# ASGI header names are lowercase bytes: matched as they come, in precedence order.
_INBOUND = tuple(h.lower().encode("latin-1") for h in INBOUND_CORRELATION_HEADERS)


def inbound_correlation_id(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The first usable id among X-Correlation-ID, X-Flow-ID, X-Request-ID (as
    ``ensure_correlation_id`` chooses, a repeated header's last value counting), or None.

    Reads the raw ASGI headers: no dict of every header decoded per request."""
    found: dict[bytes, bytes] | None = None
    for name, value in headers:
        if name in _INBOUND:
            if found is None:
                found = {}
            found[name] = value
    if found is None:
        return None
    for name in _INBOUND:
        raw = found.get(name)
        if raw is not None:
            candidate = raw.decode("latin-1").strip()
            # An unusable value does not end the search: a good alias may follow.
            if is_valid_correlation_id(candidate):
                return candidate
    return None


class CorrelationIdMiddleware:
    """Read X-Correlation-ID (aliases X-Flow-ID, X-Request-ID) or generate one, bind it, echo it.

    The response carries the id under both X-Correlation-ID and X-Flow-ID so old callers (which read
    X-Flow-ID) and new ones see it. It also sits inside Starlette's ServerErrorMiddleware, so an
    unhandled error is turned into the JSON 500 here, where the id can still be echoed.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        cid = inbound_correlation_id(scope.get("headers", ())) or new_correlation_id()
        raw_cid = cid.encode("latin-1")
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = message.get("headers", ())
                # Almost no response sets these itself: copy without a filter unless one does. A plain
                # loop: a generator in any() costs more than the two or three headers it looks at.
                for k, _ in headers:
                    if k.lower() in _ECHO_HEADERS:
                        headers = [(k, v) for k, v in headers if k.lower() not in _ECHO_HEADERS]
                        break
                message["headers"] = [*headers, (_ECHO_HEADERS[0], raw_cid), (_ECHO_HEADERS[1], raw_cid)]
            await send(message)

        # Bound in this request's context, restored after: with no usable header a request never
        # inherits the surrounding context's id (another request's, in an in-process client).
        token = set_correlation_id(cid)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if started or scope["type"] != "http":
                raise
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            body = json.dumps({"error": "internal server error", "correlationId": cid}).encode()
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            reset_correlation_id(token)
