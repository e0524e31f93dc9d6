"""Persistence of runs, checkpoints, events, trades, audit records and dead letters.

Every public write runs in a single transaction and is idempotent: inserts use the dialect's
``ON CONFLICT DO NOTHING`` (or ``DO UPDATE`` for upserts), so a retried or replayed call leaves the
same rows behind. Conversion between domain models and rows lives here and nowhere else: JSON
columns hold ``model_dump(mode="json")`` output (snake_case field names), timestamps are native
columns.

Events and trades are stored once, keyed by their own ids, and shared by every run that produced
them; the first write wins (``first_run_id`` records which run that was).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict
from pydantic_core import to_jsonable_python
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from jax_assistant.domain import (
    AuditEvent,
    Event,
    Run,
    StageResult,
    StageStatus,
    SymbolResult,
    TradeRecord,
    utc_now,
)
from jax_assistant.storage.db import Database
from jax_assistant.storage.tables import (
    AuditEventRow,
    Base,
    DeadLetterRow,
    EventRow,
    RunRow,
    StageCheckpointRow,
    SymbolResultRow,
    TradeRow,
)

DeadLetterStatus = Literal["open", "retried", "resolved"]
_DEAD_LETTER_STATUSES: Final = frozenset(get_args(DeadLetterStatus))

# Rows per multi-VALUES statement: keeps bound parameters well under PostgreSQL's 32767 and
# SQLite's 32766 limits for the widest table (trades, 13 columns).
_CHUNK: Final = 500

_T = TypeVar("_T")
_CHECKPOINT_KEY: Final = ("run_id", "symbol", "stage")
_SYMBOL_RESULT_KEY: Final = ("run_id", "symbol")
_Insert = postgresql.Insert | sqlite.Insert


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


def _as_json(item: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json")
    data = to_jsonable_python(dict(item), by_alias=False, inf_nan_mode="null")
    if not isinstance(data, dict):  # pragma: no cover - a Mapping always converts to a dict
        raise TypeError("item must serialise to a JSON object")
    return data


# --------------------------------------------------------------------------- domain <-> rows


def _run_values(run: Run) -> dict[str, Any]:
    data = run.model_dump(mode="json")
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


def _run_from_row(row: RunRow) -> Run:
    return Run(
        id=row.id,
        status=row.status,
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


def _trade_values(record: TradeRecord, run_id: str | None, simulated: bool) -> dict[str, Any]:
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
        "risk": record.risk.model_dump(mode="json"),
        "event": record.event.model_dump(mode="json") if record.event is not None else None,
        "created_at": record.created_at,
        "first_run_id": run_id,
        "simulated": simulated,
    }


def _trade_from_row(row: TradeRow) -> TradeRecord:
    return TradeRecord.model_validate(
        {"setup": row.setup, "risk": row.risk, "event": row.event, "created_at": row.created_at}
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
    item: BaseModel | Mapping[str, Any]


@dataclass(frozen=True)
class AuditWrite:
    event: AuditEvent
    idempotency_key: str
    run_id: str | None = None
    symbol: str | None = None


@dataclass(frozen=True)
class SymbolResultWrite:
    result: SymbolResult


@dataclass(frozen=True)
class DeadLetterWrite:
    run_id: str
    symbol: str
    stage: str
    error: str
    attempts: int
    item: BaseModel | Mapping[str, Any]


WriteOp = CheckpointWrite | AuditWrite | SymbolResultWrite | DeadLetterWrite


def _checkpoint_values(op: CheckpointWrite) -> dict[str, Any]:
    return {
        "run_id": op.run_id,
        "symbol": op.symbol,
        "stage": op.result.stage,
        "seq": op.seq,
        "status": op.result.status.value,
        "result": op.result.model_dump(mode="json"),
        "item": _as_json(op.item),
        "created_at": utc_now(),
    }


def _audit_values(op: AuditWrite) -> dict[str, Any]:
    event = op.event
    return {
        "id": event.id,
        "idempotency_key": op.idempotency_key,
        "correlation_id": event.correlation_id,
        "run_id": op.run_id,
        "symbol": op.symbol,
        "action": event.action,
        "outcome": event.outcome,
        "timestamp": event.timestamp,
        "payload": event.model_dump(mode="json")["payload"],
        "error": event.error,
    }


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
    data = result.model_dump(mode="json", include={"stages", "data_issues", "extras"})
    return {
        "run_id": result.run_id,
        "symbol": result.symbol,
        "status": result.status.value,
        "error": result.error,
        "data_issues": data["data_issues"],
        "stages": data["stages"],
        "event_ids": [e.id for e in result.events],
        "trade_ids": [t.setup.id for t in result.trades],
        "extras": data["extras"],
        "updated_at": utc_now(),
    }


def _last_by(rows: Iterable[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per key, the last one offered (one multi-row upsert may not touch a row twice)."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        out[tuple(row[k] for k in keys)] = row
    return [out[k] for k in sorted(out)]


# --------------------------------------------------------------------------- repository


class Repository:
    """Async, idempotent storage of the orchestrator's domain objects (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        if db.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database dialect {db.dialect!r}")
        self._db = db

    # ------------------------------------------------------------------ helpers

    def _insert(self, entity: type[Base]) -> _Insert:
        # ON CONFLICT is dialect-specific SQL; both dialects expose the same builder API.
        if self._db.dialect == "postgresql":
            return postgresql.insert(entity)
        return sqlite.insert(entity)

    async def _insert_ignore(
        self, conn: AsyncConnection, entity: type[Base], rows: Sequence[dict[str, Any]]
    ) -> int:
        """Insert rows, skipping those whose primary key or unique keys already exist."""
        inserted = 0
        for chunk in _chunks(rows):
            result = await conn.execute(self._insert(entity).values(list(chunk)).on_conflict_do_nothing())
            inserted += max(result.rowcount, 0)
        return inserted

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
        for chunk in _chunks(rows):
            stmt = self._insert(entity).values(list(chunk))
            stmt = stmt.on_conflict_do_update(
                index_elements=list(keys),
                set_={name: stmt.excluded[name] for name in rows[0] if name not in keys},
            )
            await conn.execute(stmt)

    async def write_batch(self, ops: Sequence[WriteOp]) -> None:
        """Apply many writes in ONE transaction with multi-row statements (group commit).

        The engine funnels the checkpoints, audit rows, symbol results and dead letters of every
        symbol in flight through here: one commit per batch instead of one per write is what keeps
        storage from dominating a run. Each kind keeps the idempotency of its single-write method.
        """
        if not ops:
            return
        checkpoints = [_checkpoint_values(op) for op in ops if isinstance(op, CheckpointWrite)]
        audits = [_audit_values(op) for op in ops if isinstance(op, AuditWrite)]
        letters = [_dead_letter_values(op) for op in ops if isinstance(op, DeadLetterWrite)]
        results = [op.result for op in ops if isinstance(op, SymbolResultWrite)]
        async with self._db.transaction() as conn:
            if letters:
                await self._insert_ignore(conn, DeadLetterRow, letters)
            if checkpoints:
                await self._upsert(
                    conn, StageCheckpointRow, _last_by(checkpoints, _CHECKPOINT_KEY), _CHECKPOINT_KEY
                )
            if audits:
                await self._insert_ignore(conn, AuditEventRow, audits)
            if results:
                await self._write_symbol_results(conn, results)

    async def _write_symbol_results(self, conn: AsyncConnection, results: Sequence[SymbolResult]) -> None:
        run_ids = sorted({r.run_id for r in results})
        flags = dict(
            (await conn.execute(select(RunRow.id, RunRow.simulated).where(RunRow.id.in_(run_ids)))).all()
        )
        missing = [r for r in run_ids if r not in flags]
        if missing:
            raise LookupError(f"run {missing[0]!r} does not exist")
        # Events and trades first, so the ids each result references always resolve.
        await self._insert_ignore(
            conn,
            EventRow,
            _unique_by_id(_event_values(e, r.run_id, flags[r.run_id]) for r in results for e in r.events),
        )
        await self._insert_ignore(
            conn,
            TradeRow,
            _unique_by_id(_trade_values(t, r.run_id, flags[r.run_id]) for r in results for t in r.trades),
        )
        rows = _last_by((_symbol_result_values(r) for r in results), _SYMBOL_RESULT_KEY)
        await self._upsert(conn, SymbolResultRow, rows, _SYMBOL_RESULT_KEY)

    # ------------------------------------------------------------------ runs

    async def create_run(self, run: Run) -> bool:
        """Record a new run; returns False (and changes nothing) if the id already exists."""
        async with self._db.transaction() as conn:
            return await self._insert_ignore(conn, RunRow, [_run_values(run)]) == 1

    async def update_run(self, run: Run) -> None:
        """Store the run's current state (inserting it if it was never created)."""
        async with self._db.transaction() as conn:
            await self._upsert(conn, RunRow, _run_values(run), ["id"])

    async def get_run(self, run_id: str) -> Run | None:
        async with self._db.sessionmaker() as session:
            row = await session.get(RunRow, run_id)
            return _run_from_row(row) if row is not None else None

    async def list_runs(self, limit: int = 20) -> list[Run]:
        """The most recently started runs, newest first."""
        stmt = select(RunRow).order_by(RunRow.started_at.desc(), RunRow.id.desc()).limit(limit)
        async with self._db.sessionmaker() as session:
            return [_run_from_row(row) for row in await session.scalars(stmt)]

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
        async with self._db.sessionmaker() as session:
            for row in await session.scalars(stmt):
                out.setdefault(row.symbol, []).append(
                    CheckpointRow(
                        stage=row.stage,
                        seq=row.seq,
                        status=StageStatus(row.status),
                        result=StageResult.model_validate(row.result),
                        item=row.item,
                    )
                )
        return out

    # ------------------------------------------------------------------ symbol results

    async def save_symbol_result(self, result: SymbolResult) -> None:
        """Upsert the symbol's result for its run.

        Its events and trades are stored too (idempotently, flagged simulated like the run), in
        the same transaction, so the ids the row references always resolve.
        """
        await self.write_batch([SymbolResultWrite(result)])

    async def get_symbol_results(self, run_id: str) -> list[SymbolResult]:
        """The run's symbol results (by symbol), events and trades re-read from their tables."""
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
            trades: dict[str, TradeRecord] = {}
            for chunk in _chunks(trade_ids):
                for trow in await session.scalars(select(TradeRow).where(TradeRow.id.in_(chunk))):
                    trades[trow.id] = _trade_from_row(trow)
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
            return await self._insert_ignore(conn, EventRow, rows)

    async def save_trades(self, trades: Sequence[TradeRecord], *, run_id: str | None, simulated: bool) -> int:
        """Store trade records not seen before (keyed by setup id); returns how many were new."""
        rows = _unique_by_id(_trade_values(t, run_id, simulated) for t in trades)
        if not rows:
            return 0
        async with self._db.transaction() as conn:
            return await self._insert_ignore(conn, TradeRow, rows)

    async def list_trades(
        self, symbol: str | None = None, strategy_id: str | None = None, limit: int = 50
    ) -> list[TradeRecord]:
        """Trade records, newest first, optionally filtered by symbol and/or strategy."""
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
        async with self._db.transaction() as conn:
            return await self._insert_ignore(conn, AuditEventRow, [values]) == 1

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
