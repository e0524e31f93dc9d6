"""The memory outbox: retains that failed wait in the project database until memory is back.

A retain that cannot reach its backend (``MemoryUnavailableError``: the service is down, Hindsight
answers 503, the store times out) must not be lost, and must not fail the run either. The pipeline's
``retain_memory`` stage puts such items here; :meth:`MemoryOutbox.drain` hands them to the backend in
the order they were enqueued, at the start of the next run and periodically inside ``jax serve``.

Idempotency: one row per (bank, document id). Enqueueing the same document again (a retried or resumed
run) replaces the waiting item and keeps its place; draining retains with the item's ``document_id``,
which every backend treats as "the same memory", so a drain interrupted between the backend's commit
and the row's delete retains nothing twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import delete, func, select, update

from jax_assistant.memory.base import MemoryUnavailableError
from jax_assistant.memory.facade import Memory
from jax_assistant.memory.models import MemoryItem
from jax_assistant.observability.logging import get_logger
from jax_assistant.storage.db import Database
from jax_assistant.storage.tables import MemoryOutboxRow

log = get_logger("jax_assistant.memory.outbox")

# Items retained per backend call while draining (one retain_many per bank run of rows).
DRAIN_BATCH = 500


@dataclass
class DrainReport:
    """What one drain did: ``retained`` items reached memory, ``remaining`` still wait."""

    retained: int = 0
    dropped: int = 0
    remaining: int = 0
    error: str | None = None
    banks: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "retained": self.retained,
            "dropped": self.dropped,
            "remaining": self.remaining,
            "error": self.error,
            "banks": self.banks,
        }


def _document_id(item: MemoryItem) -> str:
    key = item.document_id or item.id
    if not key:
        # Without a stable key a re-enqueue (or a drain after a crash) could duplicate the memory.
        raise ValueError("an outbox item needs a document_id (or id) to stay idempotent")
    return key


class MemoryOutbox:
    """The ``memory_outbox`` table of a project database (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _insert(self) -> Any:
        if self._db.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(MemoryOutboxRow)
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(MemoryOutboxRow)

    async def enqueue(
        self,
        bank: str,
        items: Sequence[MemoryItem],
        *,
        error: str | None = None,
        correlation_id: str | None = None,
    ) -> int:
        """Keep ``items`` (already validated and redacted by the facade) for a later drain."""
        if not items:
            return 0
        now = datetime.now(UTC)
        rows: dict[str, dict[str, Any]] = {}
        for item in items:
            key = _document_id(item)
            rows[key] = {
                "bank": bank,
                "document_id": key,
                "item": item.model_dump(mode="json", exclude_none=True, exclude={"score", "scores"}),
                "correlation_id": correlation_id,
                "attempts": 1,
                "last_error": error,
                "created_at": now,
                "updated_at": now,
            }
        ins = self._insert()
        stmt = ins.on_conflict_do_update(
            index_elements=["bank", "document_id"],
            set_={
                "item": ins.excluded.item,
                "correlation_id": ins.excluded.correlation_id,
                "last_error": ins.excluded.last_error,
                "updated_at": ins.excluded.updated_at,
                "attempts": MemoryOutboxRow.attempts + 1,
            },
        )
        async with self._db.transaction() as conn:
            await conn.execute(stmt, list(rows.values()))
        return len(rows)

    async def depth(self) -> int:
        """How many retains are waiting."""
        async with self._db.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(MemoryOutboxRow))).scalar_one())

    async def pending(self, limit: int = 1000) -> list[tuple[str, MemoryItem]]:
        """The waiting (bank, item) pairs, oldest first."""
        stmt = select(MemoryOutboxRow.bank, MemoryOutboxRow.item).order_by(MemoryOutboxRow.seq).limit(limit)
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(bank, MemoryItem.model_validate(item)) for bank, item in rows]

    async def drain(self, memory: Memory, *, batch: int = DRAIN_BATCH) -> DrainReport:
        """Retain the waiting items in order; stops (keeping the rest) at the first outage.

        Consecutive rows of one bank go in one ``retain_many``; a row is deleted only after the backend
        accepted it, so a crash mid-drain leaves it to be retained again, which its document id makes
        harmless. A row whose item the facade now rejects (it cannot ever succeed) is dropped with a log
        line instead of blocking everything behind it.
        """
        report = DrainReport()
        while True:
            stmt = (
                select(MemoryOutboxRow.seq, MemoryOutboxRow.bank, MemoryOutboxRow.item)
                .order_by(MemoryOutboxRow.seq)
                .limit(batch)
            )
            async with self._db.engine.connect() as conn:
                rows = (await conn.execute(stmt)).all()
            if not rows:
                break
            # Runs of the same bank, in seq order.
            groups: list[tuple[str, list[tuple[int, dict[str, Any]]]]] = []
            for seq, bank, item in rows:
                if not groups or groups[-1][0] != bank:
                    groups.append((bank, []))
                groups[-1][1].append((seq, item))
            for bank, members in groups:
                seqs = [seq for seq, _ in members]
                rejected = False
                try:
                    await memory.retain_many([item for _, item in members], bank=bank)
                except MemoryUnavailableError as exc:
                    report.error = str(exc)
                    await self._note_failure(seqs, str(exc))
                    report.remaining = await self.depth()
                    return report
                except ValueError:  # InputError included: some item can never be retained
                    rejected = True
                if rejected:
                    # One at a time, so only the items memory rejects are dropped.
                    for seq, item in members:
                        try:
                            await memory.retain(item, bank=bank)
                            report.retained += 1
                            report.banks[bank] = report.banks.get(bank, 0) + 1
                        except MemoryUnavailableError as exc:
                            report.error = str(exc)
                            report.remaining = await self.depth()
                            return report
                        except ValueError as exc:
                            log.error("dropping an outbox item memory rejects", bank=bank, error=str(exc))
                            report.dropped += 1
                        await self._delete([seq])
                    continue
                await self._delete(seqs)
                report.retained += len(seqs)
                report.banks[bank] = report.banks.get(bank, 0) + len(seqs)
        report.remaining = await self.depth()
        if report.retained:
            log.info("memory outbox drained", retained=report.retained, remaining=report.remaining)
        return report

    async def _delete(self, seqs: Sequence[int]) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(delete(MemoryOutboxRow).where(MemoryOutboxRow.seq.in_(list(seqs))))

    async def _note_failure(self, seqs: Sequence[int], error: str) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                update(MemoryOutboxRow)
                .where(MemoryOutboxRow.seq.in_(list(seqs)))
                .values(
                    attempts=MemoryOutboxRow.attempts + 1,
                    last_error=error[:2000],
                    updated_at=datetime.now(UTC),
                )
            )


# Seconds between two drain attempts inside `jax serve`.
DRAIN_INTERVAL_S = 30.0


class _HasOutbox(Protocol):
    memory: Memory | None
    memory_outbox: MemoryOutbox | None


async def drain_forever(owner: _HasOutbox, interval_s: float = DRAIN_INTERVAL_S) -> None:
    """The background task of `jax serve`: drain the outbox every ``interval_s`` seconds.

    Never raises (a drain that fails is retried next time); cancelled at shutdown.
    """
    while True:
        await asyncio.sleep(interval_s)
        if owner.memory is None or owner.memory_outbox is None:
            continue
        try:
            if await owner.memory_outbox.depth():
                await owner.memory_outbox.drain(owner.memory)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("memory outbox drain failed; will retry", error=str(exc))


async def outbox_status(owner: _HasOutbox) -> dict[str, Any]:
    """``memoryOutbox`` of /status: how many retains wait (None when memory is off or the db is down)."""
    if owner.memory_outbox is None:
        return {"enabled": False, "depth": None}
    try:
        return {"enabled": True, "depth": await owner.memory_outbox.depth()}
    except Exception as exc:
        return {"enabled": True, "depth": None, "error": str(exc).splitlines()[0] if str(exc) else "error"}
