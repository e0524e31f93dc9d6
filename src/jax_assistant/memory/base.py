"""The protocol every memory backend implements, and the errors they raise.

Backends receive items that the :class:`~jax_assistant.memory.facade.Memory` facade has already
validated, normalised and redacted, and a bank name already checked; they only store and retrieve.
A backend module named in config (``memory.backend``) exposes ``async def open_backend(settings)``
returning a :class:`MemoryBackend` (see ``facade.open_memory``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from jax_assistant.domain.errors import UnavailableError
from jax_assistant.memory.models import MemoryItem, MemoryQuery, ReflectionParams


class MemoryUnavailableError(UnavailableError):
    """The memory store (database, service, Hindsight) cannot be reached right now; retrying may work."""


class MemoryHealth(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: bool
    backend: str
    detail: str | None = None
    # Name of the embedding model when the semantic arm is on (None = full-text only).
    embedding_model: str | None = None


@runtime_checkable
class MemoryBackend(Protocol):
    name: str

    async def retain(self, bank: str, item: MemoryItem) -> str:
        """Store ``item``; returns its id. Same ``document_id`` (or same content) -> the same id."""
        ...

    async def retain_many(self, bank: str, items: Sequence[MemoryItem]) -> list[str]:
        """Store a batch in one go; ids in input order."""
        ...

    async def recall(self, bank: str, query: MemoryQuery) -> list[MemoryItem]:
        """Best matches first, each with ``score`` and ``scores``; invalidated memories never come back."""
        ...

    async def reflect(self, bank: str, params: ReflectionParams) -> list[MemoryItem]:
        """Beliefs (type ``belief``) derived from the bank's memories in the params' window."""
        ...

    async def invalidate(self, bank: str, memory_id: str, reason: str | None = None) -> None:
        """Take a memory out of recall (reversible). Unknown id: ``MemoryNotFoundError``."""
        ...

    async def restore(self, bank: str, memory_id: str) -> None:
        """Undo ``invalidate``. Unknown id: ``MemoryNotFoundError``."""
        ...

    async def banks(self) -> list[str]:
        """Names of the banks that hold at least one memory (sorted)."""
        ...

    async def health(self) -> MemoryHealth: ...

    async def close(self) -> None: ...


@runtime_checkable
class BatchRecallBackend(Protocol):
    """A backend that answers many recalls at once (one query per bank instead of one per symbol).

    Optional: backends without it (remote, hindsight) get :func:`recall_each`, so the facade's
    ``recall_many`` works on every backend. Result ``i`` must equal ``recall(bank, queries[i])``.
    """

    async def recall_many(self, bank: str, queries: Sequence[MemoryQuery]) -> list[list[MemoryItem]]: ...


async def recall_each(
    backend: MemoryBackend, bank: str, queries: Sequence[MemoryQuery]
) -> list[list[MemoryItem]]:
    """The default ``recall_many``: one ``recall`` per query, in order."""
    return [await backend.recall(bank, query) for query in queries]
