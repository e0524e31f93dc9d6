"""The embedded memory backend: memories in the project database, no service and no LLM needed.

Behaviourally it is a Hindsight server without an LLM (reference/hindsight.md):

- **Retrieval.** A keyword arm (SQLite FTS5 with BM25, or PostgreSQL ``tsvector`` with ``ts_rank_cd``; query
  words are OR-ed so a partial match still ranks) and, with the ``semantic`` extra, a vector arm (cosine
  over all-MiniLM-L6-v2 vectors). Each arm returns its best ``memory.candidates``; ranks are fused by
  reciprocal rank (``sum 1 / (60 + rank)``, Hindsight's k) and the fused score is boosted for recency,
  ``x (1 + recency_weight * 0.5 ** (age_days / recency_half_life_days))``, age measured from the query's
  ``to`` (or now). A query without text ranks the filtered memories by recency alone.
- **Filters are exact**: bank (hard isolation), symbol, types, ``from``/``to`` on ``ts``, and strict tags
  (every query tag present; untagged memories never match a tag query). Invalidated memories never return.
- **Idempotent retain.** The same ``document_id`` (else the same ``id``) in a bank is the same memory:
  unchanged content is a no-op, changed content replaces it under the same id (keeping an invalidation).
  Without either, a memory whose content hash is already in the bank returns the existing id.
- **One vector space per bank.** A bank records the model its vectors come from on first embedding. A
  backend with another model refuses the bank (``ConfigError``) until ``reembed(bank)`` recomputes every
  vector; memories retained while semantic was off are embedded (same model) the next time it is on.

Why no approximate vector index: at 100 000 memories x 384 float32 a bank is 150 MB and one query is one
38 M multiply-add matrix-vector product (~15 ms, bound by memory bandwidth), so brute force is exact and
fast enough at this size, with nothing to build or tune. The matrix and the filtered-on columns live in
an in-process index per bank (``memory/vector_index.py``), updated in place by this backend's writes and
re-read (only the difference) when the bank's ``revision`` moved for another reason.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import numpy as np
import numpy.typing as npt
import orjson
from sqlalchemy import (
    Connection,
    String,
    Table,
    and_,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.sql.elements import ColumnElement

from jax_assistant.domain.errors import ConfigError
from jax_assistant.memory.base import MemoryHealth, MemoryUnavailableError
from jax_assistant.memory.models import (
    MemoryItem,
    MemoryNotFoundError,
    MemoryQuery,
    MemoryScores,
    MemorySource,
    ReflectionParams,
)
from jax_assistant.memory.reflection import reflect_items
from jax_assistant.memory.vector_index import BankVectors, VectorFilter, VectorRow
from jax_assistant.observability.redaction import RedactedJson, canonical_json
from jax_assistant.storage.db import EncodedJson
from jax_assistant.storage.tables import MemoryBankRow, MemoryRow, MemoryTagRow

if TYPE_CHECKING:
    from jax_assistant.config import MemoryConfig, Settings
    from jax_assistant.memory.semantic import Embedder
    from jax_assistant.storage.db import Database

RRF_K: Final = 60
MAX_QUERY_TERMS: Final = 32
MAX_BODY_DATA_CHARS: Final = 2000
REFLECT_MAX_ITEMS: Final = 10_000
QUERY_VECTOR_CACHE: Final = 256
# Above this many stored floats a vector search runs in a worker thread (numpy releases the GIL), so a
# 100k-memory bank's ~15 ms product does not hold up the event loop.
SEARCH_THREAD_FLOATS: Final = 2_000_000
COMMON_SHARE: Final = 0.02
COMMON_MIN_DOCS: Final = 2_000
DF_CACHE_S: Final = 60.0
_IN_CHUNK: Final = 500
ANALYZE_MIN_ROWS: Final = 1_000
ANALYZE_SHARE: Final = 0.5
_WORD = re.compile(r"[a-z0-9]+")
# Dropped from queries (PostgreSQL's english configuration drops them too): OR-ing "the" or "with" into a
# query only rewards long memories.
_STOPWORD_TEXT = (
    "a an and are as at be but by for from had has have in into is it its of on or that the their "
    "then there these they this to was were what when where which while who why will with without "
    "after before about over under than did do does how "
)
STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())

M = cast(Table, MemoryRow.__table__)
T = cast(Table, MemoryTagRow.__table__)
B = cast(Table, MemoryBankRow.__table__)
R = TypeVar("R")
# PostgreSQL's generated tsvector column (raw DDL in migration 0005, not in the portable models).
_SEARCH: ColumnElement[Any] = literal_column("memories.search")
_PG_INSERT_TAGS = text(
    "INSERT INTO memory_tags (seq, tag)"
    " SELECT * FROM unnest(CAST(:seqs AS integer[]), CAST(:tags AS varchar[]))"
)
# Planner statistics, refreshed by retain when the live row count moved by more than ANALYZE_MIN_ROWS plus
# ANALYZE_SHARE of the rows counted by the last ANALYZE (like autovacuum's rule, coarser, for servers where
# autovacuum is off or behind a bulk load; ``n_mod_since_analyze`` is not reset by an ANALYZE of some
# columns). Without statistics "bank = :bank" is guessed to match 0.5 % of the rows and the planner ANDs
# the bank index's bitmap (every row of the bank) into each text search: 15 ms at 100 000 memories for a
# 110-match term that takes 0.7 ms with them. The text columns are left out: most of ANALYZE's cost, and
# the keyword arm's statements do not need them.
_PG_STATS_STALE = text(
    "SELECT abs(s.n_live_tup - greatest(c.reltuples, 0)) > :min_rows + :share * greatest(c.reltuples, 0)"
    " FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid"
    " WHERE s.relid = to_regclass('memories')"
)
_PG_ANALYZE_MEMORIES = text("ANALYZE memories (bank, type, symbol, ts, invalidated_at)")
_PG_ANALYZE_TAGS = text("ANALYZE memory_tags")
# GIN's fast update appends new entries to a pending list that every search then scans linearly (and that
# gincostestimate counts, so the planner falls back to sequential scans) until a vacuum merges it. Merging
# it after each retain batch keeps searches on the index's tree; a merge is a sorted bulk insert, cheaper
# than fastupdate=off's entry-by-entry inserts. Only the index owner may merge: others leave it to vacuum.
_PG_CLEAN_GIN = text(
    "SELECT gin_clean_pending_list(c.oid) FROM pg_class AS c"
    " WHERE c.oid = to_regclass('ix_memories_search') AND pg_has_role(c.relowner, 'USAGE')"
)


def _now() -> datetime:
    return datetime.now(UTC)


def query_terms(q: str | None) -> list[str]:
    """The distinct words of ``q`` (letters and digits only, so nothing reaches the match syntax)."""
    seen: dict[str, None] = {}
    for word in _WORD.findall((q or "").lower()):
        if word not in STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)[:MAX_QUERY_TERMS]


def _leaf_strings(value: Any, out: list[str], room: int) -> int:
    """Append ``value``'s strings to ``out`` (depth first, in order) until they fill ``room`` characters
    of text joined by spaces; return the room left (<= 0: full, nothing more is read)."""
    if isinstance(value, str):
        out.append(value)
        return room - len(value) - 1
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list | tuple):
        return room
    for v in value:
        room = _leaf_strings(v, out, room)
        if room <= 0:
            break
    return room


def item_body(item: MemoryItem) -> str:
    """The text the keyword and vector arms see: summary, symbol, type, tags and the data's strings."""
    strings: list[str] = []
    # Only as many strings as the body keeps: a decision's data holds every setup of its symbol, and
    # walking all of it to keep the first 2 000 characters was most of a retain's cost.
    _leaf_strings(item.data or {}, strings, MAX_BODY_DATA_CHARS + 1)
    data_text = " ".join(strings)[:MAX_BODY_DATA_CHARS]
    parts = [item.summary, item.symbol or "", item.type, " ".join(item.tags), data_text]
    return " ".join(p for p in parts if p).strip()


