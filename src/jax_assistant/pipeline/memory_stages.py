"""The memory stages: ``recall_memory`` (first) and ``retain_memory`` (last, after ``persist``).

Both are OPTIONAL: memory being down degrades a symbol, it never fails it.

- ``recall_memory`` (per symbol) puts what memory knows into ``item.extras["recall_memory"]``: the
  symbol's recent decisions and outcomes and the current strategy beliefs (the same for every symbol of
  a run, so recalled once per run). Decisions and outcomes are recalled for ALL the run's symbols in one
  batched recall per bank (``Memory.recall_many``) made by the first symbol to ask; each symbol takes
  its slice: the same items a recall per symbol returns, for one query instead of one per symbol. Later
  stages and reports read it from there; it is checkpointed with the item like every other stage output.
- ``retain_memory`` (run level, so the whole run is ONE ``retain_many``) retains one decision per symbol
  and event, in the contract's decision shape, with the document id ``decision:<SYMBOL>:<event id>``:
  a rerun, retry or resume of the same event replaces that memory instead of adding one. When memory
  cannot be reached the decisions go to the outbox (``memory/outbox.py``) and the symbols end degraded;
  what the outbox held from earlier outages is drained first, so memories arrive in order.

The stage takes no engine breaker on purpose: a short-circuited retain would never reach the outbox.
It bounds its own wait instead (``RETAIN_TIMEOUT_S``, below the stage timeout) and keeps what it could
not deliver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import date
from typing import Any, ClassVar, Final

from jax_assistant.domain import Event, TradeRecord
from jax_assistant.domain.models import session_time
from jax_assistant.memory.base import MemoryUnavailableError
from jax_assistant.memory.facade import Memory
from jax_assistant.memory.models import Bank, MemoryItem, MemoryQuery, MemorySource
from jax_assistant.memory.outbox import MemoryOutbox
from jax_assistant.memory.remote import MemoryAuthError
from jax_assistant.observability.correlation import bind_correlation_id
from jax_assistant.observability.logging import get_logger
from jax_assistant.observability.redaction import RedactedJson, redacted_dumps
from jax_assistant.pipeline.base import (
    BaseRunStage,
    BaseStage,
    RunStageOutput,
    StageContext,
    StageOutput,
    WorkItem,
)
from jax_assistant.pipeline.policy import StagePolicy

log = get_logger("jax_assistant.pipeline.memory")

DECISION_TYPE: Final = "decision"
ORCHESTRATOR_SYSTEM: Final = "jax-orchestrator"
DECISION_FALLBACK_SUMMARY: Final = "Decision recorded."
RECALL_LIMIT: Final = 5
# Within the stage's 30 s timeout, so a hung memory leaves time to put the batch in the outbox.
RETAIN_TIMEOUT_S: Final = 10.0
_MAX_TAGS: Final = 10


def _memory(ctx: StageContext) -> Memory | None:
    memory: Memory | None = getattr(ctx.services, "memory", None)
    return memory


def _dump(items: Sequence[MemoryItem]) -> list[dict[str, Any]]:
    return [i.model_dump(mode="json", by_alias=True, exclude_none=True) for i in items]


class RecallMemoryStage(BaseStage):
    """What memory holds about the symbol, attached before detection runs."""

    name = "recall_memory"
    leaves_input_intact = True  # built-in: returns changes through model_copy
    default_policy: ClassVar[StagePolicy] = StagePolicy(timeout_s=5.0, required=False, breaker="memory")

    def __init__(self, policy: StagePolicy | None = None) -> None:
        super().__init__(policy)
        # Per run, not per symbol: which banks hold anything, and the current beliefs (run id -> tasks).
        self._shared: dict[str, dict[str, asyncio.Task[Any]]] = {}

    def _once(self, run_id: str, key: str, make: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
        tasks = self._shared.get(run_id)
        if tasks is None:
            tasks = {}
            self._shared = {run_id: tasks}  # one run per stage instance at a time: drop older runs
        task = tasks.get(key)
        if task is None or (task.done() and not task.cancelled() and task.exception() is not None):
            task = tasks[key] = asyncio.ensure_future(make())
        return task

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        memory = _memory(ctx)
        if memory is None:
            return StageOutput(item=item, status="skipped", reason="memory not configured")
        # The run's correlation id on every call, so a remote memory audits under it.
        with bind_correlation_id(ctx.correlation_id):
            # A recall costs ~1.5 ms even on an empty bank; 505 symbols x 2 banks adds up, so banks that
            # hold nothing (no outcomes before the learning loop writes any) are not asked at all.
            banks = set(await asyncio.shield(self._once(item.run_id, "banks", memory.banks)))
            beliefs: list[MemoryItem] = []
            if Bank.STRATEGY_BELIEFS.value in banks:
                query = MemoryQuery(types=["belief"], limit=RECALL_LIMIT)
                beliefs = await asyncio.shield(
                    self._once(
                        item.run_id, "beliefs", lambda: memory.recall(query, bank=Bank.STRATEGY_BELIEFS.value)
                    )
                )
            decisions: list[MemoryItem] = []
            if Bank.TRADE_DECISIONS.value in banks:
                decisions = await self._recall_symbol(
                    ctx,
                    memory,
                    item,
                    Bank.TRADE_DECISIONS.value,
                    lambda s: MemoryQuery(symbol=s, types=[DECISION_TYPE], limit=RECALL_LIMIT),
                )
            outcomes: list[MemoryItem] = []
            if Bank.TRADE_OUTCOMES.value in banks:
                outcomes = await self._recall_symbol(
                    ctx,
                    memory,
                    item,
                    Bank.TRADE_OUTCOMES.value,
                    lambda s: MemoryQuery(symbol=s, limit=RECALL_LIMIT),
                )
        recalled = {
            "decisions": _dump(_newest_first(decisions)),
            "outcomes": _dump(_newest_first(outcomes)),
            "beliefs": _dump(beliefs),
        }
        return StageOutput(item=item.model_copy(update={"extras": {**item.extras, self.name: recalled}}))

    async def _recall_symbol(
        self,
        ctx: StageContext,
        memory: Memory,
        item: WorkItem,
        bank: str,
        query_for: Callable[[str], MemoryQuery],
    ) -> list[MemoryItem]:
        """``memory.recall(query_for(item.symbol), bank=bank)``, answered from one batched recall of
        every symbol of the run (made by the first symbol to ask, shared by the rest of the run)."""
        symbols = await asyncio.shield(self._once(item.run_id, "symbols", lambda: _run_symbols(ctx)))
        if item.symbol not in symbols:  # no stored run to read the symbols from: recall alone
            return await memory.recall(query_for(item.symbol), bank=bank)

        async def batch() -> dict[str, list[MemoryItem]]:
            queries = [query_for(s) for s in symbols]
            return dict(zip(symbols, await memory.recall_many(queries, bank=bank), strict=True))

        by_symbol: dict[str, list[MemoryItem]] = await asyncio.shield(
            self._once(item.run_id, f"recall:{bank}", batch)
        )
        return by_symbol[item.symbol]


async def _run_symbols(ctx: StageContext) -> list[str]:
    """The run's symbols (from its stored record), so one query can recall for all of them."""
    repository = ctx.services.repository
    run = await repository.get_run(ctx.run_id) if repository is not None else None
    return list(dict.fromkeys(run.symbols)) if run is not None else []


