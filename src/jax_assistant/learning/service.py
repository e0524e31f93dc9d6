"""Reflection as a service: settle, reflect, record; and the weights a run reads back.

A reflection is recorded as an audit event (correlation id ``learning.reflect``) holding the beliefs
and the strategy weights they imply: the audit trail says which beliefs shaped later setups, and
``jax run`` reads the newest one back (``latest_weights``). With no reflection recorded, nothing
changes anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Final

import structlog
from pydantic import BaseModel, ConfigDict, Field

from jax_assistant.domain import AuditEvent, utc_now
from jax_assistant.learning.outcomes import outcome_memory_item, settle
from jax_assistant.learning.reasoner import LLMReasoner, ReasonerOutcome
from jax_assistant.memory.beliefs import Belief, OutcomeEvidence, reflect_outcomes
from jax_assistant.risk.portfolio import PortfolioBook
from jax_assistant.risk.protections import RealisedTrade, state_from_outcomes
from jax_assistant.strategies.weighting import StrategyWeight, apply_weights, strategy_weights

if TYPE_CHECKING:
    from jax_assistant.config import Settings
    from jax_assistant.marketdata.base import MarketDataProvider
    from jax_assistant.memory.facade import Memory
    from jax_assistant.memory.models import MemoryItem
    from jax_assistant.memory.outbox import MemoryOutbox
    from jax_assistant.orchestrator import Orchestrator
    from jax_assistant.pipeline.services import Services
    from jax_assistant.storage.repository import Repository
    from jax_assistant.strategies.registry import StrategyRegistry

_log = structlog.get_logger(__name__)
REFLECTION_CORRELATION: Final = "learning.reflect"
# When this process last reflected (shown in /status); None until it has.
last_reflection: dict[str, Any] = {"at": None, "asOf": None, "beliefs": 0}


def evidence_from_rows(rows: list[dict[str, Any]]) -> list[OutcomeEvidence]:
    """Settled, filled outcomes (an unfilled setup traded nothing and is no evidence)."""
    return [
        OutcomeEvidence(
            setup_id=r["setup_id"],
            strategy_id=r["strategy_id"],
            symbol=r["symbol"],
            event_type=r["event_type"],
            exit_on=r["exit_on"],
            r_multiple=r["r_multiple"],
        )
        for r in rows
        if r["status"] != "unfilled" and r["exit_on"] is not None
    ]


async def _retain(
    memory: Memory | None, outbox: MemoryOutbox | None, bank: str, items: list[MemoryItem]
) -> int:
    """Retain ``items`` (idempotent by document id); when memory is down they wait in the outbox."""
    if memory is None or not items:
        return 0
    try:
        await memory.retain_many(items, bank=bank)
    except Exception as exc:  # an outage must not lose what was learned, nor fail the reflection
        if outbox is None:
            _log.warning("could not retain to memory", bank=bank, items=len(items), error=str(exc))
            return 0
        await outbox.enqueue(bank, items, error=str(exc))
    return len(items)


async def reflect_once(
    repo: Repository,
    provider: MarketDataProvider,
    settings: Settings,
    *,
    as_of: date,
    memory: Memory | None = None,
    outbox: MemoryOutbox | None = None,
    reasoner: LLMReasoner | None = None,
) -> dict[str, Any]:
    """Settle, reflect and record; with ``memory``, the settled outcomes go to the ``trade_outcomes``
    bank and the beliefs to ``strategy_beliefs`` (what ``recall_memory`` hands later runs).

    With ``learning.reasoner = "llm"`` (or a ``reasoner`` passed in) the LLM adds ``llm_insight``
    beliefs read from the track records; the weights are computed from the track records alone either
    way (``learning/reasoner.py`` says why), and a failed model call falls back, saying so."""
    cfg = settings.learning
    report = await settle(repo, provider, cfg.outcomes, as_of=as_of)
    rows = await repo.list_outcomes(exited_through=as_of)
    beliefs = reflect_outcomes(
        evidence_from_rows(rows),
        as_of=as_of,
        window_days=cfg.window_days,
        prior_strength=cfg.weighting.prior_strength,
    )
    weights = strategy_weights(beliefs, cfg.weighting)
    thought = await _llm_insights(reasoner, settings, beliefs, as_of)
    now = utc_now()
    payload = {
        "asOf": as_of.isoformat(),
        "beliefs": [b.data().model_dump(mode="json", by_alias=True) | {"id": b.id} for b in beliefs],
        "weights": {sid: w.model_dump(mode="json") for sid, w in weights.items()},
        "reasoner": thought.status(),
        "insights": [{"summary": i.summary, **(i.data or {})} for i in thought.insights],
    }
    event_id = f"reflect:{as_of.isoformat()}:{len(rows)}:{now.isoformat()}"
    await repo.record_audit(
        AuditEvent(
            id=event_id,
            correlation_id=REFLECTION_CORRELATION,
            action="learning.reflect",
            outcome="success",
            timestamp=now,
            payload=payload,
        ),
        idempotency_key=event_id,
    )
    last_reflection.update(at=now.isoformat(), asOf=as_of.isoformat(), beliefs=len(beliefs))
    settled_rows = [r for r in rows if r["status"] in ("target", "stop", "expired")]
    retained = {
        "trade_outcomes": await _retain(
            memory, outbox, "trade_outcomes", [outcome_memory_item(r) for r in settled_rows]
        ),
        "strategy_beliefs": await _retain(
            memory, outbox, "strategy_beliefs", [b.to_memory_item() for b in beliefs] + thought.insights
        ),
    }
    return {
        "asOf": as_of.isoformat(),
        "retained": retained,
        "settled": report.model_dump(mode="json"),
        "beliefs": payload["beliefs"],
        "summaries": [b.summary for b in beliefs if b.belief_type == "strategy_track_record"],
        "weights": payload["weights"],
        "reasoner": payload["reasoner"],
        "insights": payload["insights"],
    }


async def _llm_insights(
    reasoner: LLMReasoner | None, settings: Settings, beliefs: list[Belief], as_of: date
) -> ReasonerOutcome:
    if reasoner is None and settings.learning.reasoner == "llm":
        own = LLMReasoner(settings.learning.llm)
        try:
            return await own.reflect(beliefs, as_of=as_of, correlation_id=REFLECTION_CORRELATION)
        finally:
            await own.aclose()
    if reasoner is None:
        return ReasonerOutcome(reasoner="local")
    return await reasoner.reflect(beliefs, as_of=as_of, correlation_id=REFLECTION_CORRELATION)


async def latest_weights(
    repo: Repository, *, reflection_id: str | None = None
) -> tuple[str | None, dict[str, StrategyWeight]]:
    """The newest recorded reflection's weights (and its audit id), or those of ``reflection_id``;
    empty when none was recorded."""
    events = await repo.list_audit(correlation_id=REFLECTION_CORRELATION, limit=100_000)
    if reflection_id is not None:
        events = [e for e in events if e.id == reflection_id]
    if not events:
        return None, {}
    newest = max(events, key=lambda e: (e.timestamp, e.id))
    raw = newest.payload.get("weights") or {}
    return newest.id, {sid: StrategyWeight.model_validate(w) for sid, w in raw.items()}


async def apply_latest_beliefs(
    repo: Repository | None, registry: StrategyRegistry, *, reflection_id: str | None = None
) -> str | None:
    """Point ``registry`` at the newest reflection's weights (or ``reflection_id``'s); returns its
    audit id (None: no change)."""
    if repo is None:
        return None
    ref, weights = await latest_weights(repo, reflection_id=reflection_id)
    if weights:
        apply_weights(registry, weights)
    return ref


def status() -> dict[str, Any]:
    """The ``learning`` block of ``/status``: when this process last reflected, on which date."""
    return {
        "lastReflection": last_reflection["at"],
        "asOf": last_reflection["asOf"],
        "beliefs": last_reflection["beliefs"],
    }


async def reflect_periodically(orch: Orchestrator) -> None:
    """``jax serve``'s schedule: reflect every ``learning.reflect_interval_s`` seconds (first after
    one interval). A failed pass is logged and the schedule goes on."""
    interval = orch.settings.learning.reflect_interval_s
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        try:
            provider = orch.provider()
            assert orch.repository is not None
            await reflect_once(
                orch.repository,
                provider,
                orch.settings,
                as_of=provider.latest_date(),
                memory=orch.memory,
                outbox=orch.memory_outbox,
            )
        except Exception as exc:  # the service must outlive a bad pass (storage blip, data error)
            _log.warning("reflection failed", error=str(exc))


def start_reflector(orch: Orchestrator) -> asyncio.Task[None]:
    return asyncio.create_task(reflect_periodically(orch), name="jax-reflect")


async def stop_reflector(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class LearningPin(BaseModel):
    """What a run took from learning when it started, kept in its params (``learning``) so that
    ``jax run --resume`` decides with the same weights and protections even if a reflection or a
    settlement happened in between. ``None`` in a field: nothing of that kind was applied."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    reflection: str | None = Field(
        default=None, description="audit id of the reflection whose weights applied"
    )
    settled_through: datetime | None = Field(
        default=None, alias="settledThrough", description="newest settlement the protections saw"
    )

    def is_empty(self) -> bool:
        return self.reflection is None and self.settled_through is None