def content_hash(item: MemoryItem) -> str:
    return hash_and_stored_data(item)[0]


def _canonical_payload(payload: dict[str, Any], canonical: Callable[[Any], str]) -> str:
    """``canonical(payload)``, the same text, with the canonical JSON a setup or signal was given when
    it was redacted (``RedactedJson.canonical``, in a list under a data key) used instead of encoding it
    again: an object's canonical JSON is its sorted ``"key":value`` pairs joined by commas, at every
    level (a str key's text is json's ``encode_basestring_ascii`` of it, what json.dumps makes of it)."""

    def element(value: Any) -> str:
        if type(value) is RedactedJson and value.canonical is not None:
            return value.canonical
        return canonical(value)

    def value_of(value: Any) -> str:
        if type(value) is list:
            return "[" + ",".join(map(element, value)) + "]"
        return canonical(value)

    data = payload["data"]
    if type(data) is not dict or any(type(k) is not str for k in data):
        return canonical(payload)
    key = encode_basestring_ascii
    pairs = {k: canonical(v) for k, v in payload.items() if k != "data"}
    pairs["data"] = "{" + ",".join(f"{key(k)}:{value_of(v)}" for k, v in sorted(data.items())) + "}"
    return "{" + ",".join(f"{key(k)}:{pairs[k]}" for k in sorted(pairs)) + "}"


def _refuse(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is left to the json module")


def hash_and_stored_data(item: MemoryItem) -> tuple[str, Any]:
    """``item``'s content hash, and its ``data`` as the row stores it.

    The hash is the SHA-256 of the canonical JSON (sorted keys, compact, ``default=str``), unchanged so
    stored hashes keep matching. The data is stored as orjson's encoding, ~6x cheaper than the json
    module's and parsing to the same value, when the canonical encoding shows it holds nothing orjson
    spells differently or json refuses: no ``default`` call (non-JSON types, which the store refuses),
    no NaN/Infinity (refused too; looked for in json's texts only, as orjson's and the setups' kept
    texts never show one; a string holding those words in json's text only costs the slow path), ASCII
    (non-ASCII text keeps json's escapes). Otherwise the dict goes to the column's own encoder as before,
    so what it refuses still fails the same way."""
    exotic = False

    def default(value: object) -> str:
        nonlocal exotic
        exotic = True
        return str(value)

    payload = {
        "ts": item.ts.isoformat() if item.ts else None,
        "type": item.type,
        "symbol": item.symbol,
        "tags": sorted(item.tags),
        "summary": item.summary,
        "data": item.data,
        "source": item.source.model_dump() if item.source else None,
    }
    # json.dumps(sort_keys, compact, default) as one encoder per item; canonical_json takes orjson's
    # identical text where it proves it identical (so ``default`` would not have been called, and no
    # NaN or Infinity is there). Only json's texts are looked at for those: the texts the setups and
    # signals kept (RedactedJson.canonical) never show one, so the whole payload is not scanned.
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=default).encode
    non_finite = False

    def fallback(value: Any) -> str:
        nonlocal non_finite
        text = encoder(value)
        non_finite = non_finite or "NaN" in text or "Infinity" in text
        return text

    encoded = _canonical_payload(payload, functools.partial(canonical_json, fallback=fallback))
    digest = hashlib.sha256(encoded.encode()).hexdigest()
    data = item.data or {}
    if exotic or non_finite:
        return digest, data
    try:
        # Dates and dataclasses would be encoded by orjson but refused by json: left to json.
        fast = orjson.dumps(
            data, default=_refuse, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
        )
    except TypeError:  # orjson.JSONEncodeError too: big ints, deep nesting, lone surrogates, ...
        return digest, data
    return digest, (EncodedJson(fast.decode()) if fast.isascii() else data)


def recency_factor(ts: datetime, reference: datetime, *, weight: float, half_life_days: float) -> float:
    age_days = max(0.0, (reference - ts).total_seconds() / 86_400)
    return 1.0 + weight * float(0.5 ** (age_days / half_life_days))


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError | ConnectionError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


@dataclass(frozen=True)
class _BankChange:
    """A write's effect on a bank's vector index, read inside the write's transaction: the revision
    before and after it, and the rows it touched as they now are (their vectors included)."""

    before: int | None
    after: int | None
    rows: list[VectorRow] = field(default_factory=list)
    complete: bool = False  # ``rows`` (or ``ids``) is everything the write changed
    invalidated: bool | None = None  # set by an invalidate (True) or restore (False) of ``ids``
    ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class _KeywordPlan:
    """One keyword query: its terms, OR-ed or AND-ed, over the whole filtered bank or (``recent``) only
    its newest ``recent`` memories."""

    terms: list[str]
    any_term: bool
    recent: int | None = None


@dataclass
class _Row:
    seq: int
    id: str
    document_id: str | None
    content_hash: str
    invalidated_at: datetime | None
    invalidation_reason: str | None
    created_at: datetime


