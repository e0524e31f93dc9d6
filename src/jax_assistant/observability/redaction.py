"""Key-based redaction applied before anything is logged, audited or retained.

The rules are the contract's, verbatim (``reference/jax-contracts.md``, Memory section): a value is replaced
by ``[REDACTED]`` when its key, compared case-insensitively,

- contains ``password``, ``secret``, ``token``, ``api_key``, ``apikey`` or ``credential``;
- contains both ``broker`` and ``key``;
- or equals ``order_payload``, ``order_request``, ``raw_order``, ``account_id``, ``accountid``,
  ``account-id`` or ``acct_id``.

On top of the contract's rules, for HTTP: keys containing ``authorization``, ``cookie`` or ``api-key``
(headers such as ``Authorization``, ``Proxy-Authorization``, ``Cookie``, ``Set-Cookie``, ``X-API-Key``) are
redacted too, and in any string value a bearer credential (``Bearer <token>``) or one of our own API
keys (``jaxk_...``) is replaced, so a key pasted into free text does not reach a log either. Other
secrets in free text (a log message, a summary) are not detected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

REDACTED = "[REDACTED]"

SENSITIVE_KEY_PARTS: tuple[str, ...] = ("password", "secret", "token", "api_key", "apikey", "credential")
SENSITIVE_EXACT_KEYS: frozenset[str] = frozenset(
    {"order_payload", "order_request", "raw_order", "account_id", "accountid", "account-id", "acct_id"}
)

# HTTP credentials; their header names match none of the contract's parts.
HTTP_SENSITIVE_KEY_PARTS: tuple[str, ...] = ("authorization", "cookie", "api-key")
# The secret of a bearer header or of one of our keys, wherever it appears in a string.
_SECRET_IN_TEXT = re.compile(r"(?i:bearer)\s+[^\s\"',;]+|jaxk_[0-9a-f]{12}_[A-Za-z0-9_-]+")

# Stand-in for a container that contains itself; recursing into it would never end.
_CYCLE = "[CYCLE]"


# Cached because the same few dozen keys (event, level, symbol, ...) are checked on every log line.
@lru_cache(maxsize=4096)
def is_sensitive_key(key: str) -> bool:
    k = key.lower()
    if k in SENSITIVE_EXACT_KEYS:
        return True
    if any(part in k for part in SENSITIVE_KEY_PARTS) or any(p in k for p in HTTP_SENSITIVE_KEY_PARTS):
        return True
    return "broker" in k and "key" in k


def redact(obj: Any) -> Any:
    """A redacted copy of ``obj``; the input is never mutated.

    Walks mappings (returned as dicts), lists, tuples and pydantic models (dumped to JSON-compatible data
    with their wire aliases first). Any other value is returned as is.
    """
    return _redact(obj, set())


def redact_text(text: str) -> str:
    """``text`` with bearer credentials and API keys replaced (two substring checks when there are none)."""
    if "jaxk_" not in text and "earer" not in text and "EARER" not in text:
        return text
    return _SECRET_IN_TEXT.sub(REDACTED, text)


def _redact(obj: Any, active: set[int]) -> Any:
    if isinstance(obj, str):
        return redact_text(obj)
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
