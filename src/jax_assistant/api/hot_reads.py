"""The reads monitors poll (``/health``, ``/status``, ``/metrics``) answered before routing.

Each of these routes is one no-argument handler returning ready bytes (api/cached.py), yet through
FastAPI it also pays for the route search, a ``Request``, dependency solving and two exit stacks:
about as much CPU as the rest of the request. This middleware, the innermost one, calls the same
handlers for a plain ``GET`` of exactly those paths and sends what they return; the routes stay
registered (the OpenAPI documents them, and every other request still goes through them).

It sits inside the guards (correlation id, access log, trusted host, auth, limits), so a hot read is
checked, logged and echoed exactly as before. A handler that raises is not answered here: the request
then takes its route, whose exception handlers give it the status and body they always did.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

HotHandler = Callable[[], Awaitable[Response]]


class HotReadsMiddleware:
    def __init__(self, app: ASGIApp, *, handlers: Mapping[str, HotHandler]) -> None:
        self.app = app
        # Not copied: the app adds this middleware before it defines the handlers it fills in.
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only the exact path of a plain GET: a mounted service (root_path), HEAD, another method or a
        # trailing slash get the router's answer (a 405, a redirect...), as they always did.
        handler = (
            self.handlers.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path")
            else None
        )
        if handler is None:
            await self.app(scope, receive, send)
            return
        try:
            response = await handler()
        except Exception:
            # Its route runs it again and maps the error (a read: nothing happens twice that matters).
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
