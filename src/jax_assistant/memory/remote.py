"""The ``remote`` backend: the jax-memory service (``jax memory serve``) over HTTP.

Speaks the service's ``POST /tools`` envelope (``{"tool", "input"}`` -> ``{"output"}`` or ``{"error"}``),
so it also works against the old jax-memory for retain/recall/reflect. Every call carries the current
correlation id (``X-Correlation-ID`` and ``X-Flow-ID``) and a W3C ``traceparent``, so the service audits
its work under the caller's id.

The service validates too, but the facade in this process already has: a 400 from the service is a
contract mismatch and is raised as :class:`MemoryValidationError` with the service's message. A 404 is
:class:`MemoryNotFoundError`. Connection failures, timeouts, 429, 5xx and bodies that are not the
envelope raise :class:`MemoryUnavailableError` (the stage degrades, the outbox keeps the retain).

The service checks API keys (``service.harden``): ``memory.api_key`` is sent as ``Authorization:
Bearer``. A 401 or 403 is :class:`MemoryAuthError`, a :class:`ConfigError`: no retry fixes a missing,
wrong or under-scoped key, so it is never mistaken for the service being down.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from jax_assistant import __version__
from jax_assistant.domain.errors import ConfigError
from jax_assistant.memory.base import MemoryHealth, MemoryUnavailableError
from jax_assistant.memory.hindsight import request_headers
from jax_assistant.memory.models import (
    MemoryItem,
    MemoryNotFoundError,
    MemoryQuery,
    MemoryValidationError,
    ReflectionParams,
)

if TYPE_CHECKING:
    import httpx

    from jax_assistant.config import Settings

MEMORY_SERVICE_URL_ENV: Final = "MEMORY_SERVICE_URL"
DEFAULT_URL: Final = "http://127.0.0.1:8090"
MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024


class MemoryAuthError(ConfigError):
    """jax-memory refused our key (HTTP 401: none or not valid; 403: it lacks the route's scope)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message, key="memory.api_key")
        self.status = status


def _auth_error(what: str, status: int, payload: Any, has_key: bool) -> MemoryAuthError:
    detail = payload.get("error") if isinstance(payload, Mapping) else None
    if status == 401 and not has_key:
        hint = "set memory.api_key (JAX_MEMORY__API_KEY) to a key from `jax keys create --db <memory db>`"
    elif status == 401:
        hint = "memory.api_key is not a valid key of this service (revoked, or made for another database)"
    else:
        hint = "memory.api_key lacks the scope this needs (a write key)"
    return MemoryAuthError(f"jax-memory {what}: HTTP {status}: {detail or 'refused'}; {hint}", status=status)


def _wire(item: MemoryItem) -> dict[str, Any]:
    return item.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"score", "scores"})