def _newest_first(items: Sequence[MemoryItem]) -> list[MemoryItem]:
    return sorted(items, key=lambda i: (i.ts is not None, i.ts), reverse=True)


def decision_document_id(symbol: str, event: Event | None, session: date) -> str:
    """``decision:<SYMBOL>:<event id>``, or ``decision:<SYMBOL>:<session>`` for setups of no event."""
    return (
        f"decision:{symbol}:{event.id}" if event is not None else f"decision:{symbol}:{session.isoformat()}"
    )


def _trade_json(trade: TradeRecord) -> dict[str, Any]:
    # Setup and risk only: created_at is wall clock and would make every rerun's content differ.
    # Redacted here, from the models' schemas (most of a decision's data, walked key by key otherwise),
    # so the retain's redaction passes it as it is.
    return redacted_dumps({"setup": trade.setup, "risk": trade.risk})


def _summary(symbol: str, what: str, trades: Sequence[TradeRecord]) -> str:
    if not trades:
        return f"{symbol} {what}: no setup."
    allowed = [t for t in trades if t.risk.allowed]
    parts = [f"{symbol} {what}: {len(trades)} setup(s), {len(allowed)} allowed"]
    for trade in allowed[:3]:
        setup = trade.setup
        parts.append(
            f"{setup.strategy_id} {setup.direction.value} {trade.risk.position_size} @ {setup.entry:g}"
            f" stop {setup.stop:g}"
        )
    return "; ".join(parts)[:500]