class EmbeddedBackend:
    """Memory in the project database (see the module docstring for the semantics)."""

    name = "embedded"

    def __init__(
        self,
        db: Database,
        config: MemoryConfig,
        *,
        embedder: Embedder | None = None,
        owns_database: bool = False,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.db = db
        self.config = config
        self.embedder = embedder
        self._owns_database = owns_database
        self._clock = clock
        # The semantic arm's in-process index per bank, and the revision at which each bank was last
        # known to hold no memory without a vector (so retains need not look for any).
        self._vectors: dict[str, BankVectors] = {}
        self._clean_revision: dict[str, int] = {}
        self._query_vectors: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._cache_lock = asyncio.Lock()
        self._df_cache: dict[str, tuple[float, int]] = {}
        self._total_cache: tuple[float, int] | None = None

    # ------------------------------------------------------------------ plumbing

    async def _write(self, fn: Callable[[Connection], R]) -> R:
        """``fn(conn)`` in one write transaction (the SQLite writer thread when there is one)."""
        box: list[R] = []
        try:
            if self.db.sync_writer is not None:
                await self.db.run_write(lambda conn: box.append(fn(conn)))
            else:
                async with self.db.transaction() as conn:
                    box.append(await conn.run_sync(fn))
        except Exception as exc:
            if _is_unavailable(exc):
                raise MemoryUnavailableError(
                    f"memory store unavailable: {type(exc).__name__}: {exc}"
                ) from exc
            raise
        return box[0]

    async def _read(self, fn: Callable[[Connection], R]) -> R:
        try:
            async with self.db.engine.connect() as conn:
                return await conn.run_sync(fn)
        except Exception as exc:
            if _is_unavailable(exc):
                raise MemoryUnavailableError(
                    f"memory store unavailable: {type(exc).__name__}: {exc}"
                ) from exc
            raise

    async def _embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32] | None:
        if self.embedder is None or not texts:
            return None
        return await asyncio.to_thread(self.embedder.embed, texts)

    def _check_model(self, bank: str, recorded: str | None) -> None:
        if self.embedder is not None and recorded is not None and recorded != self.embedder.model_name:
            raise ConfigError(
                f"memory bank {bank!r} holds vectors of {recorded!r}, not {self.embedder.model_name!r};"
                " vector spaces are never mixed: re-embed the bank (EmbeddedBackend.reembed) or turn"
                " memory.semantic off",
                key="memory.semantic",
            )

    async def _bank_model(self, bank: str) -> str | None:
        def read(conn: Connection) -> str | None:
            return conn.execute(select(B.c.embedding_model).where(B.c.name == bank)).scalar()

        return await self._read(read)

    # ------------------------------------------------------------------ retain

    async def retain(self, bank: str, item: MemoryItem) -> str:
        return (await self.retain_many(bank, [item]))[0]

    async def retain_many(self, bank: str, items: Sequence[MemoryItem]) -> list[str]:
        if not items:
            return []
        if self.embedder is not None:
            self._check_model(bank, await self._bank_model(bank))
        bodies = [item_body(item) for item in items]
        vectors = await self._embed(bodies)
        model = self.embedder.model_name if self.embedder is not None else None
        dim = self.embedder.dim if self.embedder is not None else None
        now = self._clock()

        change: list[_BankChange] = []

        def write(conn: Connection) -> tuple[list[str], bool]:
            change.clear()
            before = self._revision_in(conn, bank) if self.embedder is not None else None
            ids = self._retain_sync(conn, bank, items, bodies, vectors, model, dim, now)
            if self.embedder is not None:
                change.append(self._retained_change(conn, bank, before, ids))
            if conn.dialect.name != "postgresql":
                return ids, False
            stale = conn.execute(_PG_STATS_STALE, {"min_rows": ANALYZE_MIN_ROWS, "share": ANALYZE_SHARE})
            return ids, bool(stale.scalar())

        try:
            ids, stale = await self._write(write)
        except IntegrityError:
            # A concurrent writer (another process on PostgreSQL) stored the same document or bank first;
            # run again: this time the lookup sees its row and updates or reuses it.
            ids, stale = await self._write(write)
        if stale:
            await self._write(_analyze_pg)
        if change:
            await self._after_write(bank, change[0])
        return ids

    def _retain_sync(
        self,
        conn: Connection,
        bank: str,
        items: Sequence[MemoryItem],
        bodies: Sequence[str],
        vectors: npt.NDArray[np.float32] | None,
        model: str | None,
        dim: int | None,
        now: datetime,
    ) -> list[str]:
        recorded = conn.execute(select(B.c.name, B.c.embedding_model).where(B.c.name == bank)).first()
        if recorded is None:
            conn.execute(
                insert(B).values(
                    name=bank, embedding_model=model, embedding_dim=dim, revision=0, created_at=now
                )
            )
        else:
            self._check_model(bank, recorded.embedding_model)
            if model is not None and recorded.embedding_model is None:
                conn.execute(
                    update(B).where(B.c.name == bank).values(embedding_model=model, embedding_dim=dim)
                )
        encoded = [hash_and_stored_data(item) for item in items]
        hashes = [digest for digest, _ in encoded]
        existing = self._existing(conn, bank, items, hashes)
        by_doc = {r.document_id: r for r in existing if r.document_id is not None}
        by_id = {r.id: r for r in existing}
        by_hash: dict[str, str] = {r.content_hash: r.id for r in existing}
        to_delete: set[int] = set()
        pending: dict[str, dict[str, Any]] = {}  # id -> row to insert (a later duplicate replaces it)
        pending_doc: dict[str, str] = {}
        pending_hash: dict[str, str] = {}
        out: list[str] = []
        for index, (item, body, digest) in enumerate(zip(items, bodies, hashes, strict=True)):
            target: str | None = None
            if item.document_id is not None:
                target = pending_doc.get(item.document_id)
                old = by_doc.get(item.document_id)
                if target is None and old is not None:
                    target = old.id
            elif item.id is not None:
                target = item.id
            if target is None and item.document_id is None:
                same = pending_hash.get(digest) or by_hash.get(digest)
                if same is not None:
                    out.append(same)
                    continue
            memory_id = target or item.id or f"mem_{uuid.uuid4().hex}"
            old_row = by_id.get(memory_id)
            previous = pending.get(memory_id)
            if previous is not None and previous["content_hash"] == digest:
                out.append(memory_id)
                continue
            if previous is None and old_row is not None and old_row.content_hash == digest:
                out.append(memory_id)
                continue
            if old_row is not None:
                to_delete.add(old_row.seq)
            row = {
                "id": memory_id,
                "bank": bank,
                "type": item.type,
                "symbol": item.symbol,
                "ts": item.ts,
                "tags": list(item.tags),
                "summary": item.summary,
                "data": encoded[index][1],
                "source_system": (item.source or MemorySource()).system or "",
                "source_ref": (item.source or MemorySource()).ref,
                "document_id": item.document_id,
                "content_hash": digest,
                "body": body,
                "embedding": vectors[index].tobytes() if vectors is not None else None,
                "invalidated_at": old_row.invalidated_at if old_row else None,
                "invalidation_reason": old_row.invalidation_reason if old_row else None,
                "created_at": old_row.created_at if old_row else now,
                "updated_at": now,
            }
            pending[memory_id] = row
            if item.document_id is not None:
                pending_doc[item.document_id] = memory_id
            pending_hash[digest] = memory_id
            out.append(memory_id)
        if to_delete:
            for chunk in _chunks(sorted(to_delete)):
                conn.execute(delete(M).where(M.c.seq.in_(chunk)))
        if pending:
            rows = list(pending.values())
            # Unordered RETURNING, matched back by id: asking for parameter order makes SQLAlchemy insert
            # row by row on SQLite (no sentinel column), one statement per memory.
            seq_of = {r[1]: r[0] for r in conn.execute(insert(M).returning(M.c.seq, M.c.id), rows).all()}
            tag_rows = [
                {"seq": seq_of[row["id"]], "tag": tag} for row in rows for tag in dict.fromkeys(row["tags"])
            ]
            if tag_rows and conn.dialect.name == "postgresql":
                # One statement over two arrays instead of an executemany of one row per tag.
                conn.execute(
                    _PG_INSERT_TAGS,
                    {"seqs": [t["seq"] for t in tag_rows], "tags": [t["tag"] for t in tag_rows]},
                )
            elif tag_rows:
                conn.execute(insert(T), tag_rows)
            if conn.dialect.name == "postgresql":
                _clean_gin_pending(conn)
        if pending or to_delete:
            conn.execute(update(B).where(B.c.name == bank).values(revision=B.c.revision + 1))
        return out

    def _existing(
        self, conn: Connection, bank: str, items: Sequence[MemoryItem], hashes: Sequence[str]
    ) -> list[_Row]:
        """The bank's rows that share a document id, id or content hash with ``items``.

        A row found by document id or hash is also the row of its own id (ids are unique per bank), so
        these three lookups are all ``_retain_sync`` needs."""
        docs = sorted({i.document_id for i in items if i.document_id is not None})
        ids = sorted({i.id for i in items if i.id is not None})
        digests = sorted(set(hashes))
        cols = (
            M.c.seq,
            M.c.id,
            M.c.document_id,
            M.c.content_hash,
            M.c.invalidated_at,
            M.c.invalidation_reason,
            M.c.created_at,
        )
        if conn.dialect.name == "postgresql":
            # Imported here: the dialect's import costs every SQLite run ~35 ms (tests/e2e/test_cli_process).
            from sqlalchemy.dialects.postgresql import ARRAY

            # One statement with array parameters (a BitmapOr of the three unique/btree indexes): the
            # IN-list chunks cost a round trip and a fresh plan each, and their plans went to sequential
            # scans on a growing, not yet analysed table.
            stmt = select(*cols).where(
                M.c.bank == bank,
                or_(
                    M.c.document_id == any_(bindparam("docs", type_=ARRAY(String))),
                    M.c.id == any_(bindparam("ids", type_=ARRAY(String))),
                    M.c.content_hash == any_(bindparam("hashes", type_=ARRAY(String))),
                ),
            )
            result = conn.execute(stmt, {"docs": docs, "ids": ids, "hashes": digests})
            return [_Row(*r) for r in result]
        found: dict[int, _Row] = {}
        for column, values in ((M.c.document_id, docs), (M.c.id, ids), (M.c.content_hash, digests)):
            for chunk in _chunks(values):
                for r in conn.execute(select(*cols).where(M.c.bank == bank, column.in_(chunk))):
                    found[r.seq] = _Row(*r)
        return list(found.values())

    async def _backfill(self, bank: str, batch: int = 256) -> int:
        """Embed the bank's memories that have no vector yet (retained while semantic was off)."""
        if self.embedder is None:
            return 0
        done = 0
        while True:

            def pick(conn: Connection) -> tuple[int | None, list[tuple[int, str]]]:
                # The revision first: when nothing is left to embed, the bank was fully embedded at it.
                revision = self._revision_in(conn, bank)
                rows = conn.execute(
                    select(M.c.seq, M.c.body).where(M.c.bank == bank, M.c.embedding.is_(None)).limit(batch)
                )
                return revision, [(r.seq, r.body) for r in rows]

            revision, todo = await self._read(pick)
            if not todo:
                if revision is not None:
                    self._clean_revision[bank] = revision
                return done
            vectors = await self._embed([body for _, body in todo])
            assert vectors is not None
            await self._write(functools.partial(self._store_vectors, bank=bank, todo=todo, vectors=vectors))
            done += len(todo)

    def _store_vectors(
        self, conn: Connection, *, bank: str, todo: list[tuple[int, str]], vectors: npt.NDArray[np.float32]
    ) -> None:
        assert self.embedder is not None
        recorded = conn.execute(select(B.c.embedding_model).where(B.c.name == bank)).scalar()
        self._check_model(bank, recorded)
        conn.execute(
            update(M).where(M.c.seq == bindparam("b_seq")).values(embedding=bindparam("b_vec")),
            [{"b_seq": seq, "b_vec": vectors[i].tobytes()} for i, (seq, _) in enumerate(todo)],
        )
        conn.execute(
            update(B)
            .where(B.c.name == bank)
            .values(
                embedding_model=self.embedder.model_name,
                embedding_dim=self.embedder.dim,
                revision=B.c.revision + 1,
            )
        )

    async def reembed(self, bank: str) -> int:
        """Recompute every vector of ``bank`` with this backend's model and record it; returns the count."""
        if self.embedder is None:
            raise ConfigError("reembed needs memory.semantic = true", key="memory.semantic")

        def clear(conn: Connection) -> None:
            conn.execute(update(M).where(M.c.bank == bank).values(embedding=None))
            conn.execute(
                update(B)
                .where(B.c.name == bank)
                .values(embedding_model=None, embedding_dim=None, revision=B.c.revision + 1)
            )

        await self._write(clear)
        self._vectors.pop(bank, None)
        self._clean_revision.pop(bank, None)
        return await self._backfill(bank)

    # ------------------------------------------------------------------ recall

    def _filters(self, bank: str, query: MemoryQuery) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = [M.c.bank == bank, M.c.invalidated_at.is_(None)]
        if query.symbol:
            conds.append(M.c.symbol == query.symbol)
        if query.types:
            conds.append(M.c.type.in_(query.types))
        if query.from_ is not None:
            conds.append(M.c.ts >= query.from_)
        if query.to is not None:
            conds.append(M.c.ts <= query.to)
        tags = sorted(set(query.tags))
        if tags:
            tagged = (
                select(T.c.seq).where(T.c.tag.in_(tags)).group_by(T.c.seq).having(func.count() == len(tags))
            )
            conds.append(M.c.seq.in_(tagged))
        return conds

    def _term_counts(self, conn: Connection, terms: list[str], cap: int) -> dict[str, int]:
        """How many memories (all banks) match each term, counted up to ``cap + 1`` and cached a while.

        The terms not in the cache are counted in one statement (a round trip per term cost more than
        the counting itself for the rare terms that most queries carry)."""
        now = time.monotonic()
        out: dict[str, int] = {}
        todo: list[str] = []
        for term in terms:
            cached = self._df_cache.get(term)
            if cached is not None and now - cached[0] < DF_CACHE_S:
                out[term] = cached[1]
            else:
                todo.append(term)
        if not todo:
            return out
        if conn.dialect.name == "sqlite":
            params: dict[str, Any] = {"cap": cap + 1}
            counts = []
            for index, term in enumerate(todo):
                params[f"t{index}"] = f'"{term}"'
                counts.append(
                    f"(SELECT count(*) FROM (SELECT rowid FROM memories_fts"
                    f" WHERE memories_fts MATCH :t{index} LIMIT :cap))"
                )
            row = conn.execute(text("SELECT " + ", ".join(counts)), params).one()
            found = dict(zip(todo, row, strict=True))
        else:
            # The term is a parameter of the correlated subquery, so its plan is the GIN bitmap whatever
            # the statistics say (a sequential scan "until cap matches" reads far more for a common term).
            sql = (
                "SELECT t.term, (SELECT count(*) FROM (SELECT 1 FROM memories"
                " WHERE search @@ to_tsquery('english', t.term) LIMIT :cap) AS s)"
                " FROM unnest(CAST(:terms AS text[])) AS t(term)"
            )
            found = {r[0]: r[1] for r in conn.execute(text(sql), {"terms": todo, "cap": cap + 1})}
        for term in todo:
            count = int(found[term] or 0)
            self._df_cache[term] = (now, count)
            out[term] = count
        return out

    def _total(self, conn: Connection) -> int:
        now = time.monotonic()
        if self._total_cache is None or now - self._total_cache[0] >= DF_CACHE_S:
            self._total_cache = (now, int(conn.execute(select(func.count()).select_from(M)).scalar() or 0))
        return self._total_cache[1]

    def _selective_terms(self, conn: Connection, terms: list[str]) -> list[_KeywordPlan]:
        """The keyword queries to try in turn — the first that matches anything wins.

        A term in more than ``COMMON_SHARE`` of a large store ("open" in every market note) has a small
        BM25 weight (IDF under ~4) but makes the keyword arm score thousands of memories: at 100 000
        memories that is tens to hundreds of milliseconds for little change in the top results. Such
        terms are left out of the OR of the selective ones; if every matching term is that common they
        are AND-ed (narrow again), then OR-ed as a last resort, and either is ranked among the newest
        ``cap`` memories that pass the query's filters only (``_KeywordPlan.recent``): common terms match
        a large share of any bigger set, and ranking all of it cost 40-70 ms at 100 000 memories. Stores
        of up to ``COMMON_MIN_DOCS`` memories are never pruned, so their ranking is plain BM25 over every
        term.
        """
        total = self._total(conn)
        cap = max(COMMON_MIN_DOCS, int(COMMON_SHARE * total))
        if total <= cap:
            return [_KeywordPlan(terms, any_term=True)]
        counts = self._term_counts(conn, terms, cap)
        matched = [t for t in terms if counts[t] > 0]
        rare = [t for t in matched if counts[t] <= cap]
        if rare:
            return [_KeywordPlan(rare, any_term=True)]
        if not matched:
            return []
        if len(matched) == 1:
            return [_KeywordPlan(matched, any_term=True, recent=cap)]
        return [
            _KeywordPlan(matched, any_term=False, recent=cap),
            _KeywordPlan(matched, any_term=True, recent=cap),
        ]

    def _keyword_sync(
        self, conn: Connection, bank: str, query: MemoryQuery, terms: list[str], k: int
    ) -> list[tuple[int, float, datetime]]:
        conds = self._filters(bank, query)
        # For the text matches, strict tags are one existence probe per tag on the (seq, tag) key: the
        # matches are few, while the grouped tag lookup of ``_filters`` reads every row of each tag
        # (event:move is on 75 % of the benchmark's memories: 160 ms at 100 000 on PostgreSQL, 45 ms on
        # SQLite, against 9 and 0.4 ms probing). Same rows: every query tag present.
        match_conds = self._filters(bank, query.model_copy(update={"tags": []})) + [
            exists().where(T.c.seq == M.c.seq, T.c.tag == tag) for tag in sorted(set(query.tags))
        ]
        for plan in self._selective_terms(conn, terms):
            hits = self._keyword_query(conn, match_conds if plan.recent is None else conds, plan, k)
            if hits:
                return hits
        return []

    def _keyword_query(
        self, conn: Connection, conds: list[ColumnElement[bool]], plan: _KeywordPlan, k: int
    ) -> list[tuple[int, float, datetime]]:
        """(seq, score, ts) of the top ``k``: ts comes along so the recency boost needs no second query.

        On SQLite ties in BM25 go to the newest memory (``ts``, then ``seq``), which is what the recency
        boost prefers among them (recall_any@5 0.549 -> 0.563 in bench/memory_quality.py); PostgreSQL keeps
        its plain ``rank DESC`` (the same tie-break cost it one query of 71, 0.831 -> 0.817)."""
        if conn.dialect.name == "sqlite":
            match = (" OR " if plan.any_term else " AND ").join(f'"{t}"' for t in plan.terms)
            fts = text("memories_fts")
            where = and_(*conds)
            if plan.recent is not None:
                newest = (
                    select(M.c.seq).where(*conds).order_by(M.c.ts.desc(), M.c.seq.desc()).limit(plan.recent)
                )
                # The "+" keeps this test out of FTS5's index constraints: given "rowid IN (...)" FTS5
                # runs the MATCH once per listed rowid (~0.1 ms each, 280 ms at p99); as a plain filter the
                # matches are enumerated once and only the recent ones are joined and scored.
                where = literal_column("+memories_fts.rowid").in_(newest)
            stmt = (
                select(M.c.seq, text("bm25(memories_fts) AS rank"), M.c.ts)
                .select_from(M.join(fts, text("memories_fts.rowid = memories.seq")))
                .where(text("memories_fts MATCH :match"), where)
                .order_by(text("rank"), M.c.ts.desc(), M.c.seq.desc())
                .limit(k)
            )
            # bm25() is lower-is-better; negate so every arm's score is higher-is-better.
            return [(r[0], -float(r[1]), r[2]) for r in conn.execute(stmt, {"match": match})]
        recent: Any = None
        if plan.recent is not None:
            # A LIMITed subquery is never flattened: the text match runs on these rows only.
            recent = (
                select(M.c.seq, M.c.ts, _SEARCH.label("search"))
                .where(*conds)
                .order_by(M.c.ts.desc(), M.c.seq.desc())
                .limit(plan.recent)
                .subquery("recent")
            )
        tsq = func.to_tsquery("english", bindparam("tsq"))
        if recent is None:
            search, seq_col, ts_col, where = _SEARCH, M.c.seq, M.c.ts, and_(*conds)
            source = M
        else:
            search, seq_col, ts_col, where = recent.c.search, recent.c.seq, recent.c.ts, and_(True)
            source = recent
        rank = func.ts_rank(search, tsq, 1).label("rank")
        stmt = (
            select(seq_col, rank, ts_col)
            .select_from(source)
            .where(search.op("@@")(tsq), where)
            .order_by(rank.desc())
            .limit(k)
        )
        tsq_text = (" | " if plan.any_term else " & ").join(plan.terms)
        return [(r[0], float(r[1]), r[2]) for r in conn.execute(stmt, {"tsq": tsq_text})]

    async def recall(self, bank: str, query: MemoryQuery) -> list[MemoryItem]:
        conds = self._filters(bank, query)
        terms = query_terms(query.q)
        k = max(self.config.candidates, query.limit)
        reference = query.to or self._clock()
        if not terms:

            def latest(conn: Connection) -> list[MemoryItem]:
                rows = conn.execute(
                    select(M).where(*conds).order_by(M.c.ts.desc(), M.c.seq.desc()).limit(query.limit)
                ).all()
                out = []
                for r in rows:
                    boost = recency_factor(
                        r.ts,
                        reference,
                        weight=self.config.recency_weight,
                        half_life_days=self.config.recency_half_life_days,
                    )
                    out.append(_to_item(r, MemoryScores(final=boost, recency=boost)))
                return out

            return await self._read(latest)

        # Keyword search, scoring and the winners' rows on one connection in one thread hand-off, so a
        # keyword-only recall is a single read; with embeddings the keyword arm runs beside the vector arm.
        semantic: list[tuple[int, float]] = []
        early: list[tuple[int, float, datetime]] | None = None
        if self.embedder is not None and query.q:
            # Both arms at once: the keyword SQL in the driver while the query is embedded and scored.
            semantic, early = await asyncio.gather(
                self._semantic(bank, query, conds, k),
                self._read(lambda conn: self._keyword_sync(conn, bank, query, terms, k)),
            )
        sem_score = dict(semantic)

        def load(conn: Connection) -> list[MemoryItem]:
            keyword = early if early is not None else self._keyword_sync(conn, bank, query, terms, k)
            kw_score = {seq: score for seq, score, _ in keyword}
            stamps: dict[int, datetime] = {seq: ts for seq, _, ts in keyword}
            fused: dict[int, float] = {}
            for arm in ([(seq, score) for seq, score, _ in keyword], semantic):
                for rank, (seq, _) in enumerate(arm, start=1):
                    fused[seq] = fused.get(seq, 0.0) + 1.0 / (RRF_K + rank)
            if not fused:
                return []
            # Only vector-arm candidates the keyword arm did not return still need their ts read.
            missing = [seq for seq in fused if seq not in stamps]
            for chunk in _chunks(missing):
                stamps.update(
                    (r[0], r[1]) for r in conn.execute(select(M.c.seq, M.c.ts).where(M.c.seq.in_(chunk)))
                )
            scored: list[tuple[float, datetime, int, MemoryScores]] = []
            for seq, ts in stamps.items():
                boost = recency_factor(
                    ts,
                    reference,
                    weight=self.config.recency_weight,
                    half_life_days=self.config.recency_half_life_days,
                )
                final = fused[seq] * boost
                scores = MemoryScores(
                    final=final, keyword=kw_score.get(seq), semantic=sem_score.get(seq), recency=boost
                )
                scored.append((final, ts, seq, scores))
            scored.sort(key=lambda s: (s[0], s[1], s[2]), reverse=True)
            top = scored[: query.limit]
            # The whole rows (JSON data) are read for the winners alone.
            rows = {r.seq: r for r in conn.execute(select(M).where(M.c.seq.in_([s[2] for s in top])))}
            return [_to_item(rows[seq], scores) for _, _, seq, scores in top if seq in rows]

        return await self._read(load)

    async def recall_many(self, bank: str, queries: Sequence[MemoryQuery]) -> list[list[MemoryItem]]:
        """``[recall(bank, q) for q in queries]`` with one SQL query per group of text-free queries that
        differ only by symbol (the recall stage's "newest N of each symbol"): a ``row_number()`` window
        partitioned by symbol keeps each symbol's N newest, where one recall per symbol cost ~1.5 ms
        each. Queries with text or without a symbol are ranked one by one, as ``recall`` does."""
        out: list[list[MemoryItem] | None] = [None] * len(queries)
        groups: dict[str, list[int]] = {}
        for index, query in enumerate(queries):
            if query.symbol and not query_terms(query.q):
                key = query.model_copy(update={"symbol": None, "q": None}).model_dump_json()
                groups.setdefault(key, []).append(index)
        for indexes in groups.values():
            found = await self._latest_by_symbol(
                bank, queries[indexes[0]], [queries[i].symbol for i in indexes]
            )
            for i in indexes:
                out[i] = list(found.get(queries[i].symbol or "", []))
        for index, query in enumerate(queries):
            if out[index] is None:
                out[index] = await self.recall(bank, query)
        return [items or [] for items in out]

    async def _latest_by_symbol(
        self, bank: str, template: MemoryQuery, symbols: Sequence[str | None]
    ) -> dict[str, list[MemoryItem]]:
        """The ``template.limit`` newest memories of each symbol matching the template's other filters,
        newest first (same order and recency score as ``recall`` without text)."""
        conds = self._filters(bank, template.model_copy(update={"symbol": None}))
        reference = template.to or self._clock()
        wanted = sorted({s for s in symbols if s})

        def read(conn: Connection) -> dict[str, list[MemoryItem]]:
            found: dict[str, list[MemoryItem]] = {}
            for chunk in _chunks(wanted):
                newest = func.row_number().over(
                    partition_by=M.c.symbol, order_by=(M.c.ts.desc(), M.c.seq.desc())
                )
                ranked = select(M, newest.label("rn")).where(*conds, M.c.symbol.in_(chunk)).subquery()
                stmt = (
                    select(ranked).where(ranked.c.rn <= template.limit).order_by(ranked.c.symbol, ranked.c.rn)
                )
                for r in conn.execute(stmt):
                    boost = recency_factor(
                        r.ts,
                        reference,
                        weight=self.config.recency_weight,
                        half_life_days=self.config.recency_half_life_days,
                    )
                    found.setdefault(r.symbol, []).append(
                        _to_item(r, MemoryScores(final=boost, recency=boost))
                    )
            return found

        return await self._read(read)

    async def _semantic(
        self, bank: str, query: MemoryQuery, conds: list[ColumnElement[bool]], k: int
    ) -> list[tuple[int, float]]:
        """The vector arm: (seq, cosine) of the ``k`` best memories passing the query's filters.

        One cheap read (the bank's revision and model) checks the in-process index is current, while the
        query is embedded; the search is then numpy over the index, filters applied as masks with the
        same meaning as ``conds`` (which the keyword arm runs as SQL)."""
        assert self.embedder is not None
        index, vector = await asyncio.gather(self._fresh_index(bank), self._query_vector(query.q or ""))
        if index is None or len(index) == 0:
            return []
        where = VectorFilter(
            symbol=query.symbol,
            types=tuple(query.types or ()),
            from_=query.from_,
            to=query.to,
            tags=tuple(query.tags),
        )
        if len(index) * index.dim < SEARCH_THREAD_FLOATS:
            return index.search(vector, k, where)
        return await asyncio.to_thread(index.search, vector, k, where)

    async def _query_vector(self, q: str) -> npt.NDArray[np.float32]:
        """The query's vector, from a small LRU: the pipeline and the service repeat query texts."""
        cached = self._query_vectors.get(q)
        if cached is not None:
            self._query_vectors.move_to_end(q)
            return cached
        vectors = await self._embed([q])
        assert vectors is not None
        vector = np.ascontiguousarray(vectors[0], dtype=np.float32)
        vector.setflags(write=False)
        self._query_vectors[q] = vector
        while len(self._query_vectors) > QUERY_VECTOR_CACHE:
            self._query_vectors.popitem(last=False)
        return vector

    async def _fresh_index(self, bank: str) -> BankVectors | None:
        """The bank's index as of its current revision (None: no such bank). Loaded on first use; after a
        write by another backend or process (the revision moved without this one's index following),
        memories without vectors are embedded and the difference is read."""

        def state(conn: Connection) -> tuple[int, str | None] | None:
            row = conn.execute(select(B.c.revision, B.c.embedding_model).where(B.c.name == bank)).first()
            return (int(row[0]), row[1]) if row is not None else None

        current = await self._read(state)
        if current is None:
            return None
        self._check_model(bank, current[1])
        index = self._vectors.get(bank)
        if index is not None and index.revision == current[0]:
            return index
        async with self._cache_lock:
            index = self._vectors.get(bank)
            if index is not None and index.revision >= current[0]:
                return index
            if self._clean_revision.get(bank) != current[0]:
                # Memories retained while semantic was off get their vectors before they are searched.
                await self._backfill(bank)
            return await self._reload(bank)

    async def _reload(self, bank: str) -> BankVectors | None:
        """Bring the bank's index to the database's state: every row on first load, else only the rows
        it does not hold, plus which rows are gone or (un)invalidated. Caller holds ``_cache_lock``."""
        assert self.embedder is not None
        dim = self.embedder.dim
        index = self._vectors.get(bank)
        known = index.hashes() if index is not None else {}

        def read(
            conn: Connection,
        ) -> tuple[tuple[int, str | None] | None, list[tuple[int, bool]], list[VectorRow]]:
            # The revision first: rows read after it are at least that new, so the index is never
            # labelled newer than its contents (a write in between only causes one more reload).
            row = conn.execute(select(B.c.revision, B.c.embedding_model).where(B.c.name == bank)).first()
            if row is None:
                return None, [], []
            state = (int(row[0]), row[1])
            with_vector = (M.c.bank == bank, M.c.embedding.is_not(None))
            if not known:
                rows = self._vector_rows(conn, *with_vector)
                return state, [(r.seq, r.invalidated) for r in rows], rows
            listed = conn.execute(
                select(M.c.seq, M.c.invalidated_at.is_not(None), M.c.content_hash).where(*with_vector)
            ).all()
            present = [(int(r[0]), bool(r[1])) for r in listed]
            fresh = [int(r[0]) for r in listed if known.get(int(r[0])) != r[2]]
            rows = []
            for chunk in _chunks(fresh):
                rows.extend(self._vector_rows(conn, *with_vector, M.c.seq.in_(chunk)))
            return state, present, rows

        state, present, rows = await self._read(read)
        if state is None:
            return None
        revision, model = state
        self._check_model(bank, model)
        if index is None or index.model not in (None, model):
            index = BankVectors(dim, model=model)
            self._vectors[bank] = index
        seen = {seq for seq, _ in present}
        index.remove(set(known) - seen)
        index.add(rows)
        invalid = {seq for seq, flag in present if flag}
        already = index.invalidated()
        index.set_invalidated(invalid - already, True)
        index.set_invalidated(already - invalid, False)
        index.revision, index.model = revision, model
        return index

    def _vector_rows(self, conn: Connection, *conds: ColumnElement[bool]) -> list[VectorRow]:
        stmt = select(
            M.c.seq,
            M.c.id,
            M.c.content_hash,
            M.c.ts,
            M.c.type,
            M.c.symbol,
            M.c.tags,
            M.c.invalidated_at,
            M.c.embedding,
        ).where(*conds)
        return [
            VectorRow(
                seq=int(r.seq),
                id=r.id,
                content_hash=r.content_hash,
                ts=r.ts,
                type=r.type,
                symbol=r.symbol,
                tags=tuple(r.tags),
                invalidated=r.invalidated_at is not None,
                vector=np.frombuffer(r.embedding, dtype=np.float32),
            )
            for r in conn.execute(stmt.order_by(M.c.seq))
        ]

    @staticmethod
    def _revision_in(conn: Connection, bank: str) -> int | None:
        value = conn.execute(select(B.c.revision).where(B.c.name == bank)).scalar()
        return int(value) if value is not None else None

    def _retained_change(
        self, conn: Connection, bank: str, before: int | None, ids: Sequence[str]
    ) -> _BankChange:
        """Inside a retain's transaction: its revision step and, when this backend's index of the bank is
        at the revision the write started from, the rows of ``ids`` as now stored (to add in place)."""
        after = self._revision_in(conn, bank)
        index = self._vectors.get(bank)
        if before is None or after != before + 1 or index is None or index.revision != before:
            return _BankChange(before, after, complete=after == before)
        rows: list[VectorRow] = []
        for chunk in _chunks(sorted(set(ids))):
            rows.extend(
                self._vector_rows(conn, M.c.bank == bank, M.c.id.in_(chunk), M.c.embedding.is_not(None))
            )
        return _BankChange(before, after, rows, complete=True)

    async def _after_write(self, bank: str, change: _BankChange) -> None:
        """Apply a write of this backend to its index in place, when nothing else wrote the bank in
        between (otherwise the next recall sees the revision moved and reloads)."""
        stepped = change.before is not None and change.after in (change.before, change.before + 1)
        async with self._cache_lock:
            index = self._vectors.get(bank)
            if stepped and change.complete and index is not None and index.revision == change.before:
                if change.invalidated is not None:
                    index.set_invalidated_ids(change.ids, change.invalidated)
                else:
                    index.add(change.rows)
                assert change.after is not None
                index.revision = change.after
        if stepped and self._clean_revision.get(bank) == change.before:
            # This write stored vectors for what it added: the bank is still fully embedded.
            assert change.after is not None
            self._clean_revision[bank] = change.after
        elif change.invalidated is None and self.embedder is not None:
            await self._backfill(bank)

    # ------------------------------------------------------------------ reflect, invalidate, banks

    async def reflect(self, bank: str, params: ReflectionParams) -> list[MemoryItem]:
        now = self._clock()
        start = now - timedelta(days=params.window_days)

        def window(conn: Connection) -> list[MemoryItem]:
            rows = conn.execute(
                select(M)
                .where(M.c.bank == bank, M.c.invalidated_at.is_(None), M.c.ts >= start, M.c.ts <= now)
                .order_by(M.c.ts.desc())
                .limit(REFLECT_MAX_ITEMS)
            ).all()
            return [_to_item(r, None) for r in rows]

        return reflect_items(await self._read(window), params, now)

    async def _set_state(self, bank: str, memory_id: str, when: datetime | None, reason: str | None) -> None:
        def apply(conn: Connection) -> tuple[int, _BankChange]:
            before = self._revision_in(conn, bank)
            result = conn.execute(
                update(M)
                .where(M.c.bank == bank, M.c.id == memory_id)
                .values(invalidated_at=when, invalidation_reason=reason)
            )
            count = int(result.rowcount or 0)
            if count:
                # Vector indexes (this process's and others') follow invalidation by the revision too.
                conn.execute(update(B).where(B.c.name == bank).values(revision=B.c.revision + 1))
            change = _BankChange(
                before,
                self._revision_in(conn, bank),
                complete=True,
                invalidated=when is not None,
                ids=(memory_id,),
            )
            return count, change

        count, change = await self._write(apply)
        if count == 0:
            raise MemoryNotFoundError(bank, memory_id)
        await self._after_write(bank, change)

    async def invalidate(self, bank: str, memory_id: str, reason: str | None = None) -> None:
        await self._set_state(bank, memory_id, self._clock(), reason)

    async def restore(self, bank: str, memory_id: str) -> None:
        await self._set_state(bank, memory_id, None, None)

    async def banks(self) -> list[str]:
        def read(conn: Connection) -> list[str]:
            stmt = select(M.c.bank).distinct().order_by(M.c.bank)
            return [r[0] for r in conn.execute(stmt)]

        return await self._read(read)

    async def health(self) -> MemoryHealth:
        model = self.embedder.model_name if self.embedder is not None else None
        try:
            await self._read(lambda conn: conn.execute(select(func.count()).select_from(B)).scalar())
        except MemoryUnavailableError as exc:
            return MemoryHealth(ok=False, backend=self.name, detail=str(exc), embedding_model=model)
        return MemoryHealth(ok=True, backend=self.name, detail=self.db.dialect, embedding_model=model)

    async def close(self) -> None:
        self._vectors.clear()
        self._clean_revision.clear()
        self._query_vectors.clear()
        if self._owns_database:
            await self.db.close()


