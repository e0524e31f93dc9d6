"""The ``[learning]`` settings section (outcome rules, weighting, reflection schedule)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jax_assistant.learning.outcomes import OutcomeConfig
from jax_assistant.learning.reasoner import LLMReasonerConfig
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
    reasoner: Literal["local", "llm"] = Field(
        default="local",
        description="local = track records only; llm = add llm_insight beliefs from [learning.llm]",
    )
    llm: LLMReasonerConfig = Field(default_factory=LLMReasonerConfig)

    @model_validator(mode="after")
    def _llm_configured(self) -> LearningConfig:
        if self.reasoner == "llm" and not self.llm.base_url:
            raise ValueError("learning.llm.base_url is required when learning.reasoner = 'llm'")
        return self
