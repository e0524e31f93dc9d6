"""One access-log line per request: method, path (never the query string, which may carry secrets),
status, duration and client. No headers and no body are logged, so nothing there can leak; the line
goes through the redacting log pipeline like every other. Off by default (``api.access_log``)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jax_assistant.observability.logging import get_logger

access_log = get_logger("jax_assistant.access")


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # the app raised before it answered

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = scope.get("client")
            access_log.info(
                "request",
                method=scope["method"],
                path=scope["path"][:200],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                client=client[0] if client else None,
            )