def _analyze_pg(conn: Connection) -> None:
    conn.execute(_PG_ANALYZE_MEMORIES)
    conn.execute(_PG_ANALYZE_TAGS)


def _clean_gin_pending(conn: Connection) -> None:
    conn.execute(_PG_CLEAN_GIN)


def _chunks(values: Sequence[Any] | list[Any]) -> Iterable[list[Any]]:
    seq = list(values)
    for start in range(0, len(seq), _IN_CHUNK):
        yield seq[start : start + _IN_CHUNK]


def _to_item(r: Any, scores: MemoryScores | None) -> MemoryItem:
    return MemoryItem(
        id=r.id,
        ts=r.ts,
        type=r.type,
        symbol=r.symbol,
        tags=list(r.tags),
        summary=r.summary,
        data=dict(r.data),
        source=MemorySource(system=r.source_system, ref=r.source_ref),
        document_id=r.document_id,
        score=scores.final if scores else None,
        scores=scores,
    )


async def open_backend(settings: Settings, *, database: Database | None = None) -> EmbeddedBackend:
    """The embedded backend on ``database`` (shared) or on the configured one (owned: closed on close)."""
    embedder: Embedder | None = None
    if settings.memory.semantic:
        from jax_assistant.memory.semantic import load_embedder

        embedder = await asyncio.to_thread(load_embedder)
    if database is not None:
        return EmbeddedBackend(database, settings.memory, embedder=embedder)
    from jax_assistant.storage.db import open_database

    try:
        db = await open_database(settings.database_url)
    except (OSError, OperationalError, InterfaceError) as exc:
        raise MemoryUnavailableError(f"memory store unavailable: {exc}") from exc
    return EmbeddedBackend(db, settings.memory, embedder=embedder, owns_database=True)
