"""The ``hindsight`` backend: an async client for a real Hindsight server (``reference/hindsight.md``).

Mapping between the Jax shapes and Hindsight's:

- A MemoryItem becomes one Hindsight item: ``content`` = summary, ``timestamp`` = ts, ``context`` = type,
  ``document_id`` = the item's document id (or id), so re-retaining replaces instead of duplicating.
- Hindsight recall cannot filter on metadata, so everything recall filters on is a TAG: the item's own
  tags plus ``jax:type:<type>`` and ``jax:sym:<symbol>`` (namespaced, so an item's own ``sym:aapl`` tag
  and its symbol stay two filters, as in the embedded backend); recall asks ``all_strict`` so untagged
  memories never leak into a per-symbol query (Hindsight's ``any``/``all`` return them).
- Recall with text goes to ``.../memories/recall``. Hindsight drops hits under its semantic floor (cosine
  0.3), so a recall WITHOUT text (by symbol, tags, window) lists ``.../memories/list`` instead, newest
  ``mentioned_at`` first, as the embedded backend orders it. A bank never retained into answers 404:
  recall gives nothing.
- Metadata values must be strings: the whole item travels as JSON in ``metadata["jax_item"]`` and comes
  back from recall intact; ``from``/``to`` and several ``types`` are applied to the results here, since
  Hindsight's temporal window only ranks.
- Reflect: Hindsight's is an LLM loop and answers 400 without an LLM; then the beliefs are computed
  locally (``memory.reflection``) from recalled memories and each says so (``data.reflection``).
- Invalidation: ``PATCH .../memories/{unit id}`` (a UUID) for every unit of the document, found with
  ``.../memories/list?document_id=&state=``, so a restore needs no state in this process.
- ``bank_prefix`` maps our bank names into a shared server's namespace (``banks()`` strips it).

Failures (connection refused, timeouts, 5xx, 429 past one short Retry-After, garbage or oversized
bodies) raise :class:`MemoryUnavailableError`; the pipeline degrades and the outbox keeps retains.
The same mapping serves the Hindsight-compatible routes of ``jax memory serve`` (``memory/app.py``).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from jax_assistant import __version__
from jax_assistant.memory.base import MemoryHealth, MemoryUnavailableError
from jax_assistant.memory.models import (
    MAX_SUMMARY,
    MemoryItem,
    MemoryNotFoundError,
    MemoryQuery,
    MemoryScores,
    MemorySource,
    ReflectionParams,
)
from jax_assistant.observability.correlation import TRACEPARENT_HEADER, outbound_headers

if TYPE_CHECKING:
    import httpx

    from jax_assistant.config import Settings

TENANT: Final = "/v1/default"
ITEM_METADATA_KEY: Final = "jax_item"
# Bodies larger than this are refused (a misbehaving server must not exhaust our memory).
MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
# A 429/503 whose Retry-After is at most this long is retried once; longer waits are the caller's.
MAX_INLINE_RETRY_S: Final = 2.0
# Hindsight caps recall by tokens, not count: roughly this many tokens per memory asked for.
TOKENS_PER_ITEM: Final = 400
# Our filter tags live in their own namespace so they never collide with an item's own tags.
TAG_NAMESPACE: Final = "jax:"
# One page of ``.../memories/list``; the local reflection reads at most REFLECT_MAX_ITEMS (as embedded).
LIST_PAGE: Final = 500
REFLECT_MAX_ITEMS: Final = 10_000


def request_headers() -> dict[str, str]:
    """Correlation id (both names) and W3C ``traceparent``: the active span's, else a fresh unsampled
    one so the receiving service can still tie its work to this call."""
    headers = outbound_headers()
    if TRACEPARENT_HEADER not in headers:
        headers[TRACEPARENT_HEADER] = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"
    return headers


# --------------------------------------------------------------------------- shape mapping


def document_key(item: MemoryItem) -> str:
    """The id Hindsight keys the item by (``document_id``): given, else the item's id, else a content hash."""
    if item.document_id:
        return item.document_id
    if item.id:
        return item.id
    import hashlib

    body = item.model_dump_json(exclude={"id", "score", "scores"})
    return "mem_" + hashlib.sha256(body.encode()).hexdigest()[:24]


