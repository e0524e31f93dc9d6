"""Key-based redaction applied before anything is logged, audited or retained.

The rules are the contract's, verbatim (``reference/jax-contracts.md``, Memory section): a value is replaced
by ``[REDACTED]`` when its key, compared case-insensitively,

- contains ``password``, ``secret``, ``token``, ``api_key``, ``apikey`` or ``credential``;
- contains both ``broker`` and ``key``;
- or equals ``order_payload``, ``order_request``, ``raw_order``, ``account_id``, ``accountid``,
  ``account-id`` or ``acct_id``.

Only keys are inspected: a secret pasted into free text (a log message, a summary) is not detected.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

REDACTED = "[REDACTED]"

SENSITIVE_KEY_PARTS: tuple[str, ...] = ("password", "secret", "token", "api_key", "apikey", "credential")
SENSITIVE_EXACT_KEYS: frozenset[str] = frozenset(
    {"order_payload", "order_request", "raw_order", "account_id", "accountid", "account-id", "acct_id"}
)

# Stand-in for a container that contains itself; recursing into it would never end.
_CYCLE = "[CYCLE]"


# Cached because the same few dozen keys (event, level, symbol, ...) are checked on every log line.
@lru_cache(maxsize=4096)
def is_sensitive_key(key: str) -> bool:
    k = key.lower()
    if k in SENSITIVE_EXACT_KEYS:
        return True
    if any(part in k for part in SENSITIVE_KEY_PARTS):
        return True
    return "broker" in k and "key" in k


def redact(obj: Any) -> Any:
    """A redacted copy of ``obj``; the input is never mutated.

    Walks mappings (returned as dicts), lists, tuples and pydantic models (dumped to JSON-compatible data
    with their wire aliases first). Any other value is returned as is.
    """
    return _redact(obj, set())


def _redact(obj: Any, active: set[int]) -> Any:
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json", by_alias=True)
    if isinstance(obj, Mapping):
        if id(obj) in active:
            return _CYCLE
        active.add(id(obj))
        try:
            return {k: REDACTED if is_sensitive_key(str(k)) else _redact(v, active) for k, v in obj.items()}
        finally:
            active.discard(id(obj))
    if isinstance(obj, list | tuple):
        if id(obj) in active:
            return _CYCLE
        active.add(id(obj))
        try:
            items = [_redact(v, active) for v in obj]
        finally:
            active.discard(id(obj))
        return items if isinstance(obj, list) else tuple(items)
    return obj
