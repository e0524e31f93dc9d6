"""The operator page: one static HTML file with its script and style, shipped in the package.

No build step and no third-party assets: ``jax serve`` on a fresh machine serves it as it is. The page
reads the same JSON routes as any client and follows a run live from its SSE stream. With API keys on
it sends the key as ``Authorization: Bearer`` on every call, the stream included: it reads the stream
with ``fetch`` (a ReadableStream) rather than ``EventSource``, which cannot set headers, so the key is
never put in a URL (where access logs, browser history and Referer headers would keep it).
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse, Response

router = APIRouter(include_in_schema=False)

_STATIC = files("jax_assistant.api") / "static"
_TYPES = {"operator.js": "text/javascript; charset=utf-8", "operator.css": "text/css; charset=utf-8"}
# The page and its assets are fixed for a given install: read once.
_CACHE: dict[str, bytes] = {}


def _asset(name: str) -> bytes:
    if name not in _CACHE:
        _CACHE[name] = (_STATIC / name).read_bytes()
    return _CACHE[name]


# A strict policy: only this origin's own script, style and API; no inline script, no framing.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui")
async def page() -> HTMLResponse:
    return HTMLResponse(_asset("operator.html"), headers=_HEADERS)


@router.get("/ui/{name}")
async def asset(name: str) -> Response:
    if name not in _TYPES:
        raise HTTPException(404, f"no asset {name!r}")
    return Response(_asset(name), media_type=_TYPES[name], headers=_HEADERS)
