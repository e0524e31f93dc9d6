"""The research service: providers in fallback order, each behind its resilience policies, with the
cache, the budget, the spend ledger and the audit of every outbound call.

One service lives as long as the orchestrator (its breakers and HTTP clients outlast a run); what is
per run (the market data, the run's budget) comes with each request. ``research`` never raises for a
provider's failure: it answers with a bundle, or with provenance saying research is unavailable and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jax_assistant.domain import AuditEvent, AuditOutcome, ResearchBundle, ResearchProvenance, utc_now
from jax_assistant.marketdata.base import MarketDataProvider
from jax_assistant.observability.logging import get_logger
from jax_assistant.observability.metrics import MetricsSink, NullMetrics
from jax_assistant.observability.redaction import redact
from jax_assistant.pipeline.resilience import CallNotPermittedError, ResilienceRegistry, call_with_retry
from jax_assistant.research.base import OutcomeHistory, ProviderAnswer, ResearchProvider, ResearchRequest
from jax_assistant.research.budget import Budget
from jax_assistant.research.builtin import BuiltinProvider
from jax_assistant.research.config import ResearchConfig
from jax_assistant.research.http import BudgetExhaustedError, ResearchError
from jax_assistant.research.llm import LLMProvider
from jax_assistant.research.memory_history import MemoryHistory, MemoryRecall
from jax_assistant.research.store import ResearchStore, StorageHistory
from jax_assistant.storage.db import Database
from jax_assistant.storage.repository import Repository

log = get_logger("jax_assistant.research")
T = TypeVar("T")


@dataclass
class ResearchOutcome:
    bundle: ResearchBundle | None
    provenance: ResearchProvenance


@dataclass
class _Pending:
    requests: list[tuple[ResearchRequest, asyncio.Future[ProviderAnswer]]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class ResearchService:
    def __init__(
        self,
        config: ResearchConfig,
        *,
        resilience: ResilienceRegistry,
        remote: Sequence[ResearchProvider] = (),
        store: ResearchStore | None = None,
        audit: Repository | None = None,
        history: OutcomeHistory | None = None,
        metrics: MetricsSink | None = None,
        seed: int | None = None,
    ) -> None:
        self.config = config
        self.metrics: MetricsSink = metrics or NullMetrics()
        self.resilience = resilience
        self.remote = {p.name: p for p in remote}
        self.store = store
        self.audit = audit
        self.history = history
        self.rng = random.Random(seed)
        limits = config.llm.budget
        self.budget = Budget(limits, provider="llm", day_spend=self._day_spend)
        self._pending: dict[tuple[str, tuple[str, ...]], _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(
        cls,
        config: ResearchConfig,
        *,
        resilience: ResilienceRegistry,
        db: Database | None,
        history: OutcomeHistory | None = None,
        metrics: MetricsSink | None = None,
    ) -> ResearchService:
        """The providers ``config`` names; a remote one that is not configured is left out (and said so
        in every provenance that would have used it) rather than failing the whole run."""
        remote: list[ResearchProvider] = []
        if "dexter" in config.providers:
            url = config.dexter.url or os.environ.get("DEXTER_SERVICE_URL")
            if url:
                # Imported only when configured: its response models cost a run without it ~15 ms.
                from jax_assistant.research.dexter import DexterProvider

                remote.append(DexterProvider(config.dexter, url))
        if "llm" in config.providers and config.llm.base_url:
            remote.append(LLMProvider(config.llm))
        return cls(
            config,
            resilience=resilience,
            remote=remote,
            store=ResearchStore(db) if db is not None else None,
            audit=Repository(db) if db is not None else None,
            history=history or (StorageHistory(db) if db is not None else None),
            metrics=metrics,
        )

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for provider in self.remote.values():
            with contextlib.suppress(Exception):
                await provider.aclose()

    async def _day_spend(self, day: Any) -> Any:
        from jax_assistant.research.store import Spend

        return await self.store.spend(day=day) if self.store is not None else Spend()

    # ------------------------------------------------------------------ the one entry point

    async def research(
        self,
        request: ResearchRequest,
        *,
        market: MarketDataProvider,
        event_key: str | None,
        memory: MemoryRecall | None = None,
    ) -> ResearchOutcome:
        """Research ``request``; with ``memory`` (the run's memory facade) past outcomes come from it."""
        history = MemoryHistory(memory, self.history) if memory is not None else self.history
        builtin = BuiltinProvider(market, history)
        fallbacks: list[str] = []
        for name in self.config.providers:
            t0 = time.perf_counter()
            try:
                if name == "builtin":
                    answer, source = await builtin.research(request), "fresh"
                else:
                    answer, source = await self._remote(name, request, builtin, event_key)
            except Exception as exc:  # any provider failure: note it and fall back to the next
                reason = _reason(name, exc)
                fallbacks.append(reason)
                await self._audit_failure(request, name, reason)
                continue
            return ResearchOutcome(
                answer.bundle,
                ResearchProvenance(
                    status="ok",
                    provider=name,
                    source="cached" if source == "cached" else "fresh",
                    latency_ms=None
                    if name == "builtin" or source == "cached"
                    else round((time.perf_counter() - t0) * 1000.0, 3),
                    tokens=answer.tokens,
                    cost=answer.cost,
                    questions=list(request.questions),
                    fallbacks=fallbacks,
                ),
            )
        reason = "; ".join(fallbacks) or "no research provider configured"
        return ResearchOutcome(
            None,
            ResearchProvenance(
                status="unavailable", questions=list(request.questions), reason=reason, fallbacks=fallbacks
            ),
        )

    async def _remote(
        self, name: str, request: ResearchRequest, builtin: BuiltinProvider, event_key: str | None
    ) -> tuple[ProviderAnswer, str]:
        provider = self.remote.get(name)
        if provider is None:
            where = (
                "research.dexter.url or DEXTER_SERVICE_URL" if name == "dexter" else "research.llm.base_url"
            )
            raise ResearchError(f"{name}: not configured ({where} is not set)")
        ttl = self.config.cache_ttl_s
        if self.store is not None and ttl > 0:
            cached = await self.store.get(request.symbol, request.questions, name, event_key=event_key)
            if cached is not None:
                return ProviderAnswer(bundle=cached.bundle), "cached"
        if isinstance(provider, LLMProvider):
            answer = await self._paid(provider, request, builtin)
        elif provider.max_batch > 1:
            answer = await self._batched(provider, request)
        else:
            answer = await self._guarded(provider, [request], lambda: provider.research(request))
        if self.store is not None and ttl > 0:
            await self.store.put(
                request.symbol,
                request.questions,
                name,
                answer.bundle,
                event_key=event_key,
                ttl_s=ttl,
                tokens=answer.tokens,
                cost=answer.cost,
            )
        return answer, "fresh"

    async def _paid(
        self, provider: LLMProvider, request: ResearchRequest, builtin: BuiltinProvider
    ) -> ProviderAnswer:
        if request.facts is None:  # prompted with the built-in facts
            request = request.model_copy(update={"facts": await builtin.facts(request)})
        max_tokens = provider.config.max_tokens
        tokens, cost = provider.estimate(request, max_tokens)
        reservation = await self.budget.reserve(request.run_id, utc_now().date(), tokens, cost)
        answer: ProviderAnswer | None = None
        try:
            answer = await self._guarded(
                provider, [request], lambda: provider.research(request, max_tokens=max_tokens)
            )
        finally:
            spent = answer or ProviderAnswer(bundle=ResearchBundle(ticker=request.symbol))
            self.budget.settle(request.run_id, reservation, spent.tokens, spent.cost)
        if self.store is not None:
            await self.store.record_spend(
                run_id=request.run_id,
                symbol=request.symbol,
                provider=provider.name,
                prompt_tokens=answer.prompt_tokens,
                completion_tokens=answer.completion_tokens,
                cost=answer.cost,
            )
        return answer

    # ------------------------------------------------------------------ batching

    async def _batched(self, provider: ResearchProvider, request: ResearchRequest) -> ProviderAnswer:
        """Queue ``request`` with others asking the same questions; one call answers the batch when it
        is full or its window ends. A symbol the batch answer leaves out is an error for that symbol."""
        key = (provider.name, tuple(request.questions))
        pending = self._pending.setdefault(key, _Pending())
        future: asyncio.Future[ProviderAnswer] = asyncio.get_running_loop().create_future()
        pending.requests.append((request, future))
        if len(pending.requests) >= provider.max_batch:
            self._flush(provider, key)
        elif pending.timer is None:
            pending.timer = asyncio.get_running_loop().call_later(
                self.config.dexter.batch_window_s, self._flush, provider, key
            )
        return await future

    def _flush(self, provider: ResearchProvider, key: tuple[str, tuple[str, ...]]) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._answer_batch(provider, pending.requests))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_batch(
        self, provider: ResearchProvider, batch: list[tuple[ResearchRequest, asyncio.Future[ProviderAnswer]]]
    ) -> None:
        requests = [r for r, _ in batch]
        try:
            answers = await self._guarded(provider, requests, lambda: provider.research_batch(requests))
        except BaseException as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else ResearchError(str(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        for request, fut in batch:
            if fut.done():
                continue
            answer = answers.get(request.symbol)
            if answer is None:
                fut.set_exception(
                    ResearchError(f"{provider.name}: the batch answer left out {request.symbol}")
                )
            else:
                fut.set_result(answer)

    # ------------------------------------------------------------------ resilience + audit

    async def _guarded(
        self,
        provider: ResearchProvider,
        requests: Sequence[ResearchRequest],
        call: Callable[[], Awaitable[T]],
    ) -> T:
        """``call`` under the provider's breaker, rate limit and bulkhead (``research.<name>`` in
        ``[resilience]``) and retry policy; every attempt is audited under the run's id."""
        key = f"research.{provider.name}"
        reg = self.resilience
        breaker = reg.breaker(key)
        limiter = reg.limiter(key) if key in reg.config.rate_limits else None
        bulkhead = reg.bulkhead(key) if key in reg.config.bulkheads else None
        retry = self.config.llm.retry if provider.name == "llm" else self.config.dexter.retry
        attempts = 0

        async def attempt() -> T:
            nonlocal attempts
            attempts += 1
            permit = breaker.acquire()  # raises CallNotPermittedError while open
            settled = False
            try:
                if limiter is not None:
                    await limiter.acquire()
                async with bulkhead if bulkhead is not None else contextlib.nullcontext():
                    # Timed from here: waiting for the limiter or a bulkhead slot is not the provider
                    # being slow.
                    t0 = reg.clock.monotonic()
                    try:
                        out = await call()
                    except Exception as exc:
                        breaker.on_error(reg.clock.monotonic() - t0, exc, permit)
                        settled = True
                        self.metrics.observe_dependency(key, "error", reg.clock.monotonic() - t0)
                        await self._audit_call(provider.name, requests, attempts, "error", t0, str(exc))
                        raise
                    breaker.on_success(reg.clock.monotonic() - t0, permit)
                    settled = True
                    self.metrics.observe_dependency(key, "success", reg.clock.monotonic() - t0)
                    await self._audit_call(provider.name, requests, attempts, "success", t0, None)
                    return out
            except BaseException:
                if not settled:  # cancelled (or never called): neither a success nor a failure
                    breaker.release(permit)
                raise

        out, _ = await call_with_retry(attempt, retry, clock=reg.clock, rng=self.rng)
        return out

    async def _audit_call(
        self,
        provider: str,
        requests: Sequence[ResearchRequest],
        attempt: int,
        outcome: AuditOutcome,
        t0: float,
        error: str | None,
    ) -> None:
        first = requests[0]
        payload = {
            "provider": provider,
            "symbols": [r.symbol for r in requests],
            "attempt": attempt,
            "durationMs": round((self.resilience.clock.monotonic() - t0) * 1000.0, 3),
        }
        await self._record(first, f"research.call.{provider}", outcome, payload, error)

    async def _audit_failure(self, request: ResearchRequest, provider: str, reason: str) -> None:
        log.info("research provider failed", provider=provider, symbol=request.symbol, reason=reason)
        payload = {"provider": provider, "symbols": [request.symbol], "questions": request.questions}
        await self._record(request, "research.provider_failed", "error", payload, reason)

    async def _record(
        self,
        request: ResearchRequest,
        action: str,
        outcome: AuditOutcome,
        payload: dict[str, Any],
        error: str | None,
    ) -> None:
        if self.audit is None:
            return
        event = AuditEvent(
            id=f"au_{uuid.uuid4().hex}",
            correlation_id=request.correlation_id,
            action=action,
            outcome=outcome,
            payload=redact(payload),
            error=error,
        )
        try:
            symbol = request.symbol if len(payload.get("symbols", [])) <= 1 else None
            await self.audit.record_audit(
                event, idempotency_key=event.id, run_id=request.run_id, symbol=symbol
            )
        except Exception:  # the audit is best effort here: research itself must not fail on it
            log.warning("could not audit a research call", action=action, exc_info=True)


def _reason(provider: str, exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, CallNotPermittedError):
        return f"{provider}: circuit breaker open ({text})"
    if isinstance(exc, BudgetExhaustedError | ResearchError):
        return text if text.startswith(provider) else f"{provider}: {text}"
    if isinstance(exc, TimeoutError):
        return text if text.startswith(provider) else f"{provider}: timed out"
    detail = text if text.startswith(provider) else f"{provider}: {type(exc).__name__}: {text}"
    return detail[:500]
