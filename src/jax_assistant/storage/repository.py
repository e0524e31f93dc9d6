"""Persistence of runs, checkpoints, events, trades, audit records and dead letters.

Every public write runs in a single transaction and is idempotent: inserts use the dialect's
``ON CONFLICT DO NOTHING`` (or ``DO UPDATE`` for upserts), so a retried or replayed call leaves the
same rows behind. Conversion between domain models and rows lives here and nowhere else: JSON
columns hold ``model_dump(mode="json")`` output (snake_case field names), timestamps are native
columns.

Events and trades (setups) are stored once, keyed by their own ids, and shared by every run that
produced them; the first write wins (``first_run_id`` records which run that was). The risk decision
is per run: ``decisions`` holds, for each (run, setup), the whole RiskResult that run computed, and a
run's results are always read back with its own decisions.

Hot-path writes use one cached statement per table and kind (``executemany`` with the same SQL text
every time), so SQLAlchemy compiles each once per process instead of once per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict
from pydantic_core import to_json
from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    Connection,
    Executable,
    Text,
    and_,
    cast,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler

from jax_assistant.domain import (
    AuditEvent,
    AuditOutcome,
    Event,
    Run,
    RunStatus,
    StageResult,
    StageStatus,
    SymbolResult,
    TradeRecord,
    utc_now,
)
from jax_assistant.storage.db import Database, EncodedJson, encode_json, encode_json_string
from jax_assistant.storage.tables import (
    AuditEventRow,
    Base,
    DeadLetterRow,
    DecisionRow,
    EventRow,
    RunRow,
    StageCheckpointRow,
    SymbolResultRow,
    TradeOutcomeRow,
    TradeRow,
    UTCDateTime,
)

DeadLetterStatus = Literal["open", "retried", "resolved"]
_DEAD_LETTER_STATUSES: Final = frozenset(get_args(DeadLetterStatus))

# Ids per IN (...) list: keeps bound parameters well under PostgreSQL's 32767 and SQLite's 32766.
_CHUNK: Final = 500

_T = TypeVar("_T")
_CHECKPOINT_KEY: Final = ("run_id", "symbol", "stage")
_SYMBOL_RESULT_KEY: Final = ("run_id", "symbol")
_DECISION_KEY: Final = ("run_id", "setup_id")
if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql

    _Insert = postgresql.Insert | sqlite.Insert


# A checkpoint item holding this key is a delta: only the fields that changed since the checkpoint of
# the same symbol at that seq (the engine writes those; ``load_checkpoints`` applies them).
CHECKPOINT_DELTA_OF = "delta_of"
# A delta's trades as references (``_trades_from_refs``): most of a trade is its setup and event, which
# the item holds already (written by the engine when every trade holds the item's own setup objects).
CHECKPOINT_TRADES_REF = "trades_ref"


_DELTA_KEYS: Final = frozenset({CHECKPOINT_DELTA_OF, CHECKPOINT_TRADES_REF})


def _trades_from_refs(refs: Sequence[Sequence[Any]], item: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A delta's trades from their references, each ``[setup, risk, event, created_at]``: the item's
    setup (event) at that position (an event ``None``: no event), the decision and time as they are."""
    setups, events = item.get("setups") or [], item.get("events") or []
    return [
        {
            "setup": setups[setup],
            "risk": risk,
            "event": None if event is None else events[event],
            "created_at": created_at,
        }
        for setup, risk, event, created_at in refs
    ]


class CheckpointRow(BaseModel):
    """One stage checkpoint: the stage's result and the WorkItem (as JSON) after it."""

    model_config = ConfigDict(frozen=True)

    stage: str
    seq: int
    status: StageStatus
    result: StageResult
    item: dict[str, Any]


class DeadLetter(BaseModel):
    """A symbol that exhausted its retries in a run, kept with its input so it can be retried."""

    model_config = ConfigDict(frozen=True)

    id: int
    run_id: str
    symbol: str
    stage: str
    error: str
    attempts: int
    item: dict[str, Any]
    status: DeadLetterStatus
    created_at: datetime
    retried_by_run_id: str | None = None


