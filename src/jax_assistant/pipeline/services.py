"""The shared services a stage may use, built once per run and handed to every stage via its context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jax_assistant.analysis.detectors import DetectorConfig
from jax_assistant.marketdata.base import MarketDataProvider
from jax_assistant.risk.manager import RiskManager
from jax_assistant.storage.repository import Repository
from jax_assistant.strategies.registry import StrategyRegistry


@dataclass
class Services:
    provider: MarketDataProvider
    detectors: DetectorConfig
    strategies: StrategyRegistry
    risk: RiskManager
    repository: Repository | None = None
    # Plugins may keep their own clients here (keyed by their stage name).
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        return self.provider.simulated