def _tag_value(value: str) -> str:
    return value.strip().lower().replace(" ", "_")


def type_tag(value: str) -> str:
    return f"{TAG_NAMESPACE}type:{_tag_value(value)}"


def symbol_tag(value: str) -> str:
    return f"{TAG_NAMESPACE}sym:{_tag_value(value)}"


def filter_tags(item: MemoryItem) -> list[str]:
    tags = [*item.tags, type_tag(item.type)]
    if item.symbol:
        tags.append(symbol_tag(item.symbol))
    return list(dict.fromkeys(tags))


def to_hindsight_item(item: MemoryItem) -> dict[str, Any]:
    """A MemoryItem as a Hindsight retain item (metadata values are all strings)."""
    key = document_key(item)
    stored = item.model_copy(update={"document_id": key, "id": item.id or key, "score": None, "scores": None})
    metadata = {
        ITEM_METADATA_KEY: stored.model_dump_json(exclude_none=True),
        "type": item.type,
        "source_system": (item.source.system if item.source else None) or "",
    }
    if item.symbol:
        metadata["symbol"] = item.symbol
    body: dict[str, Any] = {
        "content": item.summary,
        "context": item.type,
        "metadata": metadata,
        "document_id": key,
        "tags": filter_tags(item),
        "update_mode": "replace",
    }
    if item.ts is not None:
        body["timestamp"] = item.ts.isoformat()
    return body


def _parse_ts(value: object) -> datetime | None:
    if not isinstance(value, str) or not value or value == "unset":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def from_hindsight_item(raw: Mapping[str, Any]) -> MemoryItem:
    """A Hindsight retain item (from any Hindsight client) as a MemoryItem, not yet validated.

    An item our own client wrote carries the whole MemoryItem in its metadata; any other client's item
    is mapped field by field, its full content kept in ``data`` and the summary cut to the contract's
    500 characters.
    """
    metadata = raw.get("metadata") or {}
    if isinstance(metadata, Mapping) and isinstance(metadata.get(ITEM_METADATA_KEY), str):
        item = MemoryItem.model_validate_json(metadata[ITEM_METADATA_KEY])
        return item.model_copy(update={"document_id": raw.get("document_id") or item.document_id})
    content = str(raw.get("content") or "")
    meta = dict(metadata) if isinstance(metadata, Mapping) else {}
    doc = raw.get("document_id")
    tags = [t for t in raw.get("tags") or [] if isinstance(t, str) and not t.startswith(TAG_NAMESPACE)]
    return MemoryItem(
        id=str(doc) if doc else None,
        ts=_parse_ts(raw.get("timestamp")) or datetime.now(UTC),
        type=str(meta.get("type") or raw.get("context") or "world"),
        symbol=str(meta["symbol"]) if meta.get("symbol") else None,
        tags=tags,
        summary=content[:MAX_SUMMARY],
        data={
            "content": content,
            "context": raw.get("context"),
            "metadata": meta,
            # Recall answers a list of entities, ``.../memories/list`` a comma-separated string.
            "entities": raw.get("entities") or [],
        },
        source=MemorySource(system=str(meta.get("source_system") or "hindsight-client")),
        document_id=str(doc) if doc else None,
    )