def decision_items(item: WorkItem, *, run_id: str) -> list[MemoryItem]:
    """One decision memory per event of the symbol, plus one for its setups that answer no event (code
    strategies), in the contract's decision shape."""
    by_event: dict[str | None, list[TradeRecord]] = {e.id: [] for e in item.events}
    for trade in item.trades:
        key = trade.setup.event_id or (trade.event.id if trade.event else None)
        by_event.setdefault(key if key in by_event else None, []).append(trade)
    events = {e.id: e for e in item.events}
    # Every decision of the symbol carries them all: redacted and encoded once here, not per decision.
    signals = [
        RedactedJson.encoded({"id": e.id, "type": e.type, "time": e.time.isoformat(), "payload": e.payload})
        for e in item.events
    ]
    out = []
    for key, trades in by_event.items():
        event = events.get(key) if key is not None else None
        research = next((t.setup.research for t in trades if t.setup.research is not None), None)
        strategies = sorted({t.setup.strategy_id for t in trades})
        kind = f"event:{event.type}" if event is not None else "event:none"
        tags = ["decision", kind, *(f"strategy:{s}" for s in strategies)]
        doc = decision_document_id(item.symbol, event, item.as_of)
        what = f"{event.type} on {event.session.isoformat()}" if event else f"on {item.as_of.isoformat()}"
        out.append(
            MemoryItem(
                id=doc,
                document_id=doc,
                ts=event.time if event is not None else session_time(item.as_of),
                type=DECISION_TYPE,
                symbol=item.symbol,
                tags=tags[:_MAX_TAGS],
                summary=_summary(item.symbol, what, trades) or DECISION_FALLBACK_SUMMARY,
                data={
                    "inputs": {
                        "symbol": item.symbol,
                        "asOf": item.as_of.isoformat(),
                        "lookback": item.lookback,
                        "event": event.to_contract() if event is not None else None,
                        "dataIssues": item.data_issues[-5:],
                    },
                    "setups": [_trade_json(t) for t in trades],
                    "research": {"summary": research.summary if research else None},
                    "signals": signals,
                },
                source=MemorySource(system=ORCHESTRATOR_SYSTEM, ref=run_id),
            )
        )
    return out


class RetainMemoryStage(BaseRunStage):
    """Every symbol's decisions of the run, retained in one batch (or kept in the outbox)."""

    name = "retain_memory"
    leaves_input_intact = True  # built-in: returns changes through model_copy
    default_policy: ClassVar[StagePolicy] = StagePolicy(timeout_s=30.0, required=False, after=["persist"])

    async def run_all(self, ctx: StageContext, items: Sequence[WorkItem]) -> RunStageOutput:
        memory = _memory(ctx)
        if memory is None:
            return RunStageOutput(items=list(items), status="skipped", reason="memory not configured")
        decisions = [d for item in items for d in decision_items(item, run_id=ctx.run_id)]
        outbox: MemoryOutbox | None = getattr(ctx.services, "memory_outbox", None)
        bank = Bank.TRADE_DECISIONS.value
        try:
            with bind_correlation_id(ctx.correlation_id):
                await self._deliver(memory, outbox, decisions, bank)
        except (MemoryUnavailableError, MemoryAuthError, TimeoutError) as exc:
            # A refused key is a config error, not an outage, but the decisions are kept all the same:
            # once the key is fixed the outbox delivers them.
            reason = str(exc) or "memory timed out"
            if outbox is None or not decisions:
                if not decisions:
                    return RunStageOutput(
                        items=list(items), status="skipped", reason="no decisions to retain"
                    )
                raise
            kept = await outbox.enqueue(bank, decisions, error=reason, correlation_id=ctx.correlation_id)
            log.warning("memory unavailable: decisions kept in the outbox", kept=kept, error=reason)
            return RunStageOutput(
                items=list(items),
                status="degraded",
                reason=f"memory unavailable, {kept} kept in outbox: {reason}",
            )
        if not decisions:
            return RunStageOutput(items=list(items), status="skipped", reason="no decisions to retain")
        return RunStageOutput(items=list(items))

    @staticmethod
    async def _deliver(
        memory: Memory, outbox: MemoryOutbox | None, decisions: list[MemoryItem], bank: str
    ) -> None:
        async with asyncio.timeout(RETAIN_TIMEOUT_S):
            if outbox is not None:
                # What earlier outages left goes first: memories arrive in the order they were made.
                report = await outbox.drain(memory)
                if report.remaining:
                    raise MemoryUnavailableError(report.error or "memory outbox could not be drained")
            if decisions:
                await memory.retain_many(decisions, bank=bank)


MEMORY_STAGES = {s.name: s for s in (RecallMemoryStage, RetainMemoryStage)}
