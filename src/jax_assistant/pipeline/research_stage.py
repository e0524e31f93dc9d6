"""The ``research`` stage: research for every ALLOCATED setup, after the run's allocation.

Optional by default: a provider that fails, hangs or runs out of budget never fails a symbol. Each
allocated setup gets ``research`` (the bundle) and ``research_provenance`` (provider, cached/fresh,
latency, tokens, cost), or provenance ``status="unavailable"`` with the reason, and the symbol ends
``degraded``. Setups that were not allocated are left alone: nobody trades them, so nobody pays for
their research. Providers, fallback order, cache and budgets: ``[research]`` (docs/research.md).
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from jax_assistant.domain import Event, ResearchBundle, ResearchProvenance, TradeRecord
from jax_assistant.pipeline.base import BaseStage, StageContext, StageOutput, WorkItem
from jax_assistant.pipeline.policy import ResilienceConfig, StagePolicy
from jax_assistant.pipeline.resilience import ResilienceRegistry
from jax_assistant.pipeline.services import Services
from jax_assistant.research.base import ResearchRequest
from jax_assistant.research.config import ResearchConfig
from jax_assistant.research.questions import choose_questions
from jax_assistant.research.service import ResearchOutcome, ResearchService

_FALLBACK_SERVICE: ResearchService | None = None


def _service(services: Services) -> ResearchService:
    """The run's research service, or (no orchestrator wired one in) a builtin-only default."""
    global _FALLBACK_SERVICE
    if services.research is not None:
        return services.research
    if _FALLBACK_SERVICE is None:
        config = ResearchConfig()
        _FALLBACK_SERVICE = ResearchService(config, resilience=ResilienceRegistry(ResilienceConfig()))
    return _FALLBACK_SERVICE


def event_key(events: list[Event]) -> str | None:
    """The symbol's newest event: a cached answer older than it is stale."""
    if not events:
        return None
    return max(events, key=lambda e: (e.time, e.id)).id


class ResearchStage(BaseStage):
    name = "research"
    leaves_input_intact = True  # built-in: returns changes through model_copy
    # The timeout bounds the whole stage for a symbol; each provider call has its own (tens of seconds
    # for Dexter), and a run of fallbacks must still fit.
    default_policy: ClassVar[StagePolicy] = StagePolicy(timeout_s=600.0, required=False, after=["allocate"])

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        allocated = [i for i, t in enumerate(item.trades) if t.risk.allowed]
        if not allocated:
            return StageOutput(item=item, status="skipped", reason="no allocated setups to research")
        service = _service(ctx.services)
        events = {e.id: e for e in item.events}
        # One request per question set: setups of one symbol asking the same questions share an answer.
        groups: dict[tuple[str, ...], list[int]] = {}
        for i in allocated:
            setup = item.trades[i].setup
            event = events.get(setup.event_id) if setup.event_id else None
            questions = choose_questions(
                setup.strategy_id, event.type if event else None, service.config.questions
            )
            groups.setdefault(tuple(questions), []).append(i)
        key = event_key(item.events)
        # The memory facade, once the services carry one (another module owns it): past outcomes.
        memory = getattr(ctx.services, "memory", None)

        async def ask(questions: tuple[str, ...], members: list[int]) -> ResearchOutcome:
            request = ResearchRequest(
                symbol=item.symbol,
                questions=list(questions),
                as_of=item.as_of,
                run_id=ctx.run_id,
                correlation_id=ctx.correlation_id,
                strategy_ids=sorted({item.trades[i].setup.strategy_id for i in members}),
                events=item.events,
            )
            return await service.research(request, market=ctx.services.provider, event_key=key, memory=memory)

        outcomes = await asyncio.gather(*(ask(q, m) for q, m in groups.items()))
        trades = list(item.trades)
        unavailable: list[str] = []
        for (_, members), outcome in zip(groups.items(), outcomes, strict=True):
            if outcome.provenance.status == "unavailable":
                unavailable.append(outcome.provenance.reason or "unknown reason")
            for i in members:
                trades[i] = _attach(trades[i], outcome.bundle, outcome.provenance)
        by_id = {t.setup.id: t.setup for t in trades}
        setups = [by_id.get(s.id, s) for s in item.setups]
        out = item.model_copy(update={"trades": trades, "setups": setups})
        if unavailable:
            reason = f"research: unavailable ({'; '.join(dict.fromkeys(unavailable))})"
            return StageOutput(item=out, status="degraded", reason=reason[:1000])
        return StageOutput(item=out)


def _attach(trade: TradeRecord, bundle: ResearchBundle | None, provenance: ResearchProvenance) -> TradeRecord:
    setup = trade.setup.model_copy(update={"research": bundle, "research_provenance": provenance})
    return trade.model_copy(update={"setup": setup})
