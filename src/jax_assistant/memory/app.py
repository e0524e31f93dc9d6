"""``jax memory serve``: the jax-memory HTTP service (FastAPI), on the embedded backend.

Routes (``reference/jax-contracts.md`` and ``reference/hindsight.md``; docs/memory.md "Service"):

- ``POST /tools`` with ``{"tool", "input"}`` -> ``{"output"}``: ``memory.retain {bank, item} -> {id}``,
  ``memory.recall {bank, query} -> {items}``, ``memory.reflect {bank, params} -> {items}``; and, beyond
  the old contract, ``memory.retain_many {bank, items} -> {ids}``, ``memory.invalidate {bank, id,
  reason?}`` and ``memory.restore {bank, id}`` (what the ``remote`` backend needs). Errors are
  ``{"error": message}``: 400 (the contract's messages), 404 unknown memory, 405 non-POST, 503 store down.
- ``GET /v1/memory/banks``, ``GET /v1/memory/search?q=&bank=&limit=`` (``query=`` accepted too).
- ``/health`` (liveness, always 200 while the process runs) and ``/ready`` (503 while the store is down).
- Hindsight-compatible: ``POST /v1/default/banks/{bank}/memories``, ``.../memories/recall``,
  ``GET .../memories/list``, ``.../reflect``, ``PATCH .../memories/{id}``, ``GET /v1/default/banks``,
  ``GET /version``.
- ``GET /audit?correlationId=``: every retain, recall and reflect is audited in this service's own
  database under the request's correlation id (``X-Correlation-ID`` / ``X-Flow-ID``, echoed back).

``create_app(settings)`` is the one factory. The orchestrator's protection applies here through the
same code (``service.harden`` with ``settings.api``): API keys checked against this service's own
database (mutating routes need ``write``, ``/audit`` needs ``admin``, ``/health`` and ``/ready`` are
open), request limits and the trusted-host check.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from jax_assistant import __version__
from jax_assistant.config import Settings
from jax_assistant.domain.errors import InputError, UnavailableError
from jax_assistant.memory.base import MemoryUnavailableError
from jax_assistant.memory.facade import Memory, open_memory
from jax_assistant.memory.hindsight import TAG_NAMESPACE, from_hindsight_item, to_hindsight_result
from jax_assistant.memory.models import (
    BANKS,
    MemoryItem,
    MemoryNotFoundError,
    MemoryQuery,
    MemoryValidationError,
    validate_bank,
)
from jax_assistant.observability.correlation import get_correlation_id, new_audit_event
from jax_assistant.observability.logging import get_logger
from jax_assistant.service import ApiKeyStore, KeyStore, harden, scope_resolver
from jax_assistant.service.correlation import CorrelationIdMiddleware
from jax_assistant.storage import Database, Repository, open_database

SERVICE_NAME: Final = "jax-memory"
DEFAULT_PORT: Final = 8090
MEMORY_DATABASE_ENV: Final = "JAX_MEMORY_DATABASE_URL"
# Hindsight recall "budget": candidates asked of each arm (hindsight.md).
BUDGET_LIMITS: Final = {"low": 100, "mid": 300, "high": 1000}
# Set on a validation error the audited() wrapper has already recorded.
_AUDITED: Final = "_jax_audited"

log = get_logger("jax_assistant.memory.app")

# Driver/connection failures of the service's own store: it is down, not the request that is wrong.
_STORE_DOWN: tuple[type[BaseException], ...] = (OperationalError, OSError, ConnectionError, TimeoutError)


def memory_database_url(explicit: str | None = None) -> str:
    """The service's own database: ``explicit``, else ``$JAX_MEMORY_DATABASE_URL``, else a SQLite file
    ``memory.db`` beside the project's ``jax.db`` (never the orchestrator's database by default: the
    service is a separate process with a store of its own)."""
    from jax_assistant.storage.db import _data_dir, normalise_database_url

    candidate = explicit or os.environ.get(MEMORY_DATABASE_ENV)
    if candidate:
        return normalise_database_url(candidate)
    return f"sqlite+aiosqlite:///{_data_dir() / 'memory.db'}"


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, **extra})


def _is_store_down(exc: BaseException) -> bool:
    if isinstance(exc, (UnavailableError, *_STORE_DOWN)):
        return True
    # Any other driver error that is not about the statement itself (a connect refused, a database
    # not accepting connections, a dropped connection) means the store cannot be used right now.
    return isinstance(exc, DBAPIError) and not isinstance(
        exc, IntegrityError | DataError | ProgrammingError | NotSupportedError
    )


def _dump(item: MemoryItem) -> dict[str, Any]:
    return item.model_dump(mode="json", by_alias=True, exclude_none=True)


class ToolError(InputError):
    """A /tools request that names no known tool or has a malformed envelope."""


def create_app(
    settings: Settings | None = None,
    *,
    database_url: str | None = None,
    memory: Memory | None = None,
) -> FastAPI:
    """The jax-memory service. ``database_url`` is its own store (see :func:`memory_database_url`);
    pass ``memory`` to serve an already-open facade (the caller then closes it)."""
    settings = settings or Settings()
    url = memory_database_url(database_url)
    state: dict[str, Any] = {"started": time.monotonic()}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["started"] = time.monotonic()
        db: Database = await open_database(url)
        state["db"] = db
        state["audit"] = Repository(db)
        own = memory is None
        # The service always stores in its own database: the embedded backend, whatever the
        # caller's [memory] backend says (a remote backend pointing here would loop).
        embedded = settings.model_copy(
            update={"memory": settings.memory.model_copy(update={"backend": "embedded"})}
        )
        state["memory"] = memory or await open_memory(embedded, database=db)
        log.info("jax-memory ready", database=str(db))
        try:
            yield
        finally:
            if own:
                await state["memory"].close()
            await db.close()

    app = FastAPI(
        title=SERVICE_NAME,
        version=__version__,
        description="Retain, recall and reflect over trading memories (Jax tool shapes, Hindsight routes).",
        lifespan=lifespan,
    )

    def key_store() -> KeyStore:
        db: Database | None = state.get("db")
        if db is None:
            raise RuntimeError("jax-memory is not open (the app's lifespan did not run)")
        return ApiKeyStore(db)

    # Keys live in this service's own database (``jax keys create --db <memory db url>``). The audit
    # holds every caller's memories and queries: admin only, as on the orchestrator.
    harden(
        app, settings.api, key_store=key_store, needs=scope_resolver(settings.api, admin_prefixes=["/audit"])
    )
    app.add_middleware(CorrelationIdMiddleware)  # outermost: auth and limit refusals carry the id too
    app.state.memory_state = state

    def mem() -> Memory:
        current: Memory = state["memory"]
        return current

    async def audit(action: str, outcome: str, payload: Mapping[str, Any], error: str | None = None) -> None:
        """One audit row under the request's correlation id; a store that is down loses only the row."""
        event = new_audit_event(action, outcome, payload=payload, error=error)  # type: ignore[arg-type]
        try:
            await state["audit"].record_audit(event, idempotency_key=f"memory/{event.id}")
        except Exception as exc:
            log.warning("could not record the audit event", action=action, error=str(exc))

    async def audited(action: str, payload: dict[str, Any], call: Callable[[], Awaitable[Any]]) -> Any:
        try:
            result = await call()
        except MemoryValidationError as exc:
            await audit(action, "rejected", payload, str(exc))
            setattr(exc, _AUDITED, True)  # so call_tool does not audit it a second time
            raise
        except Exception as exc:
            await audit(action, "error", payload, str(exc))
            raise
        return result

    # ------------------------------------------------------------------ errors

    @app.exception_handler(MemoryNotFoundError)
    async def _not_found(_: Request, exc: Exception) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(InputError)
    async def _input(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InputError)
        return _error(400, str(exc), **({"field": exc.field} if exc.field else {}))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return _error(400, "invalid JSON")
        loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        return _error(400, f"{loc or 'request'}: {first.get('msg', 'invalid')}", field=loc or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = "method not allowed" if exc.status_code == 405 else str(exc.detail)
        return JSONResponse(
            status_code=exc.status_code, content={"error": message}, headers=dict(exc.headers or {})
        )

    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        if _is_store_down(exc):
            log.warning("memory store unavailable", error=str(exc).splitlines()[0] if str(exc) else "")
            return _error(503, "memory store unavailable", correlationId=get_correlation_id())
        raise exc

    families: tuple[type[Exception], ...] = (MemoryUnavailableError, UnavailableError, OperationalError)
    for family in (*families, OSError, DBAPIError):
        app.add_exception_handler(family, _unexpected)

    # ------------------------------------------------------------------ tools

    async def tool_retain(inp: Mapping[str, Any]) -> dict[str, Any]:
        bank = validate_bank(inp.get("bank"))
        raw = inp.get("item")
        if raw is None:
            raise MemoryValidationError("item is required", field="item", rule="required")
        payload = {"tool": "memory.retain", "bank": bank}
        memory_id = await audited("memory.retain", payload, lambda: mem().retain(raw, bank=bank))
        await audit("memory.retain", "success", {**payload, "id": memory_id})
        return {"id": memory_id}

    async def tool_retain_many(inp: Mapping[str, Any]) -> dict[str, Any]:
        bank = validate_bank(inp.get("bank"))
        raw = inp.get("items")
        if not isinstance(raw, list):
            raise MemoryValidationError("items must be a list", field="items", rule="type list")
        payload = {"tool": "memory.retain_many", "bank": bank, "count": len(raw)}
        ids = await audited("memory.retain", payload, lambda: mem().retain_many(raw, bank=bank))
        await audit("memory.retain", "success", {**payload, "ids": ids[:100]})
        return {"ids": ids}

    async def tool_recall(inp: Mapping[str, Any]) -> dict[str, Any]:
        bank = validate_bank(inp.get("bank"))
        query = inp.get("query")
        payload = {"tool": "memory.recall", "bank": bank, "query": query}
        items = await audited("memory.recall", payload, lambda: mem().recall(query, bank=bank))
        await audit("memory.recall", "success", {**payload, "count": len(items)})
        return {"items": [_dump(i) for i in items]}

    async def tool_reflect(inp: Mapping[str, Any]) -> dict[str, Any]:
        bank = validate_bank(inp.get("bank"))
        params = inp.get("params")
        payload = {"tool": "memory.reflect", "bank": bank, "params": params}
        items = await audited("memory.reflect", payload, lambda: mem().reflect(params, bank=bank))
        await audit("memory.reflect", "success", {**payload, "count": len(items)})
        return {"items": [_dump(i) for i in items]}

    async def tool_invalidate(inp: Mapping[str, Any]) -> dict[str, Any]:
        bank = validate_bank(inp.get("bank"))
        memory_id = str(inp.get("id") or "")
        reason = inp.get("reason")
        payload = {"tool": "memory.invalidate", "bank": bank, "id": memory_id}
        await audited(
            "memory.invalidate",
            payload,
            lambda: mem().invalidate(memory_id, bank=bank, reason=str(reason) if reason else None),
        )
        await audit("memory.invalidate", "success", payload)
        return {"id": memory_id, "state": "invalidated"}

    async def tool_restore(inp: Mapping[str, Any]) -> dict[str, Any]:
        bank = validate_bank(inp.get("bank"))
        memory_id = str(inp.get("id") or "")
        payload = {"tool": "memory.restore", "bank": bank, "id": memory_id}
        await audited("memory.restore", payload, lambda: mem().restore(memory_id, bank=bank))
        await audit("memory.restore", "success", payload)
        return {"id": memory_id, "state": "valid"}

    tools: dict[str, Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]] = {
        "memory.retain": tool_retain,
        "memory.retain_many": tool_retain_many,
        "memory.recall": tool_recall,
        "memory.reflect": tool_reflect,
        "memory.invalidate": tool_invalidate,
        "memory.restore": tool_restore,
    }

    @app.post("/tools")
    async def call_tool(request: Request) -> dict[str, Any]:
        # Parsed by hand: the contract's 400 "invalid JSON" / "unknown tool" precede any shape check.
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise ToolError("invalid JSON", field="body", rule="json") from None
        if not isinstance(body, dict):
            raise ToolError("invalid JSON", field="body", rule="json object")
        name = body.get("tool")
        handler = tools.get(name) if isinstance(name, str) else None
        if handler is None:
            raise ToolError("unknown tool", field="tool", rule=f"one of {', '.join(tools)}")
        inp = body.get("input")
        if inp is None:
            inp = {}
        if not isinstance(inp, dict):
            raise ToolError("input must be an object", field="input", rule="type object")
        try:
            return {"output": await handler(inp)}
        except InputError as exc:
            # Refused before the call reached memory (no bank, bad envelope): still audited.
            if not getattr(exc, _AUDITED, False):
                action = "memory.retain" if name == "memory.retain_many" else str(name)
                await audit(action, "rejected", {"tool": name, "bank": inp.get("bank")}, str(exc))
            raise

    # ------------------------------------------------------------------ Jax REST

    @app.get("/v1/memory/banks")
    async def list_banks() -> list[str]:
        return sorted(set(BANKS) | set(await mem().banks()))

    @app.get("/v1/memory/search")
    async def search(
        q: str | None = None,
        query: str | None = None,
        bank: str | None = None,
        symbol: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    ) -> dict[str, Any]:
        name = validate_bank(bank) if bank is not None else mem().default_bank
        text = q if q is not None else query
        payload = {"route": "/v1/memory/search", "bank": name, "q": text, "limit": limit}
        found = await audited(
            "memory.recall",
            payload,
            lambda: mem().recall({"q": text, "symbol": symbol, "limit": limit}, bank=name),
        )
        await audit("memory.recall", "success", {**payload, "count": len(found)})
        return {"items": [_dump(i) for i in found]}

    # ------------------------------------------------------------------ service

    def uptime() -> float:
        started: float = state["started"]
        return round(time.monotonic() - started, 3)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "healthy", "service": SERVICE_NAME, "version": __version__, "uptime": uptime()}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        try:
            report = await mem().health()
            ok, detail = report.ok, report.detail
        except Exception as exc:
            ok, detail = False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        body = {"status": "ready" if ok else "unavailable", "service": SERVICE_NAME, "detail": detail}
        return JSONResponse(status_code=200 if ok else 503, content=body)

    @app.get("/audit")
    async def list_audit(
        correlation_id: Annotated[str | None, Query(alias="correlationId")] = None,
        correlation_id_snake: Annotated[str | None, Query(alias="correlation_id")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> list[dict[str, Any]]:
        cid = correlation_id or correlation_id_snake
        events = await state["audit"].list_audit(correlation_id=cid, limit=limit)
        return [e.to_contract() for e in events]

    # ------------------------------------------------------------------ Hindsight-compatible

    @app.get("/version")
    async def version() -> dict[str, Any]:
        return {
            "api_version": __version__,
            "service": SERVICE_NAME,
            "features": {"observations": False, "llm": False, "reflect": "local", "mcp": False},
        }

    @app.get("/v1/default/banks")
    async def hindsight_banks() -> dict[str, Any]:
        return {"banks": [{"bank_id": name, "name": name} for name in await mem().banks()]}

    @app.post("/v1/default/banks/{bank}/memories")
    async def hindsight_retain(bank: str, request: Request) -> dict[str, Any]:
        name = validate_bank(bank)
        body = await _json_object(request)
        raw_items = body.get("items")
        if not isinstance(raw_items, list):
            raise MemoryValidationError("items must be a list", field="items", rule="type list")
        items = []
        for index, raw in enumerate(raw_items):
            if not isinstance(raw, dict) or not isinstance(raw.get("content"), str):
                raise MemoryValidationError(
                    f"items[{index}].content is required", field=f"items[{index}].content", rule="required"
                )
            metadata = raw.get("metadata") or {}
            if not isinstance(metadata, dict) or any(not isinstance(v, str) for v in metadata.values()):
                raise MemoryValidationError(
                    f"items[{index}].metadata values must be strings",
                    field=f"items[{index}].metadata",
                    rule="string values",
                )
            items.append(from_hindsight_item(raw))
        payload = {"route": "hindsight.retain", "bank": name, "count": len(items)}
        ids = await audited("memory.retain", payload, lambda: mem().retain_many(items, bank=name))
        await audit("memory.retain", "success", {**payload, "ids": ids[:100]})
        response: dict[str, Any] = {
            "success": True,
            "bank_id": name,
            "items_count": len(ids),
            "async": False,
            "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
        }
        if body.get("operation_id"):
            response["operation_id"] = body["operation_id"]
        return response

    @app.post("/v1/default/banks/{bank}/memories/recall")
    async def hindsight_recall(bank: str, request: Request) -> dict[str, Any]:
        name = validate_bank(bank)
        body = await _json_object(request)
        text = body.get("query")
        if not isinstance(text, str):
            raise MemoryValidationError("query is required", field="query", rule="required")
        budget = body.get("budget") or "mid"
        limit = BUDGET_LIMITS.get(str(budget), BUDGET_LIMITS["mid"])
        tags = [t for t in body.get("tags") or [] if isinstance(t, str)]
        mode = body.get("tags_match") or "any"
        payload = {"route": "hindsight.recall", "bank": name, "query": text, "tags": tags}

        async def strict(group: list[str]) -> list[MemoryItem]:
            query, docs = _hindsight_query(text, group, limit)
            hits = await mem().recall(query, bank=name)
            return [h for h in hits if h.id in docs or h.document_id in docs] if docs else hits

        async def run() -> list[MemoryItem]:
            # Our store matches tags strictly (untagged never match); "any" modes run one recall per
            # tag and merge, best score first.
            if tags and mode in ("any", "any_strict") and len(tags) > 1:
                merged: dict[str, MemoryItem] = {}
                for tag in tags:
                    for hit in await strict([tag]):
                        key = hit.id or hit.summary
                        if key not in merged or (hit.score or 0) > (merged[key].score or 0):
                            merged[key] = hit
                return sorted(merged.values(), key=lambda i: -(i.score or 0.0))[:limit]
            return await strict(tags)

        found = await audited("memory.recall", payload, run)
        await audit("memory.recall", "success", {**payload, "count": len(found)})
        budget_tokens = int(body.get("max_tokens") or 4096)
        results: list[dict[str, Any]] = []
        used = 0
        for item in found:
            used += max(1, len(item.summary) // 4)
            if results and used > budget_tokens:
                break
            results.append(to_hindsight_result(item))
        return {"results": results}

    @app.get("/v1/default/banks/{bank}/memories/list")
    async def hindsight_list(bank: str, request: Request) -> dict[str, Any]:
        """Hindsight's listing, newest first: what our Hindsight client recalls without text, and how it
        finds a document's units to invalidate. Invalidated memories are not listed here (our store
        keeps them out of every read), so ``state=invalidated`` lists none."""
        name = validate_bank(bank)
        q = request.query_params
        try:
            offset, limit = max(0, int(q.get("offset") or 0)), max(0, int(q.get("limit") or 100))
            start = _parse_when(q.get("start_date"))
            end = _parse_when(q.get("end_date"))
        except ValueError as exc:
            raise MemoryValidationError(str(exc), field="query", rule="list parameters") from None
        if (q.get("state") or "valid") != "valid":
            return {"items": [], "total": 0, "limit": limit, "offset": offset}
        query, docs = _hindsight_query("", q.getlist("tags"), min(1000, offset + limit) or 1)
        doc = q.get("document_id")
        query = query.model_copy(
            update={"q": None, "from_": start, "to": end, "limit": 1000 if doc else query.limit}
        )
        payload = {"route": "hindsight.list", "bank": name, "tags": q.getlist("tags"), "document_id": doc}
        found = await audited("memory.recall", payload, lambda: mem().recall(query, bank=name))
        if doc:
            docs.add(doc)
        if docs:
            found = [h for h in found if h.id in docs or h.document_id in docs]
        if end is not None:
            found = [h for h in found if h.ts is None or h.ts < end]  # Hindsight's end is exclusive
        await audit("memory.recall", "success", {**payload, "count": len(found)})
        page = found[offset : offset + limit]
        items = []
        for hit in page:
            result = to_hindsight_result(hit)
            items.append(
                {
                    **{k: result[k] for k in ("id", "text", "context", "document_id", "mentioned_at")},
                    **{k: result[k] for k in ("occurred_start", "occurred_end", "chunk_id", "metadata")},
                    "date": result["mentioned_at"],
                    "fact_type": "world",
                    "entities": "",
                    "tags": result["tags"],
                    "state": "valid",
                }
            )
        return {"items": items, "total": len(found), "limit": limit, "offset": offset}

    @app.post("/v1/default/banks/{bank}/reflect")
    async def hindsight_reflect(bank: str, request: Request) -> dict[str, Any]:
        name = validate_bank(bank)
        body = await _json_object(request)
        params = {"query": body.get("query")}
        payload = {"route": "hindsight.reflect", "bank": name, "query": body.get("query")}
        beliefs = await audited("memory.reflect", payload, lambda: mem().reflect(params, bank=name))
        await audit("memory.reflect", "success", {**payload, "count": len(beliefs)})
        # No LLM here: the answer is the local beliefs, as markdown, and says so.
        lines = ["_Reflected locally (no LLM): beliefs computed from the bank's memories._", ""]
        lines += [f"- {b.summary}" for b in beliefs] or ["- No beliefs: not enough memories in the window."]
        return {
            "text": "\n".join(lines),
            "based_on": {"memories": [to_hindsight_result(b) for b in beliefs]},
            "structured_output": None,
            "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
        }

    @app.patch("/v1/default/banks/{bank}/memories/{memory_id}")
    async def hindsight_state(bank: str, memory_id: str, request: Request) -> dict[str, Any]:
        name = validate_bank(bank)
        body = await _json_object(request)
        target = body.get("state")
        reason = body.get("reason")
        payload = {"route": "hindsight.state", "bank": name, "id": memory_id, "state": target}
        if target == "invalidated":
            await audited(
                "memory.invalidate",
                payload,
                lambda: mem().invalidate(memory_id, bank=name, reason=str(reason) if reason else None),
            )
        elif target == "valid":
            await audited("memory.restore", payload, lambda: mem().restore(memory_id, bank=name))
        else:
            raise MemoryValidationError(
                "state must be 'invalidated' or 'valid'", field="state", rule="invalidated|valid"
            )
        await audit(f"memory.{'invalidate' if target == 'invalidated' else 'restore'}", "success", payload)
        return {"success": True, "id": memory_id, "state": target}

    return app


def _hindsight_query(text: str, tags: list[str], limit: int) -> tuple[MemoryQuery, set[str]]:
    """A Hindsight recall's tags as our query: the filter tags our Hindsight client adds (``jax:sym:``,
    ``jax:type:``, and ``jax:doc:``) are the item's own fields here, the rest are plain tags."""
    symbol: str | None = None
    types: list[str] | None = None
    docs: set[str] = set()
    plain: list[str] = []
    for tag in tags:
        prefix, _, value = tag.removeprefix(TAG_NAMESPACE).partition(":")
        if not tag.startswith(TAG_NAMESPACE):
            plain.append(tag)
        elif prefix == "sym" and value:
            symbol = value.upper()
        elif prefix == "type" and value:
            types = [value]
        elif prefix == "doc" and value:
            docs.add(value)
        else:
            plain.append(tag)
    # A document lookup (invalidation) must not be cut by the ranking: ask for the widest list.
    size = 1000 if docs else limit
    query = MemoryQuery(q=None if docs else text, symbol=symbol, types=types, tags=plain, limit=size)
    return query, docs


def _parse_when(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise ToolError("invalid JSON", field="body", rule="json") from None
    if not isinstance(body, dict):
        raise ToolError("invalid JSON", field="body", rule="json object")
    return body
