"""JSON bodies kept as bytes until what they show changes: the hot read routes (``/status``,
``/health``) answer a monitor's poll with a comparison and a copy, not a rebuild and a serialisation.

The owner passes a *key* with every call: a tuple of version counters and small values that together
change whenever the body would (see ``create_app``). Keys are compared, never hashed, so they may
hold small dicts; ``None`` means "build this one afresh" for a state no key can follow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.responses import Response

_NOTHING = object()


def render_json(content: Any) -> bytes:
    """What Starlette's JSONResponse sends for ``content``: a cached body reads like a built one."""
    text = json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
    return text.encode()


class CachedResponse(Response):
    """A 200 whose body and headers were built once: what ``Response(body, media_type=...)`` sends,
    without recomputing the content-length and content-type headers on every request."""

    def __init__(self, body: bytes, raw_headers: list[tuple[bytes, bytes]]) -> None:
        # Response.__init__ not called on purpose: it would render the body and build the headers.
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = raw_headers


class CachedJson:
    """The JSON bytes of ``build()``, built again only when the key differs from the last one."""

    __slots__ = ("_body", "_headers", "_key")

    def __init__(self) -> None:
        self._key: object = _NOTHING
        self._body = b""
        self._headers: list[tuple[bytes, bytes]] = []

    def get(self, key: object, build: Callable[[], Any]) -> bytes:
        # Built synchronously: no await between reading the key and storing the body, so a change
        # made meanwhile by another task cannot hide behind a key read before it.
        if key is None or key != self._key:
            self._body = render_json(build())
            self._headers = Response(self._body, media_type="application/json").raw_headers
            self._key = key
        return self._body

    def response(self, key: object, build: Callable[[], Any]) -> Response:
        body = self.get(key, build)
        # A copy of the header list: a middleware may add to a response's headers in place.
        return CachedResponse(body, list(self._headers))


class SameBytes:
    """Responses for a body that usually repeats (``/metrics``: the text renders again only when a
    counter changes): its headers are built again only when the body or its media type differs."""

    __slots__ = ("_body", "_headers", "_media_type")

    def __init__(self) -> None:
        self._body = b""
        self._media_type = ""
        self._headers: list[tuple[bytes, bytes]] = []

    def response(self, body: bytes, media_type: str) -> Response:
        # `is` first: the renderer hands back the very bytes it cached, which spares the comparison.
        if not (body is self._body or body == self._body) or media_type != self._media_type:
            self._headers = Response(body, media_type=media_type).raw_headers
            self._body, self._media_type = body, media_type
        return CachedResponse(body, list(self._headers))
