"""Trusted-host check: a request whose ``Host`` is not one this service answers to gets a 421.

It defeats DNS rebinding: a web page on ``evil.example`` that re-points its name at 127.0.0.1 can make
a browser send requests to a service on loopback, but with ``Host: evil.example``, which is refused.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from jax_assistant.service.auth import json_error

# Decisions remembered per raw Host value (a service sees a handful); bounded, since a client may send
# any Host it likes.
_DECISIONS_MAX = 256


def host_name(raw: str) -> str:
    """``Host`` without its port: ``[::1]:8091`` -> ``::1``, ``localhost:80`` -> ``localhost``."""
    raw = raw.strip().lower()
    if raw.startswith("["):
        return raw[1:].split("]", 1)[0]
    return raw.rsplit(":", 1)[0] if raw.count(":") == 1 else raw


class TrustedHostMiddleware:
    def __init__(self, app: ASGIApp, *, allowed: Iterable[str]) -> None:
        self.app = app
        names = {host_name(h) for h in allowed}
        self.any = "*" in names
        self.exact = {n for n in names if not n.startswith("*.")}
        self.suffixes = tuple(n[1:] for n in names if n.startswith("*."))  # "*.corp" -> ".corp"
        self._decisions: dict[bytes, bool] = {}

    def allows(self, host: str) -> bool:
        name = host_name(host)
        return self.any or name in self.exact or (bool(self.suffixes) and name.endswith(self.suffixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw = b""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                raw = value
                break
        allowed = self._decisions.get(raw)
        if allowed is None:  # parsing the name costs more than the rest of this check
            allowed = self.allows(raw.decode("latin-1"))
            if len(self._decisions) >= _DECISIONS_MAX:
                self._decisions.clear()
            self._decisions[raw] = allowed
        if allowed:
            await self.app(scope, receive, send)
            return
        host = raw.decode("latin-1")
        await json_error(
            421,
            {
                "error": f"host {host[:100]!r} is not served here; add it to api.trusted_hosts "
                "(JAX_API__TRUSTED_HOSTS) if this service is meant to answer to it"
            },
        )(scope, receive, send)
