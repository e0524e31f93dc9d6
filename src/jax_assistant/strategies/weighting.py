"""Closing the loop: strategy weights and suspensions from the current track-record beliefs.

For each strategy with a ``strategy_track_record`` belief (``memory/beliefs.py``):

* **Shrunk expectancy** ``e* = (n x e + k x prior) / (n + k)`` with ``n`` the belief's sample size,
  ``e`` its expectancy in R, ``k`` = ``prior_strength`` trades and ``prior`` = ``prior_expectancy``:
  a handful of trades barely moves the estimate off the prior, a long record dominates it.
* **Weight** ``clamp(1 + sensitivity x e*, min_weight, max_weight)``, rounded to 4 decimals: the
  registry multiplies each setup's confidence by it, and the allocation ranks by confidence x R.
* **Suspended** when ``n >= suspend_after`` and ``e* < suspend_below``. A suspended strategy still
  generates its setups, which are stored and settled (paper-tracked) but never allocated room
  (``STRATEGY_SUSPENDED``); beliefs reflect over a rolling window, so a strategy whose recent paper
  record recovers is re-admitted by the next reflection.

No belief for a strategy leaves it exactly as it was (weight 1.0, no note): with no beliefs at all
every run is byte-identical to one without learning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from jax_assistant.memory.beliefs import Belief


class WeightingConfig(BaseModel):
    """``[learning.weighting]`` in the settings."""

    model_config = ConfigDict(extra="forbid")

    prior_expectancy: float = Field(default=0.0, ge=-5, le=5, description="prior expectancy in R")
    prior_strength: float = Field(default=20.0, gt=0, le=10_000, description="prior's weight, in trades")
    sensitivity: float = Field(default=1.0, ge=0, le=100, description="weight change per R of expectancy")
    min_weight: float = Field(default=0.25, ge=0, le=1)
    max_weight: float = Field(default=2.0, ge=1, le=10)
    suspend_after: int = Field(default=20, ge=1, description="trades needed before a suspension")
    suspend_below: float = Field(default=0.0, ge=-5, le=5, description="shrunk expectancy that suspends")


class StrategyWeight(BaseModel):
    """What the beliefs did to one strategy, and why (kept in setups' notes and the audit trail)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy_id: str
    weight: float
    suspended: bool
    belief_id: str
    sample_size: int
    expectancy: float
    shrunk_expectancy: float
    confidence: float

    @property
    def note(self) -> str:
        state = "SUSPENDED (paper-tracked)" if self.suspended else f"weight x{self.weight:.4f}"
        return (
            f"belief {self.belief_id}: {self.sample_size} trades, expectancy {self.expectancy:+.3f}R, "
            f"shrunk {self.shrunk_expectancy:+.3f}R (confidence {self.confidence:.2f}) -> {state}"
        )


def shrunk_expectancy(expectancy: float, n: int, config: WeightingConfig) -> float:
    k = config.prior_strength
    return (n * expectancy + k * config.prior_expectancy) / (n + k)


def strategy_weights(beliefs: Iterable[Belief], config: WeightingConfig) -> dict[str, StrategyWeight]:
    """One entry per strategy that has a track-record belief, by strategy id."""
    out: dict[str, StrategyWeight] = {}
    for b in beliefs:
        if b.belief_type != "strategy_track_record" or b.strategy_id is None:
            continue
        n, e = b.record.sample_size, b.record.expectancy
        star = shrunk_expectancy(e, n, config)
        weight = min(config.max_weight, max(config.min_weight, 1.0 + config.sensitivity * star))
        out[b.strategy_id] = StrategyWeight(
            strategy_id=b.strategy_id,
            weight=round(weight, 4),
            suspended=n >= config.suspend_after and star < config.suspend_below,
            belief_id=b.id,
            sample_size=n,
            expectancy=e,
            shrunk_expectancy=round(star, 6),
            confidence=b.confidence,
        )
    return out


class _Weighted(Protocol):
    weights: dict[str, float]
    influence: dict[str, str]
    suspended: dict[str, str]

    def __contains__(self, strategy_id: object) -> bool: ...


def apply_weights(registry: _Weighted, weights: Mapping[str, StrategyWeight]) -> None:
    """Set the registry's weights, belief notes and suspensions from ``weights`` (strategies the
    registry does not run are ignored; strategies without an entry go back to weight 1.0)."""
    for sid in list(registry.weights):
        registry.weights[sid] = 1.0
    registry.influence.clear()
    registry.suspended.clear()
    for sid, w in weights.items():
        if sid not in registry:
            continue
        registry.weights[sid] = w.weight
        registry.influence[sid] = w.note
        if w.suspended:
            registry.suspended[sid] = w.note