def _chunks(items: Sequence[_T], size: int = _CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _unique_by_id(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    # One row per id (a batch naming an id twice is pointless work), in id order: concurrent
    # batches that overlap then take their row locks in the same order and cannot deadlock.
    by_id = {row["id"]: row for row in rows}
    return [by_id[key] for key in sorted(by_id)]


def _as_json(item: BaseModel | Mapping[str, Any] | str) -> EncodedJson:
    """``item`` encoded once, straight to JSON text (the same values ``model_dump(mode="json")`` /
    ``to_jsonable_python`` would give, NaN and Infinity as null): no intermediate copy, and the
    column stores the text as it is (see ``EncodedJson``). A ``str`` is JSON text already (the
    engine's item snapshot) and is stored unchanged."""
    if isinstance(item, str):
        return EncodedJson(item)
    if isinstance(item, BaseModel):
        return EncodedJson(item.model_dump_json())
    return EncodedJson(to_json(dict(item), by_alias=False, inf_nan_mode="null").decode())


# --------------------------------------------------------------------------- domain <-> rows


class _RunIdTakenError(Exception):
    """Rolls back an accept's transaction whose run id already exists (create_run_audited)."""


def _new_run_values(
    run: Run, lease_owner: str | None, lease_ttl_s: float | None, run_json: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A new run's row; with ``lease_owner`` born leased to it for ``lease_ttl_s`` seconds."""
    values = _run_values(run, run_json)
    if lease_owner is not None:
        now = utc_now()
        values |= {
            "lease_owner": lease_owner,
            "lease_expires_at": now + timedelta(seconds=lease_ttl_s or 0.0),
            "heartbeat_at": now,
        }
    return values


def _run_values(run: Run, run_json: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's row; ``run_json`` is ``run.model_dump(mode="json")`` when the caller has it already
    (an accept dumps the run once for its row and its executor message: ~5 % of its GIL-held time)."""
    data = run_json if run_json is not None else run.model_dump(mode="json")
    return {
        "id": run.id,
        "status": run.status.value,
        "correlation_id": run.correlation_id,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "as_of": run.as_of,
        "provider": run.provider,
        "simulated": run.simulated,
        "symbols": data["symbols"],
        "pipeline": data["pipeline"],
        "params": data["params"],
        "counts": data["counts"],
    }


def _run_from_row(row: RunRow, now: datetime | None = None) -> Run:
    return Run(
        id=row.id,
        status=_effective_status(row.status, row.lease_expires_at, now or utc_now()),
        correlation_id=row.correlation_id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        as_of=row.as_of,
        provider=row.provider,
        simulated=row.simulated,
        symbols=row.symbols,
        pipeline=row.pipeline,
        params=row.params,
        counts=row.counts,
    )


def _effective_status(status: str, lease_expires_at: datetime | None, now: datetime) -> RunStatus:
    """``running`` with no live lease is ``interrupted``: whoever executed it is gone."""
    if status == RunStatus.RUNNING.value and (lease_expires_at is None or lease_expires_at <= now):
        return RunStatus.INTERRUPTED
    return RunStatus(status)


def _lease_free(owner: str, now: datetime) -> ColumnElement[bool]:
    """The run's lease may be taken by ``owner``: nobody holds it, it expired, or ``owner`` has it."""
    return or_(RunRow.lease_owner.is_(None), RunRow.lease_expires_at <= now, RunRow.lease_owner == owner)


def _event_values(event: Event, run_id: str | None, simulated: bool) -> dict[str, Any]:
    return {
        "id": event.id,
        "symbol": event.symbol,
        "type": event.type,
        "time": event.time,
        "payload": event.model_dump(mode="json")["payload"],
        "first_run_id": run_id,
        "simulated": simulated,
    }


def _event_from_row(row: EventRow) -> Event:
    return Event(id=row.id, symbol=row.symbol, type=row.type, time=row.time, payload=row.payload)


def _risk_json(record: TradeRecord) -> EncodedJson:
    """The decision's JSON text, exactly as the column would encode it (``json.dumps`` of the
    ``model_dump``): computed once per record and stored in both ``trades.risk`` and
    ``decisions.risk``, byte for byte what encoding each separately gave."""
    return EncodedJson(encode_json(record.risk.model_dump(mode="json")))


def _trade_values(
    record: TradeRecord, run_id: str | None, simulated: bool, risk: EncodedJson | None = None
) -> dict[str, Any]:
    setup = record.setup
    return {
        "id": setup.id,
        "symbol": setup.symbol,
        "strategy_id": setup.strategy_id,
        "direction": setup.direction.value,
        "event_id": setup.event_id or (record.event.id if record.event is not None else None),
        "allowed": record.risk.allowed,
        "position_size": record.risk.position_size,
        "setup": setup.model_dump(mode="json"),
        "risk": risk if risk is not None else record.risk.model_dump(mode="json"),
        "event": record.event.model_dump(mode="json") if record.event is not None else None,
        "created_at": record.created_at,
        "first_run_id": run_id,
        "simulated": simulated,
    }


def _decision_values(record: TradeRecord, run_id: str, risk_json: EncodedJson) -> dict[str, Any]:
    risk = record.risk
    return {
        "run_id": run_id,
        "setup_id": record.setup.id,
        "symbol": record.setup.symbol,
        "strategy_id": record.setup.strategy_id,
        "allowed": risk.allowed,
        "position_size": risk.position_size,
        "account_size": risk.account_size,
        "risk_percent": risk.risk_percent,
        # The whole RiskResult, so fields added to it later are stored without a schema change. No
        # wall clock inside: the same inputs give byte-identical payloads at any concurrency.
        "risk": risk_json,
        # TradeRecord.created_at is when this run made the record (wall clock): its own column.
        "decided_at": record.created_at,
    }


def _trade_from_row(row: TradeRow, decision: DecisionRow | None = None) -> TradeRecord:
    """The setup as stored once, with ``decision``'s sizing when given (else the first run's)."""
    return TradeRecord.model_validate(
        {
            "setup": row.setup,
            "risk": decision.risk if decision is not None else row.risk,
            "event": row.event,
            "created_at": decision.decided_at if decision is not None else row.created_at,
        }
    )


def _audit_from_row(row: AuditEventRow) -> AuditEvent:
    return AuditEvent.model_validate(
        {
            "id": row.id,
            "correlation_id": row.correlation_id,
            "action": row.action,
            "outcome": row.outcome,
            "timestamp": row.timestamp,
            "payload": row.payload,
            "error": row.error,
        }
    )


def _dead_letter_from_row(row: DeadLetterRow) -> DeadLetter:
    return DeadLetter.model_validate(
        {
            "id": row.id,
            "run_id": row.run_id,
            "symbol": row.symbol,
            "stage": row.stage,
            "error": row.error,
            "attempts": row.attempts,
            "item": row.input,
            "status": row.status,
            "created_at": row.created_at,
            "retried_by_run_id": row.retried_by_run_id,
        }
    )


# --------------------------------------------------------------------------- batched writes


@dataclass(frozen=True)
class CheckpointWrite:
    run_id: str
    symbol: str
    seq: int
    result: StageResult
    item: BaseModel | Mapping[str, Any] | str  # str: JSON text (see _as_json)


@dataclass(frozen=True)
class AuditWrite:
    event: AuditEvent
    idempotency_key: str
    run_id: str | None = None
    symbol: str | None = None


def _audit_row(
    *,
    id: str,
    idempotency_key: str,
    correlation_id: str,
    run_id: str | None,
    symbol: str | None,
    action: str,
    outcome: str,
    timestamp: datetime,
    payload: dict[str, Any],
    error: str | None,
) -> dict[str, Any]:
    """An ``audit_events`` row: the one place its columns are named (``_audit_values``, ``AuditRowWrite``)."""
    return {
        "id": id,
        "idempotency_key": idempotency_key,
        "correlation_id": correlation_id,
        "run_id": run_id,
        "symbol": symbol,
        "action": action,
        "outcome": outcome,
        "timestamp": timestamp,
        "payload": payload,
        "error": error,
    }


@dataclass(frozen=True, slots=True)
class AuditRowWrite:
    """An audit row given as its column values, ``payload`` holding JSON values only. The engine writes
    one per stage: building an ``AuditEvent`` only to dump it again cost more than the rest of the row."""

    values: dict[str, Any]

    @classmethod
    def of(
        cls,
        *,
        id: str,
        idempotency_key: str,
        correlation_id: str,
        run_id: str,
        symbol: str,
        action: str,
        outcome: AuditOutcome,
        payload: dict[str, Any],
        error: str | None,
    ) -> AuditRowWrite:
        """The row of an audit event stamped now (what ``AuditEvent`` would validate and dump)."""
        return cls(
            _audit_row(
                id=id,
                idempotency_key=idempotency_key,
                correlation_id=correlation_id,
                run_id=run_id,
                symbol=symbol,
                action=action,
                outcome=outcome,
                timestamp=utc_now(),
                payload=payload,
                error=error,
            )
        )


@dataclass(frozen=True)
class SymbolResultWrite:
    result: SymbolResult
    # False when the same events and decisions were already written (by the persist stage, through
    # the same writer): the result row alone then goes out, not every record a second time.
    records: bool = True


@dataclass(frozen=True)
class DeadLetterWrite:
    run_id: str
    symbol: str
    stage: str
    error: str
    attempts: int
    item: BaseModel | Mapping[str, Any] | str  # str: JSON text (see _as_json)


@dataclass(frozen=True)
class RecordsWrite:
    """A run's events, setups and its own risk decisions on them (what the persist stage stores)."""

    run_id: str
    events: Sequence[Event]
    trades: Sequence[TradeRecord]


WriteOp = CheckpointWrite | AuditWrite | AuditRowWrite | SymbolResultWrite | DeadLetterWrite | RecordsWrite


def _checkpoint_values(op: CheckpointWrite) -> dict[str, Any]:
    return {
        "run_id": op.run_id,
        "symbol": op.symbol,
        "stage": op.result.stage,
        "seq": op.seq,
        "status": op.result.status.value,
        "result": _stage_result_json(op.result),
        "item": _as_json(op.item),
        "created_at": utc_now(),
    }


def _json_text(value: str | None) -> str:
    return "null" if value is None else encode_json_string(value)


def _stage_result_json(result: StageResult) -> dict[str, Any] | EncodedJson:
    """``result.model_dump(mode="json")``, or for the results the engine makes (exact field types,
    an aware UTC start, a finite duration) the very text ``encode_json`` would give that dump, built
    directly: one checkpoint a stage, and the dump and its encoding were most of the row's cost."""
    started, duration, attempts = result.started_at, result.duration_ms, result.attempts
    error, reason = result.error, result.reason
    if (
        type(result) is not StageResult
        or type(result.stage) is not str
        or type(result.status) is not StageStatus
        or type(started) is not datetime
        or started.tzinfo is not UTC
        or type(duration) is not float
        or not math.isfinite(duration)
        or type(attempts) is not int
        or not (error is None or type(error) is str)
        or not (reason is None or type(reason) is str)
    ):
        return result.model_dump(mode="json")
    # pydantic's JSON datetime is the ISO form with "Z" for "+00:00"; json renders floats and ints
    # by their repr, strings ASCII-escaped.
    return EncodedJson(
        f'{{"stage": {_json_text(result.stage)}, "status": {_json_text(result.status.value)}, '
        f'"started_at": "{started.isoformat()[:-6]}Z", "duration_ms": {float.__repr__(duration)}, '
        f'"attempts": {int.__repr__(attempts)}, "error": {_json_text(error)}, '
        f'"reason": {_json_text(reason)}}}'
    )


def _audit_values(op: AuditWrite) -> dict[str, Any]:
    event = op.event
    return _audit_row(
        id=event.id,
        idempotency_key=op.idempotency_key,
        correlation_id=event.correlation_id,
        run_id=op.run_id,
        symbol=op.symbol,
        action=event.action,
        outcome=event.outcome,
        timestamp=event.timestamp,
        payload=event.model_dump(mode="json")["payload"],
        error=event.error,
    )


def _dead_letter_values(op: DeadLetterWrite) -> dict[str, Any]:
    return {
        "run_id": op.run_id,
        "symbol": op.symbol,
        "stage": op.stage,
        "error": op.error,
        "attempts": op.attempts,
        "input": _as_json(op.item),
        "status": "open",
        "created_at": utc_now(),
    }


def _symbol_result_values(result: SymbolResult) -> dict[str, Any]:
    # The stages as the checkpoints encode them (a JSON array is its elements' texts joined by ", "),
    # unless one of them is not the engine's kind of result.
    dumps = [_stage_result_json(r) for r in result.stages]
    texts = [t for t in dumps if isinstance(t, EncodedJson)]
    stages: Any
    if len(texts) == len(dumps):
        stages = EncodedJson("[" + ", ".join(texts) + "]")
        data = result.model_dump(mode="json", include={"data_issues", "extras"})
    else:
        data = result.model_dump(mode="json", include={"stages", "data_issues", "extras"})
        stages = data["stages"]
    return {
        "run_id": result.run_id,
        "symbol": result.symbol,
        "status": result.status.value,
        "error": result.error,
        "data_issues": data["data_issues"],
        "stages": stages,
        "event_ids": [e.id for e in result.events],
        "trade_ids": [t.setup.id for t in result.trades],
        "extras": data["extras"],
        "updated_at": utc_now(),
    }


@dataclass(frozen=True, slots=True)
class _DriverForm:
    sql: str
    # The positional parameters: row key and its bind processor (None: bound as it is).
    order: tuple[tuple[str, Callable[[Any], Any] | None], ...]


def _driver_form(conn: Connection, stmt: Executable, keys: Sequence[str]) -> _DriverForm | None:
    """The statement as SQLAlchemy compiles it for an executemany of rows with ``keys``, if every
    parameter is one of the row's values as it is or through its type's bind processor."""
    if not isinstance(stmt, ClauseElement):
        return None
    compiled = stmt.compile(dialect=conn.dialect, column_keys=sorted(keys), for_executemany=True)
    positions = compiled.positiontup if isinstance(compiled, SQLCompiler) else None
    if (
        not isinstance(compiled, SQLCompiler)
        or positions is None
        or len(positions) != len(keys)
        or set(positions) != set(keys)
        or compiled.insert_prefetch
        or compiled.update_prefetch
        or compiled.post_compile_params
        or compiled.literal_execute_params
        or compiled.escaped_bind_names
    ):
        return None
    order: list[tuple[str, Callable[[Any], Any] | None]] = []
    for k in positions:
        given = compiled._bind_processors.get(k)
        if given is not None and not callable(given):  # a tuple type's processors
            return None
        processor: Callable[[Any], Any] | None = given
        if processor is not None and conn.dialect.name == "sqlite":
            bind = compiled.binds.get(k)
            if bind is not None and isinstance(bind.type, UTCDateTime):
                processor = _sqlite_utc_text(processor)
        order.append((k, processor))
    return _DriverForm(compiled.string, tuple(order))


def _sqlite_utc_text(processor: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``processor`` (UTCDateTime on SQLite: naive UTC, then SQLAlchemy's DATETIME text) with a
    shortcut for the values the engine writes, aware UTC datetimes: the same text in a third of the
    time (two rows a stage each carry one)."""

    def process(value: Any) -> Any:
        if type(value) is datetime and value.tzinfo is UTC:
            # "YYYY-MM-DD HH:MM:SS.ffffff" and its "+00:00" cut: SQLAlchemy's storage format.
            return value.isoformat(" ", "microseconds")[:-6]
        return processor(value)

    return process


def _last_by(rows: Iterable[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per key, the last one offered (one multi-row upsert may not touch a row twice)."""
    out: dict[Any, dict[str, Any]] = {}
    # itemgetter: the key tuple in C (a generator per row was most of this); one key gives the value
    # itself, which sorts as its 1-tuple would.
    key = itemgetter(*keys)
    for row in rows:
        out[key(row)] = row
    return [out[k] for k in sorted(out)]


# --------------------------------------------------------------------------- repository


@dataclass(frozen=True)
class PruneReport:
    """What ``Repository.prune`` removed, per table."""

    runs: int = 0
    symbol_results: int = 0
    stage_checkpoints: int = 0
    decisions: int = 0
    dead_letters: int = 0
    audit_events: int = 0
    trades: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "runs": self.runs,
            "symbolResults": self.symbol_results,
            "stageCheckpoints": self.stage_checkpoints,
            "decisions": self.decisions,
            "deadLetters": self.dead_letters,
            "auditEvents": self.audit_events,
            "trades": self.trades,
        }


class Repository:
    """Async, idempotent storage of the orchestrator's domain objects (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        if db.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database dialect {db.dialect!r}")
        self._db = db
        self._statements: dict[tuple[str, str], Executable] = {}
        # (statement, row keys) -> its driver form (see _execute_many); None: not eligible. Keyed by
        # the statement object (held here), not its id(), which a freed statement's successor may reuse.
        self._driver_forms: dict[tuple[Executable, tuple[str, ...]], _DriverForm | None] = {}
        # Run id -> simulated flag; it never changes, so each batch need not read it again.
        self._simulated: dict[str, bool] = {}

    # ------------------------------------------------------------------ helpers

    def _insert(self, entity: type[Base]) -> _Insert:
        # ON CONFLICT is dialect-specific SQL; both dialects expose the same builder API.
        if self._db.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql  # ~35 ms of import a SQLite run does not need

            return postgresql.insert(entity)
        return sqlite.insert(entity)

    def _ignore_stmt(self, entity: type[Base]) -> Executable:
        key = (entity.__tablename__, "ignore")
        stmt = self._statements.get(key)
        if stmt is None:
            stmt = self._statements[key] = self._insert(entity).on_conflict_do_nothing()
        return stmt

    def _upsert_stmt(self, entity: type[Base], keys: Sequence[str], columns: Sequence[str]) -> Executable:
        key = (entity.__tablename__, "upsert:" + ",".join(columns))
        stmt = self._statements.get(key)
        if stmt is None:
            ins = self._insert(entity)
            stmt = self._statements[key] = ins.on_conflict_do_update(
                index_elements=list(keys),
                set_={name: ins.excluded[name] for name in columns if name not in keys},
            )
        return stmt

    async def _insert_ignore(
        self, conn: AsyncConnection, entity: type[Base], rows: Sequence[dict[str, Any]]
    ) -> None:
        """Insert rows, skipping those whose primary key or unique keys already exist.

        One cached statement run as ``executemany``: the same SQL text each time, so it is compiled
        once; the driver loops over the parameter sets in a single call.
        """
        if rows:
            await conn.execute(self._ignore_stmt(entity), list(rows))

    async def _insert_ignore_counted(
        self, conn: AsyncConnection, entity: type[Base], rows: Sequence[dict[str, Any]]
    ) -> int:
        """As ``_insert_ignore``, returning how many rows were new (executemany rowcounts are not
        reliable on every driver, so this runs one statement per row; only off the hot path)."""
        inserted = 0
        stmt = self._ignore_stmt(entity)
        for row in rows:
            result = await conn.execute(stmt, row)
            inserted += max(result.rowcount, 0)
        return inserted

    async def _insert_one_urgent(self, entity: type[Base], values: dict[str, Any]) -> bool:
        """Insert one row unless it exists (True if new), ahead of queued run batches on a SQLite file:
        request-path writes (run creation, its audit row) must not wait behind running runs' writes,
        which go through the same writer thread (``Database.run_write``)."""
        if self._db.sync_writer is not None:
            stmt = self._ignore_stmt(entity)
            # group: request-path inserts waiting together share one commit (Database.run_write).
            return await self._db.run_write(
                lambda conn: conn.execute(stmt, values).rowcount == 1, urgent=True, group=True
            )
        async with self._db.transaction() as conn:
            return await self._insert_ignore_counted(conn, entity, [values]) == 1

    async def _write(self, fn: Callable[[Connection], _T], *, urgent: bool = False) -> _T:
        """``fn(conn)`` in one write transaction. On a SQLite file it runs on the one writer thread
        (``Database.run_write``), queued with the runs' group commits: a second stream of
        transactions on the aiosqlite connection would contend with them for SQLite's write lock,
        each side sleeping in ``busy_timeout`` while the other holds it. ``urgent``: ahead of queued
        batches (a lease heartbeat must not wait behind a run's writes). Elsewhere on the async
        connection."""
        if self._db.sync_writer is not None:
            return await self._db.run_write(fn, urgent=urgent)
        async with self._db.transaction() as conn:
            return await conn.run_sync(fn)

    async def _upsert(
        self,
        conn: AsyncConnection,
        entity: type[Base],
        values: dict[str, Any] | Sequence[dict[str, Any]],
        keys: Sequence[str],
    ) -> None:
        rows = [values] if isinstance(values, dict) else list(values)
        if not rows:
            return
        await conn.execute(self._upsert_stmt(entity, keys, list(rows[0])), rows)

    async def write_batch(self, ops: Sequence[WriteOp]) -> None:
        """Apply many writes in ONE transaction (group commit), one statement per table.

        The engine funnels the checkpoints, audit rows, symbol results, records and dead letters of
        every symbol in flight through here: one commit per batch instead of one per write is what
        keeps storage from dominating a run. Each kind keeps the idempotency of its single-write method.
        On a SQLite file the whole transaction runs on the writer thread in one hop
        (``Database.run_write``); elsewhere on the async connection.
        """
        if not ops:
            return
        records = [op for op in ops if isinstance(op, RecordsWrite)]
        records += [
            RecordsWrite(op.result.run_id, op.result.events, op.result.trades)
            for op in ops
            if isinstance(op, SymbolResultWrite) and op.records
        ]
        run_ids = {r.run_id for r in records}
        if self._db.sync_writer is not None:
            # Read (and cache) the runs' flags first: runs never change them, and a missing run must
            # fail the batch before anything is written.
            if run_ids - self._simulated.keys():
                async with self._db.engine.connect() as conn:
                    await self._simulated_flags(conn, run_ids)
            plan = self._plan(ops, records, self._known_flags(run_ids))

            def execute(conn: Connection) -> None:
                for stmt, rows in plan:
                    self._execute_many(conn, stmt, rows)

            await self._db.run_write(execute)
            return
        async with self._db.transaction() as conn:
            flags = await self._simulated_flags(conn, run_ids) if run_ids else {}
            for stmt, rows in self._plan(ops, records, flags):
                await conn.execute(stmt, rows)

    def _execute_many(self, conn: Connection, stmt: Executable, rows: list[dict[str, Any]]) -> None:
        """``conn.execute(stmt, rows)`` with the same SQL and the same bound values, but as driver
        SQL: the statement is compiled once and each row goes through the column types' bind
        processors directly. SQLAlchemy's own per-row parameter handling cost more than SQLite's
        insert of the row (a run writes ~8 rows per symbol and stage). Statements whose compiled form
        needs more than the row's own values (defaults, expanding parameters) keep the normal path."""
        key = (stmt, tuple(rows[0]))
        if key in self._driver_forms:
            form = self._driver_forms[key]
        else:
            form = self._driver_forms[key] = _driver_form(conn, stmt, key[1])
        if form is None or any(len(row) != len(key[1]) for row in rows):
            conn.execute(stmt, rows)
            return
        order = form.order
        conn.exec_driver_sql(
            form.sql,
            [tuple(row[k] if p is None else p(row[k]) for k, p in order) for row in rows],
        )

    def _plan(
        self, ops: Sequence[WriteOp], records: Sequence[RecordsWrite], flags: Mapping[str, bool]
    ) -> list[tuple[Executable, list[dict[str, Any]]]]:
        """The batch as (cached statement, parameter rows) pairs, in dependency order."""
        plan: list[tuple[Executable, list[dict[str, Any]]]] = []

        def upsert(entity: type[Base], rows: list[dict[str, Any]], keys: Sequence[str]) -> None:
            if rows:
                plan.append((self._upsert_stmt(entity, keys, list(rows[0])), rows))

        def ignore(entity: type[Base], rows: list[dict[str, Any]]) -> None:
            if rows:
                plan.append((self._ignore_stmt(entity), rows))

        ignore(DeadLetterRow, [_dead_letter_values(op) for op in ops if isinstance(op, DeadLetterWrite)])
        checkpoints = [_checkpoint_values(op) for op in ops if isinstance(op, CheckpointWrite)]
        upsert(StageCheckpointRow, _last_by(checkpoints, _CHECKPOINT_KEY), _CHECKPOINT_KEY)
        ignore(
            AuditEventRow,
            [
                _audit_values(op) if isinstance(op, AuditWrite) else op.values
                for op in ops
                if isinstance(op, (AuditWrite, AuditRowWrite))
            ],
        )
        # Events and setups before what references them (results, decisions).
        ignore(
            EventRow,
            _unique_by_id(_event_values(e, r.run_id, flags[r.run_id]) for r in records for e in r.events),
        )
        risk_json = {id(t): _risk_json(t) for r in records for t in r.trades}
        ignore(
            TradeRow,
            _unique_by_id(
                _trade_values(t, r.run_id, flags[r.run_id], risk_json[id(t)])
                for r in records
                for t in r.trades
            ),
        )
        # Upsert: a resumed run that decides again replaces its own earlier decision, never another's.
        upsert(
            DecisionRow,
            _last_by(
                (_decision_values(t, r.run_id, risk_json[id(t)]) for r in records for t in r.trades),
                _DECISION_KEY,
            ),
            _DECISION_KEY,
        )
        results = (_symbol_result_values(op.result) for op in ops if isinstance(op, SymbolResultWrite))
        upsert(SymbolResultRow, _last_by(results, _SYMBOL_RESULT_KEY), _SYMBOL_RESULT_KEY)
        return plan

    def _known_flags(self, run_ids: Iterable[str]) -> dict[str, bool]:
        return {r: self._simulated[r] for r in run_ids}

    async def _simulated_flags(self, conn: AsyncConnection, run_ids: Iterable[str]) -> dict[str, bool]:
        wanted = sorted(set(run_ids))
        unknown = [r for r in wanted if r not in self._simulated]
        if unknown:
            stmt = select(RunRow.id, RunRow.simulated).where(RunRow.id.in_(unknown))
            self._simulated.update(dict((await conn.execute(stmt)).all()))
        missing = [r for r in wanted if r not in self._simulated]
        if missing:
            raise LookupError(f"run {missing[0]!r} does not exist")
        return {r: self._simulated[r] for r in wanted}

    # ------------------------------------------------------------------ runs

    async def create_run(
        self,
        run: Run,
        *,
        lease_owner: str | None = None,
        lease_ttl_s: float | None = None,
        run_json: dict[str, Any] | None = None,
    ) -> bool:
        """Record a new run; returns False (and changes nothing) if the id already exists.

        With ``lease_owner`` the row is born leased to that owner for ``lease_ttl_s`` seconds, so it is
        never seen as interrupted between its creation and the executor's first heartbeat.
        ``run_json``: the run's ``model_dump(mode="json")`` if the caller made it already.
        """
        values = _new_run_values(run, lease_owner, lease_ttl_s, run_json)
        return await self._insert_one_urgent(RunRow, values)

    async def create_run_audited(
        self,
        run: Run,
        audit: AuditWrite,
        *,
        lease_owner: str | None = None,
        lease_ttl_s: float | None = None,
        run_json: dict[str, Any] | None = None,
    ) -> bool | None:
        """Record a new run and the audit record of its acceptance in one transaction: True when both
        were written; None, writing nothing, when ``audit``'s idempotency key is already recorded (a
        concurrent submission with that key won); False, writing nothing, when the run id exists.

        One commit instead of two per accepted run, and on a SQLite file the accepts waiting together
        share it (group commit, ``Database.run_write``); either way both rows or neither are stored.
        """
        run_values = _new_run_values(run, lease_owner, lease_ttl_s, run_json)
        audit_values = _audit_values(audit)
        audit_stmt, run_stmt = self._ignore_stmt(AuditEventRow), self._ignore_stmt(RunRow)
        try:
            if self._db.sync_writer is not None:

                def write(conn: Connection) -> bool | None:
                    if conn.execute(audit_stmt, audit_values).rowcount != 1:
                        return None
                    if conn.execute(run_stmt, run_values).rowcount != 1:
                        raise _RunIdTakenError  # rolls the audit row back with it
                    return True

                return await self._db.run_write(write, urgent=True, group=True)
            async with self._db.transaction() as conn:
                if await self._insert_ignore_counted(conn, AuditEventRow, [audit_values]) != 1:
                    return None
                if await self._insert_ignore_counted(conn, RunRow, [run_values]) != 1:
                    raise _RunIdTakenError
                return True
        except _RunIdTakenError:
            return False

    async def update_run(self, run: Run) -> None:
        """Store the run's current state (inserting it if it was never created). The lease columns
        are left alone: only the lease methods move them."""
        values = _run_values(run)
        if run.status is RunStatus.INTERRUPTED:  # derived, never stored
            values["status"] = RunStatus.RUNNING.value
        stmt = self._upsert_stmt(RunRow, ["id"], list(values))
        await self._write(lambda conn: conn.execute(stmt, [values]))

    async def get_run(self, run_id: str) -> Run | None:
        """The run; a ``running`` run whose lease expired reads as ``interrupted``."""
        async with self._db.sessionmaker() as session:
            row = await session.get(RunRow, run_id)
            return _run_from_row(row) if row is not None else None

    async def list_runs(self, limit: int = 20) -> list[Run]:
        """The most recently started runs, newest first (statuses derived as ``get_run`` does)."""
        stmt = select(RunRow).order_by(RunRow.started_at.desc(), RunRow.id.desc()).limit(limit)
        now = utc_now()
        async with self._db.sessionmaker() as session:
            return [_run_from_row(row, now) for row in await session.scalars(stmt)]

    async def list_interrupted_runs(self, limit: int = 1000) -> list[Run]:
        """``running`` runs whose lease expired (or that never had one), oldest first."""
        now = utc_now()
        stmt = (
            select(RunRow)
            .where(
                RunRow.status == RunStatus.RUNNING.value,
                or_(RunRow.lease_expires_at.is_(None), RunRow.lease_expires_at <= now),
            )
            .order_by(RunRow.started_at, RunRow.id)
            .limit(limit)
        )
        async with self._db.sessionmaker() as session:
            return [_run_from_row(row, now) for row in await session.scalars(stmt)]

    # ------------------------------------------------------------------ leases

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> bool:
        """Take (or keep) the lease of an unfinished run; True if ``owner`` holds it afterwards.

        One atomic compare-and-set: the UPDATE only matches while the lease is free, expired or
        already ``owner``'s, so of several processes trying at once exactly one wins.
        """
        now = utc_now()
        stmt = (
            update(RunRow)
            .where(RunRow.id == run_id, RunRow.status != RunStatus.COMPLETED.value, _lease_free(owner, now))
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=ttl_s), heartbeat_at=now)
        )
        return await self._write(lambda conn: conn.execute(stmt).rowcount == 1, urgent=True)

    async def renew_lease(self, run_id: str, owner: str, ttl_s: float) -> bool:
        """Heartbeat: push the expiry out; False if ``owner`` no longer holds the lease."""
        now = utc_now()
        stmt = (
            update(RunRow)
            .where(RunRow.id == run_id, RunRow.lease_owner == owner)
            .values(lease_expires_at=now + timedelta(seconds=ttl_s), heartbeat_at=now)
        )
        return await self._write(lambda conn: conn.execute(stmt).rowcount == 1, urgent=True)

    async def release_lease(self, run_id: str, owner: str) -> bool:
        """Give the lease up (the run ended here, or this process stops executing it)."""
        stmt = (
            update(RunRow)
            .where(RunRow.id == run_id, RunRow.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
        )
        return await self._write(lambda conn: conn.execute(stmt).rowcount == 1, urgent=True)

    async def lease_of(self, run_id: str) -> tuple[str | None, datetime | None]:
        """(owner, expiry) of the run's lease, for messages and tests."""
        stmt = select(RunRow.lease_owner, RunRow.lease_expires_at).where(RunRow.id == run_id)
        async with self._db.sessionmaker() as session:
            row = (await session.execute(stmt)).one_or_none()
        return (row[0], row[1]) if row is not None else (None, None)

    # ------------------------------------------------------------------ retention

    async def compact_run(self, run_id: str) -> int:
        """Drop the item snapshots of a completed run's checkpoints; returns how many were compacted.

        A completed run is never resumed, and the snapshots (every symbol's WorkItem after every
        stage) were ~85 % of the database. Stage results, symbol results, decisions, audit rows and
        dead letters (which keep their own item, for retries) stay.
        """
        stmt = (
            update(StageCheckpointRow)
            .where(
                StageCheckpointRow.run_id == run_id,
                StageCheckpointRow.run_id.in_(
                    select(RunRow.id).where(RunRow.status == RunStatus.COMPLETED.value)
                ),
            )
            .values(item={})
        )
        return await self._write(lambda conn: max(conn.execute(stmt).rowcount, 0))

    async def prune(self, older_than: datetime) -> PruneReport:
        """Delete runs that ended (or were interrupted) before ``older_than``, with everything of
        theirs, plus audit rows and no-longer-referenced setups older than that.

        A ``running`` run whose lease is live is never touched, however old.
        """
        now = utc_now()
        ended = func.coalesce(RunRow.finished_at, RunRow.started_at) < older_than
        live = and_(
            RunRow.status == RunStatus.RUNNING.value,
            RunRow.lease_expires_at.is_not(None),
            RunRow.lease_expires_at > now,
        )
        async with self._db.transaction() as conn:
            doomed = list((await conn.scalars(select(RunRow.id).where(ended, ~live))).all())
            counts: dict[str, int] = {}
            for chunk in _chunks(sorted(doomed)):
                for name, entity, column in (
                    ("symbol_results", SymbolResultRow, SymbolResultRow.run_id),
                    ("stage_checkpoints", StageCheckpointRow, StageCheckpointRow.run_id),
                    ("decisions", DecisionRow, DecisionRow.run_id),
                    ("dead_letters", DeadLetterRow, DeadLetterRow.run_id),
                    ("audit_events", AuditEventRow, AuditEventRow.run_id),
                    ("runs", RunRow, RunRow.id),
                ):
                    result = await conn.execute(delete(entity).where(column.in_(chunk)))
                    counts[name] = counts.get(name, 0) + max(result.rowcount, 0)
            # Audit rows of no run (API requests refused...) age out on their own.
            result = await conn.execute(
                delete(AuditEventRow).where(
                    AuditEventRow.run_id.is_(None), AuditEventRow.timestamp < older_than
                )
            )
            counts["audit_events"] = counts.get("audit_events", 0) + max(result.rowcount, 0)
            # A setup no remaining run decided on is history nobody reads any more.
            result = await conn.execute(
                delete(TradeRow).where(
                    TradeRow.created_at < older_than, TradeRow.id.not_in(select(DecisionRow.setup_id))
                )
            )
            counts["trades"] = max(result.rowcount, 0)
        for run_id in doomed:
            self._simulated.pop(run_id, None)
        return PruneReport(**counts)

    # ------------------------------------------------------------------ checkpoints

    async def save_checkpoint(
        self,
        run_id: str,
        symbol: str,
        seq: int,
        result: StageResult,
        item: BaseModel | Mapping[str, Any],
    ) -> None:
        """Checkpoint ``item`` (a WorkItem) after stage ``result.stage`` at position ``seq``.

        One row per (run, symbol, stage), and the latest write wins: a resumed run that re-runs a
        stage whose earlier attempt failed must replace that failure, or a second resume would skip
        the stage.
        """
        await self.write_batch([CheckpointWrite(run_id, symbol, seq, result, item)])

    async def load_checkpoints(self, run_id: str) -> dict[str, list[CheckpointRow]]:
        """All checkpoints of a run by symbol, each list in stage order (``seq``)."""
        stmt = (
            select(StageCheckpointRow)
            .where(StageCheckpointRow.run_id == run_id)
            .order_by(StageCheckpointRow.symbol, StageCheckpointRow.seq, StageCheckpointRow.stage)
        )
        out: dict[str, list[CheckpointRow]] = {}
        # Per symbol: the item as of the previous row, and that row's seq (deltas apply onto it).
        state: dict[str, tuple[dict[str, Any], int]] = {}
        async with self._db.sessionmaker() as session:
            for row in await session.scalars(stmt):
                item, seq = row.item, row.seq
                base = item.get(CHECKPOINT_DELTA_OF) if isinstance(item, dict) else None
                if base is not None:
                    # The engine stores only what a stage changed (see engines/local.py); the row's item
                    # is that applied onto the previous row's. A delta whose base is not the row right
                    # before it (compacted, or lost in a crash) yields nothing to resume from.
                    prev, prev_seq = state.get(row.symbol, ({}, -1))
                    changed = {k: v for k, v in item.items() if k not in _DELTA_KEYS}
                    refs = item.get(CHECKPOINT_TRADES_REF)
                    item = {**prev, **changed} if prev and prev_seq == base else {}
                    if item and refs is not None:
                        item["trades"] = _trades_from_refs(refs, item)
                state[row.symbol] = (item, seq)
                out.setdefault(row.symbol, []).append(
                    CheckpointRow(
                        stage=row.stage,
                        seq=seq,
                        status=StageStatus(row.status),
                        result=StageResult.model_validate(row.result),
                        item=item,
                    )
                )
        return out

    # ------------------------------------------------------------------ symbol results

    async def save_symbol_result(self, result: SymbolResult) -> None:
        """Upsert the symbol's result for its run.

        Its events, setups and this run's decisions are stored too (idempotently, flagged simulated
        like the run), in the same transaction, so the ids the row references always resolve.
        """
        await self.write_batch([SymbolResultWrite(result)])

    async def get_symbol_results(self, run_id: str) -> list[SymbolResult]:
        """The run's symbol results (by symbol), with events and THIS run's risk decisions."""
        async with self._db.sessionmaker() as session:
            rows = list(
                await session.scalars(
                    select(SymbolResultRow)
                    .where(SymbolResultRow.run_id == run_id)
                    .order_by(SymbolResultRow.symbol)
                )
            )
            event_ids = sorted({i for row in rows for i in row.event_ids})
            trade_ids = sorted({i for row in rows for i in row.trade_ids})
            events: dict[str, Event] = {}
            for chunk in _chunks(event_ids):
                for erow in await session.scalars(select(EventRow).where(EventRow.id.in_(chunk))):
                    events[erow.id] = _event_from_row(erow)
            decisions = {
                d.setup_id: d
                for d in await session.scalars(select(DecisionRow).where(DecisionRow.run_id == run_id))
            }
            trades: dict[str, TradeRecord] = {}
            for chunk in _chunks(trade_ids):
                for trow in await session.scalars(select(TradeRow).where(TradeRow.id.in_(chunk))):
                    trades[trow.id] = _trade_from_row(trow, decisions.get(trow.id))
        return [
            SymbolResult.model_validate(
                {
                    "run_id": row.run_id,
                    "symbol": row.symbol,
                    "status": row.status,
                    "stages": row.stages,
                    "events": [events[i] for i in row.event_ids if i in events],
                    "trades": [trades[i] for i in row.trade_ids if i in trades],
                    "error": row.error,
                    "data_issues": row.data_issues,
                    "extras": row.extras,
                }
            )
            for row in rows
        ]

    # ------------------------------------------------------------------ events & trades

    async def save_events(self, events: Sequence[Event], *, run_id: str | None, simulated: bool) -> int:
        """Store events not seen before; returns how many were new."""
        rows = _unique_by_id(_event_values(e, run_id, simulated) for e in events)
        if not rows:
            return 0
        async with self._db.transaction() as conn:
            return await self._insert_ignore_counted(conn, EventRow, rows)

    async def save_trades(self, trades: Sequence[TradeRecord], *, run_id: str | None, simulated: bool) -> int:
        """Store trade records not seen before (keyed by setup id); returns how many were new.

        ``run_id`` is provenance only: a run's own decisions go through ``RecordsWrite`` (or its
        symbol results), which need the run to exist.
        """
        rows = _unique_by_id(_trade_values(t, run_id, simulated) for t in trades)
        if not rows:
            return 0
        async with self._db.transaction() as conn:
            return await self._insert_ignore_counted(conn, TradeRow, rows)

    async def list_trades(
        self,
        symbol: str | None = None,
        strategy_id: str | None = None,
        limit: int = 50,
        *,
        run_id: str | None = None,
    ) -> list[TradeRecord]:
        """Trade records, newest first, optionally filtered by symbol and/or strategy.

        With ``run_id``: that run's setups with that run's own decisions. Without it, each setup once
        with the sizing of the first run that stored it.
        """
        if run_id is not None:
            dstmt = (
                select(TradeRow, DecisionRow)
                .join(DecisionRow, DecisionRow.setup_id == TradeRow.id)
                .where(DecisionRow.run_id == run_id)
                .order_by(DecisionRow.decided_at.desc(), TradeRow.id.desc())
                .limit(limit)
            )
            if symbol is not None:
                dstmt = dstmt.where(TradeRow.symbol == symbol)
            if strategy_id is not None:
                dstmt = dstmt.where(TradeRow.strategy_id == strategy_id)
            async with self._db.sessionmaker() as session:
                return [_trade_from_row(t, d) for t, d in (await session.execute(dstmt)).all()]
        stmt = select(TradeRow).order_by(TradeRow.created_at.desc(), TradeRow.id.desc()).limit(limit)
        if symbol is not None:
            stmt = stmt.where(TradeRow.symbol == symbol)
        if strategy_id is not None:
            stmt = stmt.where(TradeRow.strategy_id == strategy_id)
        async with self._db.sessionmaker() as session:
            return [_trade_from_row(row) for row in await session.scalars(stmt)]

    async def get_trade(self, trade_id: str) -> TradeRecord | None:
        async with self._db.sessionmaker() as session:
            row = await session.get(TradeRow, trade_id)
            return _trade_from_row(row) if row is not None else None

    # ------------------------------------------------------------------ audit

    async def record_audit(
        self,
        event: AuditEvent,
        *,
        idempotency_key: str,
        run_id: str | None = None,
        symbol: str | None = None,
    ) -> bool:
        """Append an audit record unless its id or ``idempotency_key`` is already recorded."""
        values = _audit_values(AuditWrite(event, idempotency_key, run_id, symbol))
        return await self._insert_one_urgent(AuditEventRow, values)

    async def list_audit(
        self, correlation_id: str | None = None, run_id: str | None = None, limit: int = 1000
    ) -> list[AuditEvent]:
        """Audit records in chronological order, optionally filtered."""
        stmt = select(AuditEventRow).order_by(AuditEventRow.timestamp, AuditEventRow.id).limit(limit)
        if correlation_id is not None:
            stmt = stmt.where(AuditEventRow.correlation_id == correlation_id)
        if run_id is not None:
            stmt = stmt.where(AuditEventRow.run_id == run_id)
        async with self._db.sessionmaker() as session:
            return [_audit_from_row(row) for row in await session.scalars(stmt)]

    # ------------------------------------------------------------------ dead letters

    async def add_dead_letter(
        self,
        run_id: str,
        symbol: str,
        stage: str,
        error: str,
        attempts: int,
        item: BaseModel | Mapping[str, Any],
    ) -> int:
        """Park a failed symbol; one per (run, symbol). Returns its id (the existing one on replay)."""
        values = _dead_letter_values(DeadLetterWrite(run_id, symbol, stage, error, attempts, item))
        async with self._db.transaction() as conn:
            await self._insert_ignore(conn, DeadLetterRow, [values])
            dead_letter_id = await conn.scalar(
                select(DeadLetterRow.id).where(DeadLetterRow.run_id == run_id, DeadLetterRow.symbol == symbol)
            )
        if dead_letter_id is None:  # pragma: no cover - the row was just inserted or existed
            raise RuntimeError("dead letter vanished while being added")
        return dead_letter_id

    async def list_dead_letters(
        self, run_id: str | None = None, status: DeadLetterStatus | None = "open"
    ) -> list[DeadLetter]:
        """Dead letters in creation order; ``status=None`` lists every status."""
        conditions: list[ColumnElement[bool]] = []
        if run_id is not None:
            conditions.append(DeadLetterRow.run_id == run_id)
        if status is not None:
            conditions.append(DeadLetterRow.status == status)
        stmt = select(DeadLetterRow).where(*conditions).order_by(DeadLetterRow.id)
        async with self._db.sessionmaker() as session:
            return [_dead_letter_from_row(row) for row in await session.scalars(stmt)]

    async def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        async with self._db.sessionmaker() as session:
            row = await session.get(DeadLetterRow, dead_letter_id)
            return _dead_letter_from_row(row) if row is not None else None

    async def mark_dead_letter(
        self, dead_letter_id: int, status: DeadLetterStatus, retried_by_run_id: str | None = None
    ) -> bool:
        """Move a dead letter to ``status``; returns False if no such id.

        ``retried_by_run_id`` is only written when given, so resolving keeps the retry's run id.
        """
        if status not in _DEAD_LETTER_STATUSES:
            raise ValueError(f"invalid dead-letter status {status!r}")
        changes: dict[str, Any] = {"status": status}
        if retried_by_run_id is not None:
            changes["retried_by_run_id"] = retried_by_run_id
        stmt = update(DeadLetterRow).where(DeadLetterRow.id == dead_letter_id).values(changes)
        async with self._db.transaction() as conn:
            result = await conn.execute(stmt)
            return result.rowcount == 1

    # ------------------------------------------------------------------ API read queries

    async def list_runs_page(
        self,
        *,
        status: RunStatus | None = None,
        symbol: str | None = None,
        since: datetime | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = 20,
    ) -> list[Run]:
        """Runs newest first, filtered, after the keyset cursor ``before`` = (started_at, id).

        ``running`` and ``interrupted`` are told apart by the lease, as ``get_run`` does. ``symbol``
        matches a run that was asked for that symbol (the JSON list holds it as a quoted string).
        """
        now = utc_now()
        conditions: list[ColumnElement[bool]] = []
        if status is RunStatus.INTERRUPTED:
            conditions.append(RunRow.status == RunStatus.RUNNING.value)
            conditions.append(or_(RunRow.lease_expires_at.is_(None), RunRow.lease_expires_at <= now))
        elif status is RunStatus.RUNNING:
            conditions.append(RunRow.status == RunStatus.RUNNING.value)
            conditions.append(RunRow.lease_expires_at > now)
        elif status is not None:
            conditions.append(RunRow.status == status.value)
        if symbol is not None:
            escaped = symbol.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(cast(RunRow.symbols, Text).like(f'%"{escaped}"%', escape="\\"))
        if since is not None:
            conditions.append(RunRow.started_at >= since)
        if before is not None:
            at, run_id = before
            conditions.append(or_(RunRow.started_at < at, and_(RunRow.started_at == at, RunRow.id < run_id)))
        stmt = (
            select(RunRow)
            .where(*conditions)
            .order_by(RunRow.started_at.desc(), RunRow.id.desc())
            .limit(limit)
        )
        async with self._db.sessionmaker() as session:
            return [_run_from_row(row, now) for row in await session.scalars(stmt)]

    async def list_audit_page(
        self,
        *,
        correlation_id: str | None = None,
        run_id: str | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Audit records newest first, after the keyset cursor ``before`` = (timestamp, id)."""
        conditions: list[ColumnElement[bool]] = []
        if correlation_id is not None:
            conditions.append(AuditEventRow.correlation_id == correlation_id)
        if run_id is not None:
            conditions.append(AuditEventRow.run_id == run_id)
        if before is not None:
            at, event_id = before
            conditions.append(
                or_(
                    AuditEventRow.timestamp < at,
                    and_(AuditEventRow.timestamp == at, AuditEventRow.id < event_id),
                )
            )
        stmt = (
            select(AuditEventRow)
            .where(*conditions)
            .order_by(AuditEventRow.timestamp.desc(), AuditEventRow.id.desc())
            .limit(limit)
        )
        async with self._db.sessionmaker() as session:
            return [_audit_from_row(row) for row in await session.scalars(stmt)]

    async def get_audit_by_key(self, idempotency_key: str) -> tuple[AuditEvent, str | None] | None:
        """The audit record stored under ``idempotency_key`` and its run id, if any."""
        stmt = select(AuditEventRow).where(AuditEventRow.idempotency_key == idempotency_key)
        async with self._db.sessionmaker() as session:
            row = await session.scalar(stmt)
            return (_audit_from_row(row), row.run_id) if row is not None else None

    async def run_failures(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Why each of ``run_ids`` failed, from its ``run.failed`` audit record (runs without one absent)."""
        if not run_ids:
            return {}
        stmt = select(AuditEventRow.run_id, AuditEventRow.error).where(
            AuditEventRow.run_id.in_(list(run_ids)), AuditEventRow.action == "run.failed"
        )
        async with self._db.sessionmaker() as session:
            rows = (await session.execute(stmt)).all()
        return {str(r[0]): str(r[1] or "") for r in rows}

    async def schema_revisions(self) -> list[str]:
        """The Alembic revisions the database says it is at (raises when it cannot be reached)."""
        async with self._db.engine.connect() as conn:
            rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
            return sorted(str(r[0]) for r in rows)

    # ------------------------------------------------------------------ trade outcomes (learning)

    async def unsettled_trades(self, symbols: Iterable[str] | None = None) -> list[TradeRecord]:
        """Stored setups with no settled outcome yet (first run's sizing), oldest first."""
        stmt = (
            select(TradeRow)
            .where(TradeRow.id.not_in(select(TradeOutcomeRow.setup_id)))
            .order_by(TradeRow.symbol, TradeRow.id)
        )
        if symbols is not None:
            stmt = stmt.where(TradeRow.symbol.in_(sorted(set(symbols))))
        async with self._db.sessionmaker() as session:
            return [_trade_from_row(row) for row in await session.scalars(stmt)]

    async def save_outcomes(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Upsert settled outcomes by setup id (re-settling the same setup rewrites the same row)."""
        values = _last_by((dict(r) for r in rows), ("setup_id",))
        async with self._db.transaction() as conn:
            for chunk in _chunks(values):
                await self._upsert(conn, TradeOutcomeRow, list(chunk), ("setup_id",))
        return len(values)

    async def list_outcomes(
        self,
        *,
        strategy_id: str | None = None,
        symbol: str | None = None,
        exited_through: date | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Settled outcomes as column dicts, by exit date then setup id (``exited_through``: only
        trades that ended on or before that date, so a replay as of D never reads a later exit)."""
        stmt = select(TradeOutcomeRow).order_by(TradeOutcomeRow.exit_on, TradeOutcomeRow.setup_id)
        if strategy_id is not None:
            stmt = stmt.where(TradeOutcomeRow.strategy_id == strategy_id)
        if symbol is not None:
            stmt = stmt.where(TradeOutcomeRow.symbol == symbol)
        if exited_through is not None:
            stmt = stmt.where(TradeOutcomeRow.exit_on <= exited_through)
        if limit is not None:
            stmt = stmt.limit(limit)
        async with self._db.sessionmaker() as session:
            return [_outcome_dict(row) for row in await session.scalars(stmt)]

    async def outcomes_for(self, setup_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Settled outcomes of these setups, by setup id (missing: not settled yet)."""
        found: dict[str, dict[str, Any]] = {}
        async with self._db.sessionmaker() as session:
            for chunk in _chunks(sorted(set(setup_ids))):
                stmt = select(TradeOutcomeRow).where(TradeOutcomeRow.setup_id.in_(chunk))
                for row in await session.scalars(stmt):
                    found[row.setup_id] = _outcome_dict(row)
        return found


def _outcome_dict(row: TradeOutcomeRow) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in TradeOutcomeRow.__table__.columns}
