"""The research provider interface and what flows through it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from jax_assistant.domain import Event, ResearchBundle


class ResearchRequest(BaseModel):
    """One question set about one symbol, asked on behalf of one run."""

    model_config = ConfigDict(extra="forbid")

    symbol: str
    questions: list[str]
    as_of: date
    run_id: str
    correlation_id: str
    strategy_ids: list[str] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list, description="the symbol's events in this run")
    # The builtin facts, handed to providers that are prompted with them (llm).
    facts: ResearchBundle | None = None


@dataclass
class ProviderAnswer:
    bundle: ResearchBundle
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    calls: list[str] = field(default_factory=list)  # remote tools called

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@runtime_checkable
class ResearchProvider(Protocol):
    """Answers research requests. ``paid`` providers go through the budget and the spend ledger;
    ``remote`` ones through the cache, the audit of outbound calls and the resilience policies
    (``research.<name>`` breaker, rate limit and bulkhead). ``max_batch > 1`` means
    ``research_batch`` answers several symbols (same questions) in one call."""

    name: str
    paid: bool
    remote: bool
    max_batch: int

    async def research(self, request: ResearchRequest) -> ProviderAnswer: ...

    async def research_batch(self, requests: Sequence[ResearchRequest]) -> dict[str, ProviderAnswer]: ...

    async def aclose(self) -> None: ...


class PastOutcomes(BaseModel):
    """What earlier setups of one symbol or strategy came to (before the run's date)."""

    model_config = ConfigDict(extra="forbid")

    setups: int = Field(default=0, ge=0)
    allowed: int = Field(default=0, ge=0)
    wins: int = Field(default=0, ge=0, description="known outcomes only (memory's trade_outcomes)")
    losses: int = Field(default=0, ge=0)
    last_session: date | None = None
    source: str = Field(default="storage", description="memory or storage")


class OutcomeHistory(Protocol):
    """Past decisions and outcomes, counted strictly before ``before`` (no look-ahead in replays).

    ``exclude_run``: leave out what that run itself stored. A run's own setups are written while it
    runs, so counting them would make its research depend on which symbols happened to persist
    first: the same inputs would store different text at another concurrency."""

    async def for_symbol(
        self, symbol: str, *, before: date, exclude_run: str | None = None
    ) -> PastOutcomes: ...

    async def for_strategy(
        self, strategy_id: str, *, before: date, exclude_run: str | None = None
    ) -> PastOutcomes: ...