class RemoteBackend:
    """An async client of one jax-memory service."""

    name = "remote"

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 2.0,
        connect_timeout_s: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        import httpx  # only when used: a run that talks to no service never loads it

        self.base_url = base_url.rstrip("/")
        headers = {"User-Agent": f"jax-assistant/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._has_key = bool(api_key)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            transport=transport,
            headers=headers,
        )

    async def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, Any]:
        import httpx  # only when used: a run that talks to no service never loads it

        try:
            async with self._client.stream(method, path, json=body, headers=request_headers()) as response:
                raw = bytearray()
                async for chunk in response.aiter_bytes():
                    raw.extend(chunk)
                    if len(raw) > MAX_RESPONSE_BYTES:
                        raise MemoryUnavailableError(
                            f"jax-memory {method} {path}: response larger than {MAX_RESPONSE_BYTES} bytes"
                        )
                status = response.status_code
        except httpx.TimeoutException as exc:
            raise MemoryUnavailableError(f"jax-memory {method} {path}: timed out") from exc
        except httpx.HTTPError as exc:
            raise MemoryUnavailableError(f"jax-memory at {self.base_url} unreachable: {exc}") from exc
        try:
            payload = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            payload = None
            if status < 400:
                raise MemoryUnavailableError(f"jax-memory {method} {path}: answer is not JSON") from None
        return status, payload

    async def _tool(self, tool: str, inp: Mapping[str, Any]) -> dict[str, Any]:
        status, payload = await self._request("POST", "/tools", {"tool": tool, "input": dict(inp)})
        message = payload.get("error") if isinstance(payload, Mapping) else None
        if status in (401, 403):
            raise _auth_error(tool, status, payload, self._has_key)
        if status == 404:
            raise MemoryNotFoundError(str(inp.get("bank")), str(inp.get("id")))
        if status in (400, 422):
            raise MemoryValidationError(str(message or f"rejected by jax-memory (HTTP {status})"))
        if status >= 400:  # 429, 5xx and anything else unexpected: the service is not serving us
            raise MemoryUnavailableError(f"jax-memory {tool}: HTTP {status}: {message or ''}".rstrip(": "))
        output = payload.get("output") if isinstance(payload, Mapping) else None
        if not isinstance(output, dict):
            raise MemoryUnavailableError(f"jax-memory {tool}: no output object in the answer")
        return output

    @staticmethod
    def _items(output: Mapping[str, Any], tool: str) -> list[MemoryItem]:
        raw = output.get("items")
        if not isinstance(raw, list):
            raise MemoryUnavailableError(f"jax-memory {tool}: no items list in the answer")
        try:
            return [MemoryItem.model_validate(i) for i in raw]
        except ValueError as exc:
            raise MemoryUnavailableError(f"jax-memory {tool}: malformed item in the answer ({exc})") from exc

    async def retain(self, bank: str, item: MemoryItem) -> str:
        output = await self._tool("memory.retain", {"bank": bank, "item": _wire(item)})
        return str(output["id"])

    async def retain_many(self, bank: str, items: Sequence[MemoryItem]) -> list[str]:
        if not items:
            return []
        output = await self._tool("memory.retain_many", {"bank": bank, "items": [_wire(i) for i in items]})
        ids = output.get("ids")
        if not isinstance(ids, list) or len(ids) != len(items):
            raise MemoryUnavailableError("jax-memory memory.retain_many: ids missing from the answer")
        return [str(i) for i in ids]

    async def recall(self, bank: str, query: MemoryQuery) -> list[MemoryItem]:
        wire = query.model_dump(mode="json", by_alias=True, exclude_none=True)
        return self._items(await self._tool("memory.recall", {"bank": bank, "query": wire}), "memory.recall")

    async def reflect(self, bank: str, params: ReflectionParams) -> list[MemoryItem]:
        wire = params.model_dump(mode="json", exclude_none=True)
        return self._items(
            await self._tool("memory.reflect", {"bank": bank, "params": wire}), "memory.reflect"
        )

    async def invalidate(self, bank: str, memory_id: str, reason: str | None = None) -> None:
        await self._tool("memory.invalidate", {"bank": bank, "id": memory_id, "reason": reason})

    async def restore(self, bank: str, memory_id: str) -> None:
        await self._tool("memory.restore", {"bank": bank, "id": memory_id})

    async def banks(self) -> list[str]:
        # The Hindsight-shaped listing: only banks that hold memories (/v1/memory/banks also lists
        # the product's five banks before anything is in them).
        status, payload = await self._request("GET", "/v1/default/banks")
        if status in (401, 403):  # reads need a key only with api.read_auth on the service
            raise _auth_error("banks", status, payload, self._has_key)
        banks = payload.get("banks") if isinstance(payload, Mapping) else None
        if status != 200 or not isinstance(banks, list):
            raise MemoryUnavailableError(f"jax-memory banks: HTTP {status}")
        return sorted(str(b["bank_id"]) for b in banks if isinstance(b, Mapping) and b.get("bank_id"))

    async def health(self) -> MemoryHealth:
        try:
            status, payload = await self._request("GET", "/ready")
        except MemoryUnavailableError as exc:
            return MemoryHealth(ok=False, backend=self.name, detail=str(exc))
        detail = payload.get("detail") if isinstance(payload, Mapping) else None
        return MemoryHealth(ok=status == 200, backend=self.name, detail=str(detail) if detail else None)

    async def close(self) -> None:
        await self._client.aclose()


async def open_backend(settings: Settings, **_: Any) -> RemoteBackend:
    """``[memory] backend = "remote"``: ``memory.url``, else ``$MEMORY_SERVICE_URL``, else 127.0.0.1:8090;
    ``memory.api_key`` as the bearer key."""
    url = settings.memory.url or os.environ.get(MEMORY_SERVICE_URL_ENV) or DEFAULT_URL
    key = settings.memory.api_key
    return RemoteBackend(
        url,
        timeout_s=settings.memory.timeout_s,
        connect_timeout_s=settings.memory.connect_timeout_s,
        api_key=key.get_secret_value() if key is not None else None,
    )
