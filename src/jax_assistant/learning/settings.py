"""The ``[learning]`` settings section (outcome rules, weighting, reflection schedule)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from jax_assistant.learning.outcomes import OutcomeConfig
from jax_assistant.strategies.weighting import WeightingConfig


class LearningConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcomes: OutcomeConfig = Field(default_factory=OutcomeConfig)
    weighting: WeightingConfig = Field(default_factory=WeightingConfig)
    window_days: int | None = Field(default=365, ge=1, description="reflection reads outcomes this recent")
    replay_reflect_every: int = Field(default=5, ge=1, description="replay: sessions between reflections")
    reflect_interval_s: float = Field(
        default=3600.0, ge=0, description="jax serve: seconds between reflections (0 = never)"
    )
