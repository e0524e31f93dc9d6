"""One bounded JSON POST for the remote research providers, with their failures classified.

- 5xx, connection failures and a 429 that carries ``Retry-After`` raise ``TransientError`` (retried,
  honouring the server's delay); any other 4xx - a 429 without ``Retry-After`` too - raises
  ``ResearchError`` (not retried: asking again gets the same answer).
- A hang ends at the per-call timeout as ``TimeoutError``.
- The body is read while streaming and refused once it passes ``max_bytes``: a runaway or hostile
  response never fills memory. Non-JSON bodies are a ``ResearchError``.
- Every call carries the correlation id and a W3C ``traceparent``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import TYPE_CHECKING, Any

from jax_assistant.domain.errors import UnavailableError
from jax_assistant.observability.correlation import outbound_headers
from jax_assistant.pipeline.base import TransientError
from jax_assistant.pipeline.resilience import retry_after_of

if TYPE_CHECKING:
    import httpx


class ResearchError(UnavailableError):
    """A research provider could not answer, for a reason that a retry would not change."""


class BudgetExhaustedError(ResearchError):
    """A spend budget is used up: research stops (the pipeline does not)."""


def trace_headers(correlation_id: str) -> dict[str, str]:
    """Correlation headers plus a ``traceparent``, made up when tracing is off.

    With tracing on, the current span's context is propagated. Without it a parent is still sent:
    the trace id is derived from the correlation id, so every call of one run shares one trace.
    """
    headers = outbound_headers(correlation_id)
    if "traceparent" not in headers:
        trace_id = hashlib.sha256(correlation_id.encode()).hexdigest()[:32]
        headers["traceparent"] = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    return headers


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    *,
    correlation_id: str,
    timeout_s: float,
    max_bytes: int,
    service: str,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """POST ``body``; ``(status, parsed JSON)`` for a 2xx answer, else one of the errors above."""
    import httpx  # only when used: a run that talks to no service never loads it

    sent = {**trace_headers(correlation_id), **(headers or {})}
    try:
        async with client.stream(
            "POST", url, json=body, headers=sent, timeout=httpx.Timeout(timeout_s)
        ) as response:
            status = response.status_code
            if status >= 400:
                raw = await _read_capped(response, min(max_bytes, 4096), service, strict=False)
                _raise_for_status(response, service, raw)
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ResearchError(
                    f"{service}: response body of {declared} bytes exceeds the {max_bytes} byte cap"
                )
            raw = await _read_capped(response, max_bytes, service)
    except httpx.TimeoutException as exc:
        raise TimeoutError(f"{service}: no answer within {timeout_s:g}s ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise TransientError(f"{service}: {type(exc).__name__}: {exc}") from exc
    try:
        return status, json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResearchError(f"{service}: malformed JSON in the response ({exc})") from exc


async def _read_capped(response: httpx.Response, cap: int, service: str, *, strict: bool = True) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            if not strict:  # an error body is only read for its message: keep the head
                chunks.append(chunk[: max(0, cap - (size - len(chunk)))])
                break
            raise ResearchError(f"{service}: response body exceeds the {cap} byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


def _raise_for_status(response: httpx.Response, service: str, raw: bytes) -> None:
    import httpx  # only when used: a run that talks to no service never loads it

    status = response.status_code
    detail = _error_detail(raw)
    message = f"{service}: HTTP {status}" + (f": {detail}" if detail else "")
    if status == 429:
        error = httpx.HTTPStatusError(message, request=response.request, response=response)
        delay = retry_after_of(error)
        if delay is not None:
            raise TransientError(message + f" (retry after {delay:g}s)", retry_after=delay)
        raise ResearchError(message + " (no Retry-After: not retried)")
    if status >= 500:
        raise TransientError(message)
    raise ResearchError(message)


def _error_detail(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return text[:200]
    if isinstance(parsed, dict):
        for key in ("error", "message", "detail"):
            value = parsed.get(key)
            if isinstance(value, dict):
                value = value.get("message", value)
            if value:
                return str(value)[:200]
    return text[:200]