async def feed_run(
    repo: Repository | None, services: Services, as_of: date, *, pin: LearningPin | None = None
) -> LearningPin:
    """What a ``jax run`` as of ``as_of`` takes from learning: the newest reflection's weights and the
    protections' state moved on by the realised (allowed, settled) trades that closed by ``as_of``.
    With ``pin`` (a resumed run) exactly what the run took when it started, however much was learned
    since. With nothing recorded nothing changes. Returns what was applied, to pin in the run."""
    if repo is None:
        return LearningPin()
    if pin is None:
        ref = await apply_latest_beliefs(repo, services.strategies)
    elif pin.reflection is not None:
        ref = await apply_latest_beliefs(repo, services.strategies, reflection_id=pin.reflection)
    else:
        ref = None
    rows = [r for r in await repo.list_outcomes(exited_through=as_of) if r["allowed"] and r["position_size"]]
    if pin is not None:
        cutoff = pin.settled_through
        rows = [] if cutoff is None else [r for r in rows if _aware(r["settled_at"]) <= cutoff]
    if rows:
        realised = [
            RealisedTrade(r["symbol"], r["exit_on"], float(r["pnl"]), stopped=r["status"] == "stop")
            for r in rows
        ]
        book = services.risk.book
        state = await book.snapshot()
        services.risk.book = PortfolioBook(state_from_outcomes(state, realised, as_of=as_of))
    settled = max((_aware(r["settled_at"]) for r in rows), default=None)
    return LearningPin(reflection=ref, settled_through=settled)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they are stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
