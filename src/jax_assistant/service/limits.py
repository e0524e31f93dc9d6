"""Request limits enforced before the app parses anything: body size, body read time, JSON shape.

- A body over ``max_body_bytes`` is a 413: refused from ``Content-Length`` before a byte is read, or
  as soon as a chunked body passes the limit, so nothing large is ever buffered or stored.
- A body that does not arrive within ``body_timeout_s`` is a 408 (a slow client holds no task forever).
- A JSON body nested deeper than ``max_json_depth``, or holding a list/object longer than
  ``max_list_length`` or a string longer than ``max_string_length``, is a 422 naming where. The check
  walks the parsed document with an explicit stack (no recursion to exhaust), and a body large enough
  for that to take more than a moment is checked in a worker thread, so the event loop keeps serving.

The body read here is replayed to the app unchanged.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jax_assistant.service.auth import json_error

# Below this a check costs well under a millisecond: not worth a thread hop.
_INLINE_CHECK_BYTES = 32_768


@dataclass(frozen=True)
class RequestLimits:
    max_body_bytes: int = 1_000_000
    max_json_depth: int = 32
    max_list_length: int = 10_000
    max_string_length: int = 100_000
    body_timeout_s: float = 10.0


@dataclass(frozen=True)
class LimitViolation:
    field: str
    rule: str
    message: str


def _path(parts: tuple[str | int, ...]) -> str:
    shown = ".".join(str(p) for p in parts[:8])
    return f"body.{shown}…" if len(parts) > 8 else (f"body.{shown}" if parts else "body")


def check_json(doc: Any, limits: RequestLimits) -> LimitViolation | None:
    """The first place ``doc`` breaks a limit, or None. Iterative: depth costs no Python recursion."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(doc, 1, ())]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, str):
            if len(value) > limits.max_string_length:
                return LimitViolation(
                    _path(where),
                    "max_string_length",
                    f"string of {len(value)} characters; at most {limits.max_string_length} allowed",
                )
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > limits.max_json_depth:
            return LimitViolation(
                _path(where), "max_json_depth", f"nested deeper than {limits.max_json_depth} levels"
            )
        if len(value) > limits.max_list_length:
            kind = "object with" if isinstance(value, dict) else "list of"
            return LimitViolation(
                _path(where),
                "max_list_length",
                f"{kind} {len(value)} items; at most {limits.max_list_length} allowed",
            )
        if isinstance(value, dict):
            for k, v in value.items():
                if len(k) > limits.max_string_length:
                    return LimitViolation(_path(where), "max_string_length", "an object key is too long")
                stack.append((v, depth + 1, (*where, k)))
        else:
            stack.extend((v, depth + 1, (*where, i)) for i, v in enumerate(value))
    return None


def check_body(body: bytes, limits: RequestLimits) -> LimitViolation | None:
    """Parse and check a JSON body; a body that is not JSON is left for the app to reject."""
    try:
        doc = json.loads(body)
    except RecursionError:  # the C parser's own guard (about 1 000 levels)
        return LimitViolation("body", "max_json_depth", f"nested deeper than {limits.max_json_depth} levels")
    except ValueError:
        return None
    return check_json(doc, limits)


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            ctype = value.split(b";", 1)[0].strip().lower()
            return bool(ctype == b"application/json" or ctype.endswith(b"+json"))
    return False


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, *, limits: RequestLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(limit)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        await _too_large(limit)(scope, receive, send)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await json_error(
                408, {"error": f"request body not received within {self.limits.body_timeout_s:g} s"}
            )(scope, receive, send)
            return
        body = b"".join(chunks)
        if body and _is_json(scope):
            violation = (
                check_body(body, self.limits)
                if len(body) <= _INLINE_CHECK_BYTES
                else await asyncio.to_thread(check_body, body, self.limits)
            )
            if violation is not None:
                detail = {"field": violation.field, "in": "body", "message": violation.message}
                await json_error(
                    422,
                    {
                        "error": f"{violation.field}: {violation.message}",
                        "details": [{**detail, "type": violation.rule}],
                    },
                )(scope, receive, send)
                return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only the disconnect is left to wait for

        await self.app(scope, replay, send)


def _too_large(limit: int) -> ASGIApp:
    return json_error(413, {"error": f"request body larger than {limit} bytes", "limit": limit})
