"""Stage policies and the resilience settings the engine applies around every stage call.

These are plain configuration models; the behaviour lives in ``pipeline/resilience.py`` and is
applied by the engine, never by stage code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetryPolicy(_Strict):
    """Exponential backoff with jitter. ``attempts`` counts the first call (1 = no retry)."""

    attempts: int = Field(default=1, ge=1, le=100)
    initial_backoff_s: float = Field(default=0.2, ge=0)
    multiplier: float = Field(default=2.0, ge=1)
    max_backoff_s: float = Field(default=10.0, ge=0)
    jitter: float = Field(default=0.2, ge=0, le=1, description="fraction of the delay randomised (+/-)")
    max_elapsed_s: float | None = Field(
        default=None, gt=0, description="give up once this much time has passed"
    )
    # Exception class names (MRO match) that are worth retrying. Validation and programming errors are not.
    retry_on: list[str] = Field(
        default_factory=lambda: ["TransientError", "TimeoutError", "ConnectionError", "OSError", "HTTPError"]
    )
    honour_retry_after: bool = True


class StagePolicy(_Strict):
    """How the engine runs one stage. Configurable per stage in config and overridable per run."""

    timeout_s: float | None = Field(default=30.0, gt=0)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    required: bool = Field(default=True, description="failure fails the symbol (else it only degrades it)")
    breaker: str | None = Field(default=None, description="circuit-breaker key (a dependency, e.g. 'memory')")
    rate_limit: str | None = Field(default=None, description="rate-limiter key (a dependency)")
    bulkhead: str | None = Field(
        default=None, description="bulkhead key: max concurrent calls per dependency"
    )
    concurrency: int | None = Field(default=None, ge=1, description="max symbols inside this stage at once")
    after: list[str] = Field(default_factory=list, description="stages that must run before this one")

    def merged(self, override: dict[str, object] | None) -> StagePolicy:
        """A copy with ``override`` (a partial policy, e.g. from a run's parameters) applied."""
        if not override:
            return self
        data = self.model_dump()
        for key, value in override.items():
            if key == "retry" and isinstance(value, dict):
                data["retry"] = {**data["retry"], **value}
            else:
                data[key] = value
        return StagePolicy.model_validate(data)


class BreakerConfig(_Strict):
    """Circuit-breaker settings with resilience4j semantics and names."""

    sliding_window_type: Literal["count", "time"] = "count"
    sliding_window_size: int = Field(default=20, ge=1, description="calls (count) or seconds (time)")
    minimum_number_of_calls: int = Field(default=10, ge=1)
    failure_rate_threshold: float = Field(default=50.0, gt=0, le=100, description="percent")
    slow_call_rate_threshold: float = Field(default=100.0, gt=0, le=100, description="percent")
    slow_call_duration_threshold_s: float = Field(default=10.0, gt=0)
    wait_duration_in_open_s: float = Field(default=30.0, ge=0)
    permitted_number_of_calls_in_half_open: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _min_calls(self) -> BreakerConfig:
        if self.sliding_window_type == "count" and self.minimum_number_of_calls > self.sliding_window_size:
            # resilience4j clamps it the same way: the window can never hold more calls than its size
            self.minimum_number_of_calls = self.sliding_window_size
        return self


class RateLimitConfig(_Strict):
    """At most ``limit`` calls in any window of ``period_s`` seconds; ``burst`` calls may go back to back."""

    limit: int = Field(ge=1)
    period_s: float = Field(default=60.0, gt=0)
    burst: int | None = Field(default=None, ge=1, description="token-bucket capacity (default: limit)")


class BulkheadConfig(_Strict):
    max_concurrent: int = Field(ge=1)


class ResilienceConfig(_Strict):
    """Breakers, limiters and bulkheads keyed by dependency name, shared by every stage that names them."""

    breakers: dict[str, BreakerConfig] = Field(default_factory=dict)
    rate_limits: dict[str, RateLimitConfig] = Field(default_factory=dict)
    bulkheads: dict[str, BulkheadConfig] = Field(default_factory=dict)
