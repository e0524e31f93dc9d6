"""Bearer API keys with scopes (read < write < admin), stored hashed, checked by a pure ASGI middleware.

A key reads ``jaxk_<id>_<secret>``: ``id`` (12 hex characters) is public and finds the row, ``secret``
is 256 random bits. Only the SHA-256 of the whole key is stored. A slow password hash (bcrypt, argon2)
exists to make guessing a *low-entropy* human password expensive; a 256-bit random secret cannot be
guessed at any hash speed, and a fast hash keeps every authenticated request cheap (no 100 ms of CPU
on the event loop per call).

Verified keys are cached for ``CACHE_TTL_S`` so a busy client costs one database read per key every few
seconds, not one per request; a revoke made by ``jax keys revoke`` in another process therefore takes
effect within that time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict
from sqlalchemy import insert, select, update
from starlette.types import ASGIApp, Receive, Scope, Send

from jax_assistant.domain import utc_now
from jax_assistant.domain.errors import InputError
from jax_assistant.storage.db import Database
from jax_assistant.storage.tables import ApiKeyRow

KEY_PREFIX = "jaxk_"
_KEY_RE = re.compile(r"jaxk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})")
CACHE_TTL_S = 2.0
# Cache bound: an attacker cycling through made-up key ids must not grow memory without limit.
_CACHE_MAX = 1024


class ApiScope(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


_RANK = {ApiScope.READ: 0, ApiScope.WRITE: 1, ApiScope.ADMIN: 2}


def parse_scope(value: str) -> ApiScope:
    try:
        return ApiScope(value.strip().lower())
    except ValueError:
        raise InputError(
            f"scope {value!r}: must be one of read, write, admin", field="scope", rule="api_scope"
        ) from None


def grants(scopes: Sequence[str], needed: ApiScope) -> bool:
    """Whether a key with ``scopes`` may do what ``needed`` allows (admin covers write covers read)."""
    return any(s in _RANK and _RANK[ApiScope(s)] >= _RANK[needed] for s in scopes)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(BaseModel):
    """A stored key, as ``jax keys list`` shows it (never the key itself)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    scopes: list[ApiScope]
    created_at: datetime
    revoked_at: datetime | None = None
    key_hash: str = ""

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeyStore(Protocol):
    """What the middleware needs from storage; any service may bring its own."""

    async def get(self, key_id: str) -> ApiKey | None: ...


class ApiKeyStore:
    """API keys in the ``api_keys`` table (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, scopes: Sequence[ApiScope]) -> tuple[ApiKey, str]:
        """A new key: (its row, the key itself, which is returned here once and never stored)."""
        name = name.strip()
        if not name or len(name) > 100:
            raise InputError("name: must be 1 to 100 characters", field="name", rule="length")
        if not scopes:
            raise InputError("scope: give at least one of read, write, admin", field="scope", rule="required")
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        row = ApiKey(
            id=key_id,
            name=name,
            scopes=sorted(set(scopes), key=_RANK.__getitem__),
            created_at=utc_now(),
            key_hash=hash_key(key),
        )
        async with self._db.transaction() as conn:
            await conn.execute(
                insert(ApiKeyRow).values(
                    id=row.id,
                    name=row.name,
                    scopes=[s.value for s in row.scopes],
                    key_hash=row.key_hash,
                    created_at=row.created_at,
                    revoked_at=None,
                )
            )
        return row, key

    async def list(self) -> list[ApiKey]:
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(select(ApiKeyRow.__table__).order_by(ApiKeyRow.created_at))).all()
        return [_key(r._mapping) for r in rows]

    async def get(self, key_id: str) -> ApiKey | None:
        async with self._db.engine.connect() as conn:
            row = (
                await conn.execute(select(ApiKeyRow.__table__).where(ApiKeyRow.id == key_id))
            ).one_or_none()
        return None if row is None else _key(row._mapping)

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key; False when no active key has that id."""
        async with self._db.transaction() as conn:
            result = await conn.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=utc_now())
            )
        return bool(result.rowcount)


