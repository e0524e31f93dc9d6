"""The ingest core shared by ``POST /ingest`` and ``jax ingest FILE``.

Per observation, in this order (so a failure part-way leaves nothing that blocks a re-send):

1. validate and normalise it (rejected items get their reasons; the rest of the batch goes on);
2. if it is new (its content hash is not stored yet) and significant, retain it to memory
   (``market_events`` or ``signals``) with the hash as ``document_id``, which makes retain idempotent;
3. store it in ``ingested_observations`` (insert-or-ignore on the hash: a re-send stores nothing twice);
4. audit its outcome under the request's correlation ID.

Then the batch's significant observations with a symbol that no run has carried yet (new ones, and
stored ones whose processing was deferred or skipped before) are handed to ``trigger`` as pushed events:
the service starts one run of their symbols through admission, as POST /process does, and the run's
detect_events merges them with the detected events. Each observation whose run started is marked
(``ingest.processed`` audit, unique per key), so re-sending it later starts nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.dialects import postgresql, sqlite

from jax_assistant.domain import Event, utc_now
from jax_assistant.domain.errors import InputError
from jax_assistant.ingest.models import (
    IngestConfig,
    IngestResult,
    ItemError,
    ItemOutcome,
    Observation,
    ObservationBatch,
    Processing,
    ProcessingStatus,
    bank_for,
    item_errors,
    raw_key,
)
from jax_assistant.observability.correlation import new_audit_event
from jax_assistant.observability.logging import get_logger
from jax_assistant.storage.db import Database
from jax_assistant.storage.repository import Repository
from jax_assistant.storage.tables import IngestedObservationRow

log = get_logger("jax_assistant.ingest")

DEFAULT_THRESHOLD = IngestConfig().threshold
AUDIT_ACTION = "ingest.observation"
PROCESSED_ACTION = "ingest.processed"  # one per observation whose run started (its unique key says so)
_AUDIT_OUTCOME = {"accepted": "success", "duplicate": "skipped", "rejected": "rejected", "failed": "error"}


class Retainer(Protocol):
    """What ingest needs of memory: ``Memory.retain`` (memory/facade.py) satisfies it."""

    async def retain(self, item: Mapping[str, Any], *, bank: str | None = None) -> str: ...


Trigger = Callable[[Sequence[str], str, Sequence[Event]], Awaitable[Processing]]
"""``trigger(symbols, correlation_id, events)``: start processing the symbols with the pushed events;
says what it did (``started``, ``deferred`` by admission, or ``skipped``)."""


def parse_batch(payload: object) -> ObservationBatch:
    """The envelope, or InputError naming the field (the whole request is refused)."""
    if not isinstance(payload, Mapping):
        raise InputError(
            "the body must be a JSON object {generated_at, observations}", field="body", rule="object"
        )
    try:
        return ObservationBatch.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InputError(f"{where}: {first['msg']}", field=where, rule=str(first["type"])) from None


class IngestService:
    def __init__(
        self,
        db: Database,
        repository: Repository,
        *,
        memory: Retainer | None = None,
        trigger: Trigger | None = None,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        self.db = db
        self.repository = repository
        self.memory = memory
        self.trigger = trigger
        self.threshold = threshold

    async def ingest(self, payload: object, *, correlation_id: str) -> IngestResult:
        batch = parse_batch(payload)
        items: list[ItemOutcome] = []
        pending: dict[str, Event] = {}  # key -> event: significant observations awaiting a run
        for index, raw in enumerate(batch.observations):
            outcome, obs = await self._one(index, raw, correlation_id)
            items.append(outcome)
            if obs is None or outcome.key is None or not outcome.significant or obs.symbol is None:
                continue
            if outcome.key in pending:
                continue
            # New, or stored by an earlier request whose processing never started (deferred by
            # admission, provider down): a re-send is how a caller retries it.
            if outcome.status == "accepted" or (
                outcome.status == "duplicate" and not await self._processed(outcome.key)
            ):
                pending[outcome.key] = obs.to_event(outcome.key)
        processing = await self._process(pending, correlation_id) if pending else None
        if processing is not None:
            items = [
                i.model_copy(update={"processing": self._item_processing(i, processing)})
                if i.key in pending
                else i
                for i in items
            ]
        for outcome, raw in zip(items, batch.observations, strict=True):
            await self._audit(outcome, raw, correlation_id)
        count = {
            s: sum(1 for i in items if i.status == s) for s in ("accepted", "duplicate", "rejected", "failed")
        }
        log.info("ingested batch", correlation_id=correlation_id, **count)
        return IngestResult(
            correlation_id=correlation_id,
            received=len(items),
            accepted=count["accepted"],
            duplicates=count["duplicate"],
            rejected=count["rejected"],
            failed=count["failed"],
            items=items,
            processing=processing,
        )

    async def _process(self, pending: Mapping[str, Event], correlation_id: str) -> Processing:
        symbols = list(dict.fromkeys(e.symbol for e in pending.values()))
        events = list(pending.values())
        if self.trigger is None:
            return Processing(symbols=symbols, status="skipped", skipped="processing not requested")
        processing = await self.trigger(symbols, correlation_id, events)
        if processing.status == "started":
            for key, event in pending.items():
                if event.symbol in processing.symbols:
                    await self._mark_processed(key, event.symbol, processing.run_id, correlation_id)
        return processing

    @staticmethod
    def _item_processing(item: ItemOutcome, processing: Processing) -> ProcessingStatus:
        if processing.status == "started" and item.symbol not in processing.symbols:
            return "skipped"  # unknown to the provider: named in processing.skipped
        return processing.status

    async def _processed(self, key: str) -> bool:
        return await self.repository.get_audit_by_key(f"{PROCESSED_ACTION}:{key}") is not None

    async def _mark_processed(self, key: str, symbol: str, run_id: str | None, correlation_id: str) -> None:
        # Once per observation, ever: the unique audit key is what makes a later re-send not re-run it.
        event = new_audit_event(
            PROCESSED_ACTION, "started", payload={"key": key, "runId": run_id}, correlation_id=correlation_id
        )
        await self.repository.record_audit(
            event, idempotency_key=f"{PROCESSED_ACTION}:{key}", run_id=run_id, symbol=symbol
        )

    async def _one(
        self, index: int, raw: object, correlation_id: str
    ) -> tuple[ItemOutcome, Observation | None]:
        if not isinstance(raw, Mapping):
            rejected = ItemOutcome(
                index=index,
                status="rejected",
                errors=[ItemError(field="observation", rule="object", message="must be a JSON object")],
            )
            return rejected, None
        try:
            obs = Observation.model_validate(raw)
        except ValidationError as exc:
            return ItemOutcome(index=index, status="rejected", errors=item_errors(exc)), None
        key = obs.idempotency_key()
        significant = obs.is_significant(self.threshold)
        base = ItemOutcome(
            index=index, status="accepted", key=key, type=obs.type, symbol=obs.symbol, significant=significant
        )
        if await self._known(key):
            return base.model_copy(update={"status": "duplicate"}), obs
        memory_id = None
        bank = bank_for(obs.type) if significant else None
        if bank is not None and self.memory is not None:
            try:
                memory_id = await self.memory.retain(self._memory_item(obs, key, correlation_id), bank=bank)
            except Exception as exc:  # not stored either: a re-send retries it
                log.warning("could not retain an observation", key=key, error=str(exc))
                failed = base.model_copy(
                    update={
                        "status": "failed",
                        "errors": [ItemError(field="memory", rule="unavailable", message=str(exc))],
                    }
                )
                return failed, None
        inserted = await self._store(obs, key, significant, correlation_id)
        status = "accepted" if inserted else "duplicate"  # a concurrent request stored it first
        return base.model_copy(update={"status": status, "bank": bank, "memory_id": memory_id}), obs

    @staticmethod
    def _memory_item(obs: Observation, key: str, correlation_id: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            k: v
            for k, v in obs.model_dump(mode="json", exclude={"type", "symbol", "timestamp", "data"}).items()
            if v is not None
        }
        if obs.data:
            data["data"] = obs.data
        data["correlationId"] = correlation_id
        return {
            "ts": obs.timestamp,
            "type": obs.type,
            "symbol": obs.symbol,
            "tags": ["ingest", obs.type],
            "summary": obs.summary(),
            "data": data,
            "source": {"system": "jax-ingest", "ref": key},
            "document_id": f"ingest:{key}",
        }

    async def _known(self, key: str) -> bool:
        async with self.db.engine.connect() as conn:
            found = await conn.execute(
                sa.select(IngestedObservationRow.key).where(IngestedObservationRow.key == key)
            )
            return found.first() is not None

    async def _store(self, obs: Observation, key: str, significant: bool, correlation_id: str) -> bool:
        values = {
            "key": key,
            "type": obs.type,
            "symbol": obs.symbol,
            "timestamp": obs.timestamp,
            "significant": significant,
            "correlation_id": correlation_id,
            "observation": obs.model_dump(mode="json"),
            "received_at": utc_now(),
        }
        dialect = postgresql if self.db.dialect == "postgresql" else sqlite
        stmt = (
            dialect.insert(IngestedObservationRow)
            .values(values)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        async with self.db.transaction() as conn:
            result = await conn.execute(stmt)
            return bool(result.rowcount == 1)

    async def _audit(self, outcome: ItemOutcome, raw: object, correlation_id: str) -> None:
        key = outcome.key or raw_key(raw)
        event = new_audit_event(
            AUDIT_ACTION,
            _AUDIT_OUTCOME[outcome.status],  # type: ignore[arg-type]
            payload=outcome.model_dump(mode="json", exclude_none=True),
            error="; ".join(f"{e.field}: {e.message}" for e in outcome.errors) or None,
            correlation_id=correlation_id,
        )
        # Keyed per request and item: the same request retried is audited once, a new request again.
        await self.repository.record_audit(
            event,
            idempotency_key=f"{AUDIT_ACTION}:{correlation_id}:{outcome.index}:{key}",
            symbol=outcome.symbol,
        )