def to_hindsight_result(item: MemoryItem) -> dict[str, Any]:
    """A recalled MemoryItem in Hindsight's recall result shape (with provenance and scores)."""
    ts = item.ts.isoformat() if item.ts else None
    scores = item.scores
    return {
        "id": item.id,
        "text": item.summary,
        "type": "world",
        "context": item.type,
        "mentioned_at": ts,
        "occurred_start": ts,
        "occurred_end": ts,
        "document_id": item.document_id or item.id,
        "chunk_id": None,
        "metadata": {
            ITEM_METADATA_KEY: item.model_dump_json(exclude_none=True, exclude={"score", "scores"}),
            "type": item.type,
            **({"symbol": item.symbol} if item.symbol else {}),
        },
        "tags": list(item.tags),
        "entities": [],
        "scores": {
            "final": item.score if item.score is not None else (scores.final if scores else 0.0),
            "reranker": None,
            "semantic": scores.semantic if scores else None,
            "keyword": scores.keyword if scores else None,
        },
    }


def _unit_fields(raw: Mapping[str, Any], timestamp: Any) -> dict[str, Any]:
    """A memory unit as ``from_hindsight_item`` reads it. Recall results and ``.../memories/list``
    rows carry the same fields but name the time differently, so the caller picks it."""
    return {
        "content": raw.get("text"),
        "timestamp": timestamp,
        "context": raw.get("context"),
        "metadata": raw.get("metadata"),
        "document_id": raw.get("document_id"),
        "tags": raw.get("tags"),
    }


def from_hindsight_result(raw: Mapping[str, Any]) -> MemoryItem:
    """A Hindsight recall result as a MemoryItem with its score."""
    base = from_hindsight_item(
        _unit_fields(raw, raw.get("occurred_start") or raw.get("mentioned_at"))
        | {"entities": raw.get("entities")}
    )
    given = raw.get("scores")
    scores: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    final = float(scores.get("final") or 0.0)
    return base.model_copy(
        update={
            "score": final,
            "scores": MemoryScores(
                final=final,
                keyword=_number(scores.get("keyword")),
                semantic=_number(scores.get("semantic")),
            ),
        }
    )


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def query_tags(query: MemoryQuery) -> list[str]:
    """The tags a recall must carry, all of them (``all_strict``)."""
    tags = list(query.tags)
    if query.symbol:
        tags.append(symbol_tag(query.symbol))
    if query.types and len(query.types) == 1:
        tags.append(type_tag(query.types[0]))
    return list(dict.fromkeys(tags))


def matches(item: MemoryItem, query: MemoryQuery) -> bool:
    """The filters Hindsight cannot apply itself: several types, and the from/to window."""
    if query.types and item.type not in query.types:
        return False
    if query.from_ is not None and (item.ts is None or item.ts < query.from_):
        return False
    return not (query.to is not None and (item.ts is None or item.ts > query.to))


# --------------------------------------------------------------------------- the client


