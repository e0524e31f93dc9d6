"""Memory: retain / recall / reflect behind one facade (docs/memory.md).

``open_memory(settings)`` picks the backend from ``[memory] backend``: ``embedded`` (the project
database, full-text plus optional embeddings), ``remote`` (the jax-memory service) or ``hindsight``.
"""

from __future__ import annotations

from jax_assistant.memory.base import MemoryBackend, MemoryHealth, MemoryUnavailableError
from jax_assistant.memory.facade import Memory, open_memory
from jax_assistant.memory.models import (
    BANKS,
    DEFAULT_BANK,
    Bank,
    BeliefData,
    MemoryItem,
    MemoryNotFoundError,
    MemoryQuery,
    MemoryScores,
    MemorySource,
    MemoryValidationError,
    ReflectionParams,
    TimeWindow,
    make_belief,
    parse_item,
    parse_params,
    parse_query,
    validate_bank,
    validate_item,
)

__all__ = [
    "BANKS",
    "DEFAULT_BANK",
    "Bank",
    "BeliefData",
    "Memory",
    "MemoryBackend",
    "MemoryHealth",
    "MemoryItem",
    "MemoryNotFoundError",
    "MemoryQuery",
    "MemoryScores",
    "MemorySource",
    "MemoryUnavailableError",
    "MemoryValidationError",
    "ReflectionParams",
    "TimeWindow",
    "make_belief",
    "open_memory",
    "parse_item",
    "parse_params",
    "parse_query",
    "validate_bank",
    "validate_item",
]
