"""The correlation id: read at ingress, kept in a contextvar, sent on every outbound call.

Header contract (``reference/jax-contracts.md``): ``X-Correlation-ID`` is the primary header; the old
system's ``X-Flow-ID`` and the common ``X-Request-ID`` are accepted as aliases, and outbound calls send
both ``X-Correlation-ID`` and ``X-Flow-ID`` so services that only know the old name keep stitching
requests together. W3C ``traceparent`` travels alongside when a span is active.

New ids look like ``corr_<uuid4 hex>``. The old ``flow_<unixnano>_<8 hex>`` ids leaked the host clock,
could collide across processes started in the same nanosecond and carried only 32 random bits; a uuid4
has 122 random bits and no clock in it. Old-style ids (and any other well-formed id a caller sends) are
still accepted unchanged, since validation only checks the character set and the length.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from jax_assistant.domain import AuditEvent, AuditOutcome
from jax_assistant.observability.entropy import random_bytes
from jax_assistant.observability.redaction import redact

CORRELATION_ID_HEADER = "X-Correlation-ID"
FLOW_ID_HEADER = "X-Flow-ID"
REQUEST_ID_HEADER = "X-Request-ID"
TRACEPARENT_HEADER = "traceparent"
TRACESTATE_HEADER = "tracestate"

# Precedence order at ingress: the primary header first, then the aliases.
INBOUND_CORRELATION_HEADERS: tuple[str, ...] = (CORRELATION_ID_HEADER, FLOW_ID_HEADER, REQUEST_ID_HEADER)

CORRELATION_ID_PREFIX = "corr_"
LEGACY_FLOW_ID_PREFIX = "flow_"
MAX_CORRELATION_ID_LENGTH = 128

_correlation_id: ContextVar[str | None] = ContextVar("jax_correlation_id", default=None)

# Explicit W3C propagator rather than the global one: the global propagator is configurable through
# OTEL_PROPAGATORS and could be set to something that never writes ``traceparent``.
_w3c_propagator = TraceContextTextMapPropagator()


def new_correlation_id() -> str:
    """A fresh id, ``corr_`` + 32 hex digits (see the module docstring for why not ``flow_...``)."""
    return CORRELATION_ID_PREFIX + _uuid4_hex()


def _uuid4_hex() -> str:
    # The bits of uuid.uuid4().hex, set by hand: every HTTP request without an id makes one, the UUID
    # object costs about twice as much as the bytes, and uuid4's own os.urandom call releases the GIL
    # (see observability/entropy.py).
    raw = bytearray(random_bytes(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def is_valid_correlation_id(value: str) -> bool:
    """1..128 printable ASCII characters (space to tilde).

    ASCII only because the id is echoed into HTTP headers and log lines: control characters would allow
    header or log injection and non-ASCII bytes are not portable in header values.
    """
    # For ASCII, isprintable() is exactly space to tilde; both run in C (a per-character generator
    # cost a few µs per request).
    return 0 < len(value) <= MAX_CORRELATION_ID_LENGTH and value.isascii() and value.isprintable()


def get_correlation_id() -> str | None:
    """The id bound to the current context (task), or None."""
    return _correlation_id.get()


def _from_headers(headers: Mapping[str, str]) -> str | None:
    # Header names are case-insensitive (HTTP/2 even lowercases them all), so index by lowercase once.
    lowered = {str(k).lower(): v for k, v in headers.items()}
    for name in INBOUND_CORRELATION_HEADERS:
        raw = lowered.get(name.lower())
        if raw is None:
            continue
        candidate = str(raw).strip()
        # An unusable value does not end the search: a malformed primary header next to a good
        # X-Flow-ID still lets us join the caller's existing flow.
        if is_valid_correlation_id(candidate):
            return candidate
    return None


def ensure_correlation_id(headers: Mapping[str, str] | None = None) -> str:
    """Bind a correlation id to the current context and return it.

    The first valid value among X-Correlation-ID, X-Flow-ID, X-Request-ID (any case) wins; without one,
    the id already bound to this context is kept; otherwise a new one is generated. The binding is not
    reset automatically: call this at the start of a request/task (whose context is its own copy), or use
    :func:`bind_correlation_id` for a scoped binding.
    """
    cid = _from_headers(headers) if headers else None
    if cid is None:
        cid = _correlation_id.get() or new_correlation_id()
    _correlation_id.set(cid)
    return cid


@contextmanager
def bind_correlation_id(correlation_id: str | None = None) -> Iterator[str]:
    """Bind ``correlation_id`` (or a new one) for the ``with`` block, restoring the previous value after."""
    cid = new_correlation_id() if correlation_id is None else correlation_id
    if not is_valid_correlation_id(cid):
        raise ValueError(f"invalid correlation id: {cid!r}")
    token = _correlation_id.set(cid)
    try:
        yield cid
    finally:
        _correlation_id.reset(token)


def set_correlation_id(correlation_id: str) -> Token[str | None]:
    """Bind an id already known to be valid; give the token to :func:`reset_correlation_id` after.

    :func:`bind_correlation_id` without its generator and its check: the HTTP middleware binds one id
    per request and validates what it reads itself."""
    return _correlation_id.set(correlation_id)


def reset_correlation_id(token: Token[str | None]) -> None:
    _correlation_id.reset(token)


def outbound_headers(correlation_id: str | None = None) -> dict[str, str]:
    """Headers for an outbound call: the correlation id under both names, plus W3C trace context.

    With no id given or bound, one is generated *and bound* (via :func:`ensure_correlation_id`) so every
    later call from the same context carries the same id. ``traceparent`` (and ``tracestate``) are only
    added when the current OpenTelemetry span has a valid context, i.e. tracing is on and a span is open.
    """
    cid = correlation_id or get_correlation_id() or ensure_correlation_id()
    headers = {CORRELATION_ID_HEADER: cid, FLOW_ID_HEADER: cid}
    _w3c_propagator.inject(headers)
    return headers


def new_audit_event(
    action: str,
    outcome: AuditOutcome,
    *,
    payload: Mapping[str, Any] | None = None,
    error: str | None = None,
    correlation_id: str | None = None,
) -> AuditEvent:
    """An AuditEvent stamped with the current correlation id, its payload redacted (contract rule)."""
    return AuditEvent(
        id="aud_" + _uuid4_hex(),
        correlation_id=correlation_id or get_correlation_id() or ensure_correlation_id(),
        action=action,
        outcome=outcome,
        payload=redact(dict(payload or {})),
        error=error,
    )
