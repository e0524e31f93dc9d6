"""A fake Hindsight server (``reference/hindsight.md``) for the ``hindsight`` backend's tests.

A real HTTP server on loopback (served by the tests with uvicorn) speaking Hindsight's documented shapes
in no-LLM mode: retain makes one ``world`` fact per item, ``document_id`` replaces, metadata values must
be strings (422 otherwise, as its pydantic models answer), recall matches keywords and tags with
Hindsight's tag modes (``any``/``all`` ALSO return untagged memories; the ``*_strict`` modes do not),
reflect answers 400 (no LLM), ``PATCH .../memories/{id}`` invalidates and restores. As the real 1.1.0
server does: unit ids are UUIDs (PATCH with anything else is 400), a bank never retained into answers
404 ``Bank '...' not found``, recall leaves out memories that do not match the query (the real one drops
hits under its semantic floor), and ``GET .../memories/list`` filters by tags, document, state and
``mentioned_at`` window, newest first.

Failure modes, set on ``FakeHindsight.faults`` by a test: ``status`` (answer every call with it, e.g.
429 with ``retry_after`` or 503), ``count`` (only that many times), ``hang_s`` (sleep before answering),
``garbage`` (a non-JSON 200 body), ``oversized`` (a body larger than the client accepts). ``requests``
records (method, path, headers, body) of every call, for correlation and shape checks.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response


@dataclass
class Faults:
    status: int | None = None
    retry_after: float | None = None
    count: int | None = None  # None = every call while set
    hang_s: float = 0.0
    garbage: bool = False
    oversized: bool = False
    reflect_llm: bool = False  # True: reflect answers like a server with an LLM

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]


@dataclass
class Unit:
    id: str
    bank: str
    text: str
    timestamp: str | None
    context: str | None
    metadata: dict[str, str]
    document_id: str | None
    tags: list[str]
    entities: list[dict[str, Any]]
    state: str = "valid"


@dataclass
class FakeHindsight:
    units: dict[str, Unit] = field(default_factory=dict)
    banks: set[str] = field(default_factory=set)
    faults: Faults = field(default_factory=Faults)
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)

    def _tags_match(self, unit: Unit, tags: list[str], mode: str) -> bool:
        if not tags:
            return True
        have = set(unit.tags)
        if not have:
            return mode in ("any", "all")  # the documented trap: untagged memories match non-strict modes
        if mode in ("any", "any_strict"):
            return bool(have & set(tags))
        if mode == "exact":
            return have == set(tags)
        return set(tags) <= have

    def recall(self, bank: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        words = {w for w in str(body.get("query", "")).lower().split() if w}
        tags = list(body.get("tags") or [])
        mode = str(body.get("tags_match") or "any")
        hits = []
        for unit in self.units.values():
            if unit.bank != bank or unit.state != "valid" or not self._tags_match(unit, tags, mode):
                continue
            text = unit.text.lower()
            keyword = sum(1 for w in words if w in text) / max(1, len(words))
            if keyword > 0:
                hits.append((keyword, unit))
        hits.sort(key=lambda h: (-h[0], h[1].timestamp or ""), reverse=False)
        limit = {"low": 100, "mid": 300, "high": 1000}.get(str(body.get("budget") or "mid"), 300)
        return [
            {
                "id": unit.id,
                "text": unit.text,
                "type": "world",
                "context": unit.context,
                "mentioned_at": unit.timestamp,
                "occurred_start": unit.timestamp,
                "occurred_end": unit.timestamp,
                "document_id": unit.document_id,
                "chunk_id": None,
                "metadata": unit.metadata,
                "tags": unit.tags,
                "entities": unit.entities,
                "scores": {
                    "final": round(0.5 + score / 2, 4),
                    "reranker": None,
                    "semantic": None,
                    "keyword": score,
                },
            }
            for score, unit in hits[:limit]
        ]


def create_fake_hindsight(state: FakeHindsight | None = None) -> FastAPI:
    fake = state or FakeHindsight()
    app = FastAPI(title="fake-hindsight")
    app.state.fake = fake

    @app.middleware("http")
    async def record_and_fault(request: Request, call_next: Any) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        fake.requests.append((request.method, request.url.path, dict(request.headers), body))
        faults = fake.faults
        if faults.hang_s:
            await asyncio.sleep(faults.hang_s)
        active = faults.count is None or faults.count > 0
        if active and faults.count is not None and (faults.status or faults.garbage or faults.oversized):
            faults.count -= 1
        if active and faults.status is not None:
            headers = {"Retry-After": str(faults.retry_after)} if faults.retry_after is not None else {}
            return JSONResponse(status_code=faults.status, content={"detail": "fault"}, headers=headers)
        if active and faults.garbage:
            return Response(content=b"<html>502 bad gateway</html>", media_type="application/json")
        if active and faults.oversized:
            return Response(content=b"[" + b"0," * (9 * 1024 * 1024) + b"0]", media_type="application/json")
        response: Response = await call_next(request)
        return response

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "healthy", "database": "connected"}

    @app.get("/version")
    async def version() -> dict[str, Any]:
        return {"api_version": "1.1.0", "features": {"observations": False, "mcp": False, "worker": False}}

    @app.get("/v1/default/banks")
    async def banks() -> dict[str, Any]:
        return {"banks": [{"bank_id": b, "name": b} for b in sorted(fake.banks)]}

    @app.post("/v1/default/banks/{bank}/memories")
    async def retain(bank: str, request: Request) -> JSONResponse:
        body = await request.json()
        items = body.get("items")
        if not isinstance(items, list):
            return JSONResponse(
                status_code=422, content={"detail": [{"loc": ["body", "items"], "msg": "required"}]}
            )
        for index, item in enumerate(items):
            metadata = item.get("metadata") or {}
            bad = [k for k, v in metadata.items() if not isinstance(v, str)]
            if bad or not isinstance(item.get("content"), str):
                loc = (
                    ["body", "items", index, "metadata", bad[0]]
                    if bad
                    else ["body", "items", index, "content"]
                )
                return JSONResponse(
                    status_code=422,
                    content={
                        "detail": [
                            {"loc": loc, "msg": "Input should be a valid string", "type": "string_type"}
                        ]
                    },
                )
        fake.banks.add(bank)
        for item in items:
            doc = item.get("document_id")
            if doc:  # re-retaining a document replaces its memories
                for key in [k for k, u in fake.units.items() if u.bank == bank and u.document_id == doc]:
                    del fake.units[key]
            unit = Unit(
                id=str(uuid.uuid4()),
                bank=bank,
                text=item["content"],
                timestamp=item.get("timestamp"),
                context=item.get("context"),
                metadata=dict(item.get("metadata") or {}),
                document_id=doc,
                tags=list(item.get("tags") or []),
                entities=list(item.get("entities") or []),
            )
            fake.units[unit.id] = unit
        return JSONResponse(
            {
                "success": True,
                "bank_id": bank,
                "items_count": len(items),
                "async": False,
                "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
            }
        )

    def no_bank(bank: str) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": f"Bank '{bank}' not found"})

    @app.post("/v1/default/banks/{bank}/memories/recall", response_model=None)
    async def recall(bank: str, request: Request) -> dict[str, Any] | JSONResponse:
        if bank not in fake.banks:
            return no_bank(bank)
        return {"results": fake.recall(bank, await request.json())}

    @app.get("/v1/default/banks/{bank}/memories/list", response_model=None)
    async def list_units(bank: str, request: Request) -> dict[str, Any] | JSONResponse:
        if bank not in fake.banks:
            return no_bank(bank)
        q = request.query_params
        state = q.get("state") or "valid"
        tags, mode = q.getlist("tags"), q.get("tags_match") or "any"
        start, end = q.get("start_date"), q.get("end_date")

        def at(unit: Unit) -> datetime | None:
            return datetime.fromisoformat(unit.timestamp) if unit.timestamp else None

        units = [
            u
            for u in fake.units.values()
            if u.bank == bank
            and u.state == state
            and self_tags(u, tags, mode)
            and (not q.get("document_id") or u.document_id == q.get("document_id"))
            and (start is None or ((t := at(u)) is not None and t >= datetime.fromisoformat(start)))
            and (end is None or ((t := at(u)) is not None and t < datetime.fromisoformat(end)))
        ]
        units.sort(key=lambda u: (at(u) or datetime.min.replace(tzinfo=UTC), u.id), reverse=True)
        offset, limit = int(q.get("offset") or 0), int(q.get("limit") or 100)
        page = units[offset : offset + limit]
        items = [
            {
                "id": u.id,
                "text": u.text,
                "context": u.context,
                "date": u.timestamp,
                "fact_type": "world",
                "document_id": u.document_id,
                "mentioned_at": u.timestamp,
                "occurred_start": None,
                "occurred_end": None,
                "entities": ", ".join(str(e.get("text")) for e in u.entities),
                "tags": u.tags,
                "metadata": u.metadata,
                "state": u.state,
            }
            for u in page
        ]
        return {"items": items, "total": len(units), "limit": limit, "offset": offset}

    def self_tags(unit: Unit, tags: list[str], mode: str) -> bool:
        return fake._tags_match(unit, tags, mode)

    @app.post("/v1/default/banks/{bank}/reflect")
    async def reflect(bank: str, request: Request) -> JSONResponse:
        body = await request.json()
        if not fake.faults.reflect_llm:
            return JSONResponse(
                status_code=400, content={"detail": "Reflect requires an LLM provider (LLM_PROVIDER=none)"}
            )
        hits = fake.recall(bank, {"query": body.get("query", "")})
        return JSONResponse(
            {"text": f"Based on {len(hits)} memories.", "based_on": {"memories": hits}, "usage": {}}
        )

    @app.patch("/v1/default/banks/{bank}/memories/{unit_id}")
    async def set_state(bank: str, unit_id: str, request: Request) -> JSONResponse:
        body = await request.json()
        try:
            uuid.UUID(unit_id)
        except ValueError:
            return JSONResponse(
                status_code=400,
                content={"detail": f"Invalid memory_id: '{unit_id}' is not a valid UUID"},
            )
        unit = fake.units.get(unit_id)
        if unit is None or unit.bank != bank:
            return JSONResponse(status_code=404, content={"detail": f"Memory unit '{unit_id}' not found"})
        if body.get("state") not in ("invalidated", "valid"):
            return JSONResponse(status_code=422, content={"detail": "state must be invalidated or valid"})
        unit.state = body["state"]
        return JSONResponse({"success": True, "id": unit_id, "state": unit.state})

    return app
