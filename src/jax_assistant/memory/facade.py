"""``Memory``: the one entry point the pipeline, CLI and service use to retain, recall and reflect.

Every call is validated against the contract (order and messages in ``models``), tags normalised and
``data`` redacted *before* the backend sees it, so no backend can store or log a secret the contract
says to drop. The backend is chosen by ``[memory] backend``; ``remote`` and ``hindsight`` live in modules
imported by name only when configured, so the embedded default needs neither httpx clients nor a server.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from jax_assistant.domain.errors import ConfigError
from jax_assistant.memory.base import BatchRecallBackend, MemoryBackend, MemoryHealth, recall_each
from jax_assistant.memory.models import (
    MemoryItem,
    MemoryQuery,
    MemoryValidationError,
    ReflectionParams,
    parse_item,
    parse_params,
    parse_query,
    validate_bank,
)

if TYPE_CHECKING:
    from jax_assistant.config import Settings
    from jax_assistant.storage.db import Database

# backend name -> module exposing ``async def open_backend(settings, **kwargs) -> MemoryBackend``.
BACKEND_MODULES: dict[str, str] = {
    "embedded": "jax_assistant.memory.embedded",
    "remote": "jax_assistant.memory.remote",
    "hindsight": "jax_assistant.memory.hindsight",
}


class Memory:
    """Validating facade over a :class:`MemoryBackend`. ``bank=None`` means the configured default bank."""

    def __init__(self, backend: MemoryBackend, *, default_bank: str = "trade_decisions") -> None:
        self.backend = backend
        self.default_bank = validate_bank(default_bank)

    def _bank(self, bank: str | None) -> str:
        return self.default_bank if bank is None else validate_bank(bank)

    async def retain(self, item: MemoryItem | Mapping[str, Any], *, bank: str | None = None) -> str:
        name = self._bank(bank)
        return await self.backend.retain(name, parse_item(item))

    async def retain_many(
        self, items: Sequence[MemoryItem | Mapping[str, Any]], *, bank: str | None = None
    ) -> list[str]:
        """All items are validated first: one bad item rejects the batch and nothing is stored."""
        name = self._bank(bank)
        parsed = []
        for index, raw in enumerate(items):
            try:
                parsed.append(parse_item(raw))
            except MemoryValidationError as exc:
                raise MemoryValidationError(
                    f"items[{index}]: {exc}", field=f"items[{index}].{exc.field}", rule=exc.rule
                ) from None
        return await self.backend.retain_many(name, parsed) if parsed else []

    async def recall(
        self, query: MemoryQuery | Mapping[str, Any] | None = None, *, bank: str | None = None
    ) -> list[MemoryItem]:
        name = self._bank(bank)
        return await self.backend.recall(name, parse_query(query))

    async def recall_many(
        self, queries: Sequence[MemoryQuery | Mapping[str, Any]], *, bank: str | None = None
    ) -> list[list[MemoryItem]]:
        """``[recall(q) for q in queries]``, in one round trip where the backend can batch (embedded).
        Every query is validated first: one bad query rejects the call."""
        name = self._bank(bank)
        parsed = []
        for index, raw in enumerate(queries):
            try:
                parsed.append(parse_query(raw))
            except MemoryValidationError as exc:
                where = f"queries[{index}]." + (exc.field or "").removeprefix("query.").removeprefix("query")
                raise MemoryValidationError(
                    f"queries[{index}]: {exc}", field=where.rstrip("."), rule=exc.rule
                ) from None
        if not parsed:
            return []
        if isinstance(self.backend, BatchRecallBackend):
            return await self.backend.recall_many(name, parsed)
        return await recall_each(self.backend, name, parsed)

    async def reflect(
        self, params: ReflectionParams | Mapping[str, Any] | None, *, bank: str | None = None
    ) -> list[MemoryItem]:
        name = self._bank(bank)
        return await self.backend.reflect(name, parse_params(params))

    async def invalidate(self, memory_id: str, *, bank: str | None = None, reason: str | None = None) -> None:
        await self.backend.invalidate(self._bank(bank), _memory_id(memory_id), reason)

    async def restore(self, memory_id: str, *, bank: str | None = None) -> None:
        await self.backend.restore(self._bank(bank), _memory_id(memory_id))

    async def banks(self) -> list[str]:
        return await self.backend.banks()

    async def health(self) -> MemoryHealth:
        return await self.backend.health()

    async def close(self) -> None:
        await self.backend.close()

    async def __aenter__(self) -> Memory:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _memory_id(memory_id: str) -> str:
    if not isinstance(memory_id, str) or not memory_id.strip():
        raise MemoryValidationError("memory id is required", field="id", rule="required")
    return memory_id.strip()


async def open_memory(settings: Settings, *, database: Database | None = None) -> Memory:
    """The :class:`Memory` the settings describe (``settings.memory.backend``).

    ``database`` lets the embedded backend share an already-open project database (same engine);
    without it the embedded backend opens the configured ``database_url`` itself and closes it on close.
    """
    name = settings.memory.backend
    module_name = BACKEND_MODULES.get(name)
    if module_name is None:
        raise ConfigError(f"memory.backend: unknown backend {name!r}", key="memory.backend")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"memory.backend = {name!r} is not available in this build ({exc})", key="memory.backend"
        ) from exc
    kwargs: dict[str, Any] = {"database": database} if name == "embedded" else {}
    backend: MemoryBackend = await module.open_backend(settings, **kwargs)
    return Memory(backend, default_bank=settings.memory.bank)