class HindsightBackend:
    """Async Hindsight client (plain httpx: the official client's sync calls break inside a loop)."""

    name = "hindsight"

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 2.0,
        connect_timeout_s: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
        bank_prefix: str = "",
    ) -> None:
        import httpx  # only when used: a run that talks to no service never loads it

        self.base_url = base_url.rstrip("/")
        self.bank_prefix = bank_prefix
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            transport=transport,
            headers={"User-Agent": f"jax-assistant/{__version__}"},
        )

    async def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        allow: Sequence[int] = (),
    ) -> tuple[int, Any]:
        """One request; returns (status, decoded JSON). Statuses in ``allow`` are returned, not raised."""
        import httpx  # only when used: a run that talks to no service never loads it

        for attempt in range(2):
            try:
                async with self._client.stream(
                    method, path, json=body, params=params, headers=request_headers()
                ) as response:
                    raw = bytearray()
                    async for chunk in response.aiter_bytes():
                        raw.extend(chunk)
                        if len(raw) > MAX_RESPONSE_BYTES:
                            raise MemoryUnavailableError(
                                f"Hindsight {method} {path}: response larger than {MAX_RESPONSE_BYTES} bytes"
                            )
                    status = response.status_code
                    retry_after = response.headers.get("Retry-After")
            except httpx.TimeoutException as exc:
                raise MemoryUnavailableError(f"Hindsight {method} {path}: timed out ({exc!r})") from exc
            except httpx.HTTPError as exc:
                raise MemoryUnavailableError(f"Hindsight at {self.base_url} unreachable: {exc}") from exc
            if status in (429, 503) and attempt == 0:
                wait = _retry_after(retry_after)
                if wait is not None and wait <= MAX_INLINE_RETRY_S:
                    await asyncio.sleep(wait)
                    continue
            if status in allow:
                return status, _decode(bytes(raw), method, path, strict=False)
            if status == 429 or status >= 500:
                raise MemoryUnavailableError(f"Hindsight {method} {path}: HTTP {status}")
            if status >= 400:
                detail = _decode(bytes(raw), method, path, strict=False)
                raise MemoryUnavailableError(f"Hindsight {method} {path}: HTTP {status}: {detail!r:.300}")
            return status, _decode(bytes(raw), method, path, strict=True)
        raise AssertionError("unreachable")  # pragma: no cover

    def _bank_path(self, bank: str, suffix: str = "") -> str:
        return f"{TENANT}/banks/{self.bank_prefix}{bank}{suffix}"

    async def retain(self, bank: str, item: MemoryItem) -> str:
        return (await self.retain_many(bank, [item]))[0]

    async def retain_many(self, bank: str, items: Sequence[MemoryItem]) -> list[str]:
        if not items:
            return []
        body = {"items": [to_hindsight_item(i) for i in items], "async": False}
        _, payload = await self._call("POST", self._bank_path(bank, "/memories"), body)
        if not isinstance(payload, Mapping) or payload.get("success") is False:
            raise MemoryUnavailableError(f"Hindsight retain into {bank!r} did not succeed: {payload!r:.300}")
        return [i.id or document_key(i) for i in items]

    async def _recall_text(self, bank: str, query: MemoryQuery, tags: list[str]) -> list[MemoryItem]:
        assert query.q is not None
        body: dict[str, Any] = {
            "query": query.q,
            "budget": "mid",
            "max_tokens": max(4096, query.limit * TOKENS_PER_ITEM),
        }
        if tags:
            body["tags"] = tags
            body["tags_match"] = "all_strict"
        if query.from_ is not None or query.to is not None:
            window: dict[str, str] = {}
            if query.from_ is not None:
                window["start"] = query.from_.isoformat()
            if query.to is not None:
                window["end"] = query.to.isoformat()
            body["temporal_window"] = window
        status, payload = await self._call(
            "POST", self._bank_path(bank, "/memories/recall"), body, allow=(404,)
        )
        if status == 404:
            return _bank_missing(payload, bank)
        results = payload.get("results") if isinstance(payload, Mapping) else None
        if not isinstance(results, list):
            raise MemoryUnavailableError(f"Hindsight recall from {bank!r}: no results list in the answer")
        items = []
        for raw in results:
            if isinstance(raw, Mapping):
                try:
                    items.append(from_hindsight_result(raw))
                except ValueError:
                    continue  # one malformed hit does not hide the others
        return [i for i in items if matches(i, query)][: query.limit]

    async def _list(
        self, bank: str, params: Mapping[str, Any], *, want: int, keep: Any = None
    ) -> list[tuple[str, MemoryItem]]:
        """(unit id, item) pairs from ``.../memories/list``, newest ``mentioned_at`` first, page by page
        until ``want`` of them pass ``keep`` (or the bank is exhausted)."""
        found: list[tuple[str, MemoryItem]] = []
        offset = 0
        while len(found) < want:
            page = {**params, "limit": LIST_PAGE, "offset": offset}
            status, payload = await self._call(
                "GET", self._bank_path(bank, "/memories/list"), params=page, allow=(404,)
            )
            if status == 404:
                _bank_missing(payload, bank)
                return []
            rows = payload.get("items") if isinstance(payload, Mapping) else None
            if not isinstance(rows, list):
                raise MemoryUnavailableError(f"Hindsight list of {bank!r}: no items list in the answer")
            for raw in rows:
                if not isinstance(raw, Mapping) or not raw.get("id"):
                    continue
                try:
                    item = from_hindsight_item(_unit_fields(raw, raw.get("mentioned_at") or raw.get("date")))
                except ValueError:
                    continue
                if keep is None or keep(item):
                    found.append((str(raw["id"]), item))
            if len(rows) < LIST_PAGE:
                break
            offset += LIST_PAGE
        return found[:want]

    async def _recall_listed(
        self, bank: str, query: MemoryQuery, tags: list[str], *, want: int | None = None
    ) -> list[MemoryItem]:
        params: dict[str, Any] = {"time_field": "mentioned_at"}
        if tags:
            params["tags"] = tags
            params["tags_match"] = "all_strict"
        if query.from_ is not None:
            params["start_date"] = query.from_.isoformat()
        if query.to is not None:
            # The server's end is exclusive, ours inclusive: widen by a second and filter here.
            params["end_date"] = (query.to + timedelta(seconds=1)).isoformat()
        listed = await self._list(bank, params, want=want or query.limit, keep=lambda i: matches(i, query))
        now = datetime.now(UTC)
        # Newest first, ties by id, as the embedded backend orders a recall without text.
        items = sorted((i for _, i in listed), key=lambda i: (i.ts, i.id or ""), reverse=True)
        return [i.model_copy(update=_recency_score(i, now)) for i in items]

    async def recall(self, bank: str, query: MemoryQuery) -> list[MemoryItem]:
        tags = query_tags(query)
        if query.q:
            return await self._recall_text(bank, query, tags)
        return await self._recall_listed(bank, query, tags)

    async def reflect(self, bank: str, params: ReflectionParams) -> list[MemoryItem]:
        assert params.query is not None
        status, payload = await self._call(
            "POST",
            self._bank_path(bank, "/reflect"),
            {"query": params.query, "budget": "low"},
            allow=(400, 404, 501),
        )
        now = datetime.now(UTC)
        window = (now - timedelta(days=params.window_days), now)
        if status == 200 and isinstance(payload, Mapping) and isinstance(payload.get("text"), str):
            based = payload.get("based_on") or {}
            memories = based.get("memories") if isinstance(based, Mapping) else None
            evidence = [str(m.get("id")) for m in memories or [] if isinstance(m, Mapping) and m.get("id")]
            from jax_assistant.memory.models import make_belief

            return [
                make_belief(
                    belief_type="hindsight_reflection",
                    summary=payload["text"][:MAX_SUMMARY] or "Reflection recorded.",
                    window=window,
                    evidence_ids=evidence,
                    confidence=0.5,
                    ts=now,
                    reflection="hindsight",
                    text=payload["text"],
                )
            ]
        # No LLM on the server (400) or no reflect route: reflect locally over the window's memories, all
        # of them as the embedded backend does (a text recall would drop those under the semantic floor).
        reason = f"Hindsight reflect unavailable (HTTP {status}); reflected locally"
        memories = await self._recall_listed(
            bank, MemoryQuery(from_=window[0], to=window[1]), [], want=REFLECT_MAX_ITEMS
        )
        from jax_assistant.memory.reflection import reflect_items

        beliefs = reflect_items(memories, params, now=now)
        return [
            b.model_copy(
                update={"data": {**(b.data or {}), "reflection": "local", "fallback_reason": reason}}
            )
            for b in beliefs
        ]

    async def _set_state(self, bank: str, memory_id: str, state: str, reason: str | None) -> None:
        """PATCH every unit of document ``memory_id`` now in the other state. When none is listed the id
        is patched as it is: a unit id some other client knows, or an item id on jax-memory's own
        Hindsight routes (a real server answers 400 for an id that is not a UUID: not found)."""
        current = "valid" if state == "invalidated" else "invalidated"
        listed = await self._list(bank, {"document_id": memory_id, "state": current}, want=REFLECT_MAX_ITEMS)
        units = [unit for unit, _ in listed] or [memory_id]
        body = {"state": state, **({"reason": reason} if reason else {})}
        done = 0
        for unit in units:
            status, _ = await self._call(
                "PATCH", self._bank_path(bank, f"/memories/{unit}"), body, allow=(400, 404)
            )
            if status == 400 and _is_uuid(unit):
                raise MemoryUnavailableError(f"Hindsight PATCH of {unit!r} in {bank!r}: HTTP 400")
            done += status == 200
        if not done:
            raise MemoryNotFoundError(bank, memory_id)

    async def invalidate(self, bank: str, memory_id: str, reason: str | None = None) -> None:
        await self._set_state(bank, memory_id, "invalidated", reason)

    async def restore(self, bank: str, memory_id: str) -> None:
        await self._set_state(bank, memory_id, "valid", None)

    async def banks(self) -> list[str]:
        _, payload = await self._call("GET", f"{TENANT}/banks")
        raw = payload.get("banks") if isinstance(payload, Mapping) else payload
        names = []
        for bank in raw or []:
            name = bank.get("bank_id") or bank.get("id") if isinstance(bank, Mapping) else bank
            if isinstance(name, str) and name.startswith(self.bank_prefix):
                names.append(name.removeprefix(self.bank_prefix))
        return sorted(set(names))

    async def health(self) -> MemoryHealth:
        try:
            status, payload = await self._call("GET", "/health", allow=(503,))
        except MemoryUnavailableError as exc:
            return MemoryHealth(ok=False, backend=self.name, detail=str(exc))
        detail = payload.get("status") if isinstance(payload, Mapping) else None
        return MemoryHealth(ok=status == 200, backend=self.name, detail=str(detail) if detail else None)

    async def close(self) -> None:
        await self._client.aclose()


