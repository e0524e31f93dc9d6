"""Pieces the routers share: the run manager from the app, documented error responses, cursors."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from fastapi import Request

from jax_assistant.api.runs import RunManager
from jax_assistant.api.schemas import ErrorOut, RunDetailOut, RunOut
from jax_assistant.domain import Run, RunStatus
from jax_assistant.domain.errors import InputError
from jax_assistant.storage import Repository

_DESCRIPTIONS = {
    400: "Bad input (the body says which field and rule)",
    401: "Missing or invalid API key",
    403: "The API key lacks the scope this route needs",
    404: "No such resource",
    409: "The resource is not in a state that allows this",
    413: "Request body too large",
    422: "Request validation failed (field, rule in `details`)",
    429: "Too many requests (see Retry-After)",
    500: "Server-side problem (e.g. its configuration)",
    503: "A dependency (database, market data) is unavailable",
    504: "The run did not end in time (it goes on; see GET /runs/{id})",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for ``codes``, all with the one error body."""
    return {code: {"model": ErrorOut, "description": _DESCRIPTIONS[code]} for code in codes}


def run_manager(request: Request) -> RunManager:
    runs: RunManager = request.app.state.runs
    return runs


def repository(request: Request) -> Repository:
    return run_manager(request).repository


async def runs_out(repo: Repository, runs: list[Run]) -> list[RunOut]:
    """Runs with ``error`` filled in for failed ones (one query for the lot)."""
    failed = [r.id for r in runs if r.status is RunStatus.FAILED]
    reasons = await repo.run_failures(failed) if failed else {}
    return [RunOut.model_validate({**r.model_dump(), "error": reasons.get(r.id)}) for r in runs]


async def run_detail(repo: Repository, run_id: str) -> RunDetailOut | None:
    run = await repo.get_run(run_id)
    if run is None:
        return None
    (out,) = await runs_out(repo, [run])
    return RunDetailOut(run=out, symbols=await repo.get_symbol_results(run_id))


def encode_cursor(at: datetime, key: str) -> str:
    raw = json.dumps([at.isoformat(), key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """A cursor from ``X-Next-Cursor`` back to (time, id); anything else is a 400 naming ``cursor``."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, key = json.loads(raw)
        when = datetime.fromisoformat(at)
        if not isinstance(key, str):
            raise TypeError(key)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InputError(
            "cursor: not a cursor this service returned (use X-Next-Cursor as given)",
            field="cursor",
            rule="opaque_cursor",
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)), key


def page_headers(request: Request, next_cursor: str | None) -> dict[str, str]:
    """``X-Next-Cursor`` and a ``Link: rel="next"`` when there is another page."""
    if next_cursor is None:
        return {}
    url = request.url.include_query_params(cursor=next_cursor)
    return {"X-Next-Cursor": next_cursor, "Link": f'<{url.path}?{url.query}>; rel="next"'}


NEXT_PAGE_HEADERS = {
    "X-Next-Cursor": {
        "description": "cursor of the next page (absent on the last page)",
        "schema": {"type": "string"},
    },
    "Link": {"description": 'the next page as rel="next"', "schema": {"type": "string"}},
}
