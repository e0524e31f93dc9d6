"""Example jax-assistant stage plugin: price-action sentiment.

Real computation over the symbol's bars (no canned data). It uses only the public stage contract
(`jax_assistant.pipeline.base`) and the market-data provider the engine hands it.
"""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np

from jax_assistant.pipeline.base import BaseStage, StageContext, StageOutput, WorkItem
from jax_assistant.pipeline.policy import StagePolicy

__all__ = ["SentimentStage", "score"]


def score(close: np.ndarray, volume: np.ndarray, window: int = 10) -> float:
    """Volume-weighted share of up sessions in the last ``window`` sessions, mapped to [-1, 1]."""
    if close.shape[0] < 2:
        return 0.0
    c = close[-(window + 1) :]
    v = volume[-window:][-(c.shape[0] - 1) :]
    moves = np.sign(np.diff(c))
    weights = np.where(v > 0, v, 1.0)
    return float(np.clip((moves * weights).sum() / weights.sum(), -1.0, 1.0))


class SentimentStage(BaseStage):
    name = "sentiment"
    default_policy: ClassVar[StagePolicy] = StagePolicy(
        timeout_s=5.0, required=False, after=["generate_trades"]
    )

    def __init__(self, policy: StagePolicy | None = None) -> None:
        super().__init__(policy)
        self.window = int(os.environ.get("JAX_SENTIMENT_WINDOW", "10"))
        # Lets tests and operators see the degrade path with a real installed plugin.
        self.fail_symbols = {s for s in os.environ.get("JAX_SENTIMENT_FAIL", "").split(",") if s}

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        if item.symbol in self.fail_symbols:
            raise RuntimeError(f"sentiment source unavailable for {item.symbol}")
        series = ctx.services.provider.bars(item.symbol, item.as_of)
        value = score(series.close, series.volume, self.window)
        label = "bullish" if value > 0.2 else "bearish" if value < -0.2 else "neutral"
        agreement = {s.id: (s.direction.value == "long") == (value >= 0) for s in item.setups}
        extras = {**item.extras, self.name: {"score": round(value, 4), "label": label, "agrees": agreement}}
        return StageOutput(item=item.model_copy(update={"extras": extras}))