def _key(m: object) -> ApiKey:
    return ApiKey.model_validate(dict(m))  # type: ignore[call-overload]


class Authenticator:
    """Checks ``Authorization: Bearer <key>`` (or ``X-API-Key``) against a KeyStore, with a short cache."""

    def __init__(self, store: Callable[[], KeyStore]) -> None:
        self._store = store
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        # The read in flight per key id: a burst that finds the entry stale (clients idle longer than
        # the TTL, then 20 at once) shares one read instead of queueing 20 for the database.
        self._reading: dict[str, asyncio.Task[ApiKey | None]] = {}

    async def verify(self, key: str) -> ApiKey | None:
        """The active key ``key`` is, or None (malformed, unknown, wrong secret or revoked)."""
        match = _KEY_RE.fullmatch(key)
        if match is None:
            return None
        key_id = match.group(1)
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is None or now - cached[0] > CACHE_TTL_S:
            found = await self._read(key_id)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            cached = (now, found)
            self._cache[key_id] = cached
        stored = cached[1]
        if stored is None or not stored.active:
            return None
        # Constant-time: the comparison's duration says nothing about how much of the hash matched.
        return stored if hmac.compare_digest(stored.key_hash, hash_key(key)) else None

    async def _read(self, key_id: str) -> ApiKey | None:
        reading = self._reading.get(key_id)
        if reading is None:
            reading = asyncio.ensure_future(self._store().get(key_id))
            self._reading[key_id] = reading
            reading.add_done_callback(lambda done: self._read_done(key_id, done))
        # Shielded: a caller that goes away (its client disconnected) leaves the read to the others.
        return await asyncio.shield(reading)

    def _read_done(self, key_id: str, done: asyncio.Task[ApiKey | None]) -> None:
        if self._reading.get(key_id) is done:
            del self._reading[key_id]
        if not done.cancelled():
            done.exception()  # retrieved: every caller still waiting gets it raised


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization")
    if auth is not None:
        scheme, _, value = auth.decode("latin-1").partition(" ")
        return value.strip() if scheme.lower() == "bearer" else ""
    api_key = headers.get(b"x-api-key")
    return api_key.decode("latin-1").strip() if api_key is not None else None


ScopeResolver = Callable[[str, str], ApiScope | None]
"""(method, path) -> the scope a request needs, or None for a public route."""


def json_error(status: int, body: dict[str, object], headers: Sequence[tuple[bytes, bytes]] = ()) -> ASGIApp:
    """A tiny ASGI app answering ``body`` as JSON (used by every guard before the app is reached)."""
    raw = json.dumps(body).encode()

    async def app(_scope: Scope, _receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(raw)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": raw})

    return app


class AuthMiddleware:
    """401 without a valid key, 403 with one lacking the scope; the key is put in ``scope["state"]``."""

    def __init__(self, app: ASGIApp, *, authenticator: Authenticator, needs: ScopeResolver) -> None:
        self.app = app
        self.authenticator = authenticator
        self.needs = needs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = self.needs(scope["method"], scope["path"])
        if needed is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        key = presented_key(headers)
        challenge = [(b"www-authenticate", b'Bearer realm="jax"')]
        if not key:
            reason = (
                "the Authorization header is not a Bearer token"
                if key == ""
                else "authentication required: send Authorization: Bearer <key>"
            )
            await json_error(401, _deny(reason, needed), challenge)(scope, receive, send)
            return
        found = await self.authenticator.verify(key)
        if found is None:
            await json_error(401, _deny("invalid or revoked API key", needed), challenge)(
                scope, receive, send
            )
            return
        if not grants(found.scopes, needed):
            held = ", ".join(found.scopes)
            await json_error(
                403, _deny(f"API key {found.id!r} has scope(s) {held}; this route needs {needed}", needed)
            )(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = found
        await self.app(scope, receive, send)


def _deny(message: str, needed: ApiScope) -> dict[str, object]:
    return {"error": message, "requiredScope": needed.value, "docs": "docs/api.md#securing-a-service"}
