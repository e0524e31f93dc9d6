"""Correlation-id ingress for every HTTP request.

Pure ASGI rather than ``BaseHTTPMiddleware``: the latter runs the endpoint in a separate task and buffers
through a memory stream, which is awkward for Server-Sent Events and loses contextvars set downstream.
Here the id is bound in the request's own context for the whole request, streaming bodies included.
"""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jax_assistant.observability.correlation import (
    CORRELATION_ID_HEADER,
    FLOW_ID_HEADER,
    bind_correlation_id,
    ensure_correlation_id,
)

log = logging.getLogger("jax_assistant.service")

_ECHO_HEADERS = (CORRELATION_ID_HEADER.lower().encode("latin-1"), FLOW_ID_HEADER.lower().encode("latin-1"))


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
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        # A fresh scoped binding first: with no usable header, ensure_correlation_id would otherwise reuse
        # whatever id the surrounding context already had (another request's, in an in-process client).
        with bind_correlation_id():
            cid = ensure_correlation_id(headers)
            raw_cid = cid.encode("latin-1")
            started = False

            async def send_with_id(message: Message) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                    kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _ECHO_HEADERS]
                    message["headers"] = [*kept, *((name, raw_cid) for name in _ECHO_HEADERS)]
                await send(message)

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
