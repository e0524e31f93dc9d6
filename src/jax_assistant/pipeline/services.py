"""The shared services a stage may use, built once per run and handed to every stage via its context."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from jax_assistant.analysis.detectors import DetectorConfig
from jax_assistant.domain import Event, TradeRecord
from jax_assistant.marketdata.base import MarketDataProvider
from jax_assistant.risk.manager import RiskManager
from jax_assistant.storage.repository import Repository
from jax_assistant.strategies.registry import StrategyRegistry

if TYPE_CHECKING:
    from jax_assistant.memory.facade import Memory
    from jax_assistant.memory.outbox import MemoryOutbox
    from jax_assistant.research.service import ResearchService


class RunStorage(Protocol):
    """What a stage may write during a run. The engine's group-commit writer implements it, so a
    stage's writes share commits with the engine's own bookkeeping instead of queueing behind it."""

    async def save_records(
        self, run_id: str, symbol: str, events: Sequence[Event], trades: Sequence[TradeRecord]
    ) -> None:
        """Durably store a symbol's events, setups and this run's risk decisions on them."""
        ...


@dataclass
class Services:
    provider: MarketDataProvider
    detectors: DetectorConfig
    strategies: StrategyRegistry
    risk: RiskManager
    repository: Repository | None = None
    # Set by the orchestrator for a run with storage; stages write through it, not the repository.
    storage: RunStorage | None = None
    # Opened once by the orchestrator (memory stages); retains that cannot reach it go to the outbox.
    memory: Memory | None = None
    memory_outbox: MemoryOutbox | None = None
    # The research stage's providers, cache and budget (None: the stage uses built-in research only).
    research: ResearchService | None = None
    # Plugins may keep their own clients here (keyed by their stage name).
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        return self.provider.simulated