def _bank_missing(payload: object, bank: str) -> list[MemoryItem]:
    """A 404 on a bank route: a bank never retained into holds nothing; any other 404 is an outage
    (a wrong URL or tenant must not read as an empty memory)."""
    detail = payload.get("detail") if isinstance(payload, Mapping) else payload
    if isinstance(detail, str) and detail.startswith("Bank ") and "not found" in detail:
        return []
    raise MemoryUnavailableError(f"Hindsight bank {bank!r}: HTTP 404: {detail!r:.300}")


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _recency_score(item: MemoryItem, now: datetime) -> dict[str, Any]:
    """Score of a hit listed without text: Hindsight's linear recency (1 today, 0.1 floor at a year)."""
    age_days = max(0.0, (now - item.ts).total_seconds() / 86400) if item.ts else 365.0
    recency = max(0.1, 1.0 - age_days / 365.0)
    return {"score": recency, "scores": MemoryScores(final=recency, recency=recency)}


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _decode(raw: bytes, method: str, path: str, *, strict: bool) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError) as exc:
        if not strict:
            return raw[:300].decode("utf-8", "replace")
        raise MemoryUnavailableError(f"Hindsight {method} {path}: answer is not JSON ({exc})") from exc


async def open_backend(settings: Settings, **_: Any) -> HindsightBackend:
    """The backend ``[memory] backend = "hindsight"`` opens (``memory.url``, else ``$HINDSIGHT_URL``)."""
    import os

    from jax_assistant.domain.errors import ConfigError

    url = settings.memory.url or os.environ.get("HINDSIGHT_URL")
    if not url:
        raise ConfigError(
            "memory.backend = 'hindsight' needs memory.url (or HINDSIGHT_URL), e.g. http://127.0.0.1:8888",
            key="memory.url",
        )
    return HindsightBackend(
        url, timeout_s=settings.memory.timeout_s, connect_timeout_s=settings.memory.connect_timeout_s
    )
