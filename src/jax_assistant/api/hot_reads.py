"""The requests answered before routing: the reads monitors poll (``/health``, ``/status``,
``/metrics``) and the plain form of the run submission (``POST /process``).

Each of the reads is one no-argument handler returning ready bytes (api/cached.py), yet through
FastAPI it also pays for the route search, a ``Request``, dependency solving and two exit stacks:
about as much CPU as the rest of the request. This middleware, the innermost one, calls the same
handlers for a plain ``GET`` of exactly those paths and sends what they return; the routes stay
registered (the OpenAPI documents them, and every other request still goes through them).

A hot ``POST`` handler first looks at the request and its (already size- and shape-checked) body and
either declines it (``None``: anything it does not take exactly as the route would, such as a query
string, another content type or a body its model refuses) or returns the call that answers it. A
declined request takes its route with its body replayed unchanged, so every unusual case keeps the
route's answer; so does any POST that FastAPI's own telemetry follows (its span is named after the
route). Once the call runs, what it raises is mapped by the app's own exception handlers, as the
route's would be.

It sits inside the guards (correlation id, access log, trusted host, auth, limits), so a hot request
is checked, logged and echoed exactly as before. A read handler that raises is not answered here: the
request then takes its route, whose exception handlers give it the status and body they always did.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette._exception_handler import wrap_app_handling_exceptions
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send

HotHandler = Callable[[], Awaitable[Response]]
# (scope, body) -> None to decline, or the call that answers the request.
HotPost = Callable[[Scope, bytes], Callable[[], Awaitable[Response]] | None]

_HandlerMaps = tuple[dict[Any, ExceptionHandler], dict[int, ExceptionHandler]]


class HotReadsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        handlers: Mapping[str, HotHandler],
        posts: Mapping[str, HotPost] | None = None,
        exception_handlers: Mapping[Any, ExceptionHandler] | None = None,
    ) -> None:
        self.app = app
        # Not copied: the app adds this middleware before it defines the handlers it fills in.
        self.handlers = handlers
        self.posts: Mapping[str, HotPost] = posts if posts is not None else {}
        self.exception_handlers: Mapping[Any, ExceptionHandler] = (
            exception_handlers if exception_handlers is not None else {}
        )
        self._maps: _HandlerMaps | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only the exact path of a plain GET: a mounted service (root_path), HEAD, another method or a
        # trailing slash get the router's answer (a 405, a redirect...), as they always did.
        if scope["type"] != "http" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        # A request FastAPI's own telemetry follows (an OpenTelemetry provider is set) takes its
        # route, which names the request's span after it (http.route).
        if (
            method == "POST"
            and (post := self.posts.get(scope["path"])) is not None
            and scope.get("fastapi.telemetry") is None
        ):
            await self._post(post, scope, receive, send)
            return
        handler = self.handlers.get(scope["path"]) if method == "GET" else None
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

    async def _post(self, post: HotPost, scope: Scope, receive: Receive, send: Send) -> None:
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        call = None
        if messages[-1]["type"] == "http.request":
            call = post(scope, b"".join(m.get("body", b"") for m in messages))

        pending = iter(messages)

        async def replay() -> Message:
            # What was read here, then the rest of the connection's messages (a disconnect).
            return next(pending, None) or await receive()

        if call is None:
            await self.app(scope, replay, send)
            return

        async def answer(scope: Scope, receive: Receive, send: Send) -> None:
            response = await call()
            await response(scope, receive, send)

        # The handlers the route's errors would meet (Starlette's ExceptionMiddleware, innermost).
        scope["starlette.exception_handlers"] = self._handler_maps()
        await wrap_app_handling_exceptions(answer, Request(scope, replay, send))(scope, replay, send)

    def _handler_maps(self) -> _HandlerMaps:
        if self._maps is None:
            # As Starlette splits them: 500/Exception belong to the outermost error middleware, the
            # rest are matched by status (HTTPException) or by exception class.
            by_class: dict[Any, ExceptionHandler] = {}
            by_status: dict[int, ExceptionHandler] = {}
            for key, value in self.exception_handlers.items():
                if key in (500, Exception):
                    continue
                if isinstance(key, int):
                    by_status[key] = value
                else:
                    by_class[key] = value
            self._maps = (by_class, by_status)
        return self._maps
