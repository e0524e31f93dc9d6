"""Settings of the research stage (the ``[research]`` section of the config; env ``JAX_RESEARCH__*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from jax_assistant.pipeline.policy import RetryPolicy

ProviderName = Literal["builtin", "dexter", "llm"]

# 4xx are not retried (the request itself is wrong); TransientError is what the HTTP layer raises for
# 5xx, connection failures and a 429 that says when to come back (Retry-After).
_RETRY_ON = ["TransientError", "TimeoutError"]


def _retry(attempts: int) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, initial_backoff_s=0.5, max_backoff_s=10.0, retry_on=list(_RETRY_ON))


def _builtin_only() -> list[ProviderName]:
    return ["builtin"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DexterConfig(_Strict):
    # None: the contract's plain DEXTER_SERVICE_URL environment variable, if set.
    url: str | None = Field(default=None, description="Dexter base URL (POST {url}/tools)")
    # Real Dexter runs are an LLM loop of up to 10 iterations: tens of seconds, sometimes minutes.
    timeout_s: float = Field(default=90.0, gt=0)
    max_body_bytes: int = Field(default=2_000_000, ge=1024, description="larger responses are refused")
    batch_size: int = Field(
        default=5, ge=1, le=50, description="tickers per dexter.compare_companies call (1 = never batch)"
    )
    batch_window_s: float = Field(default=0.05, ge=0, description="how long a batch waits for company")
    retry: RetryPolicy = Field(default_factory=lambda: _retry(2))


class LLMBudget(_Strict):
    """Spend limits; None = no limit of that kind. A call that could overshoot one is not made."""

    run_tokens: int | None = Field(default=50_000, ge=0)
    run_cost: float | None = Field(default=0.50, ge=0)
    day_tokens: int | None = Field(default=500_000, ge=0)
    day_cost: float | None = Field(default=5.00, ge=0)


class LLMConfig(_Strict):
    base_url: str | None = Field(
        default=None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"
    )
    model: str = "gpt-4o-mini"
    api_key: SecretStr | None = Field(default=None, description="sent as a Bearer token, never logged")
    timeout_s: float = Field(default=60.0, gt=0, description="per call")
    max_tokens: int = Field(default=600, ge=1, le=100_000, description="completion tokens per call")
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    price_per_1k_prompt: float = Field(default=0.00015, ge=0, description="currency units per 1000 tokens")
    price_per_1k_completion: float = Field(default=0.0006, ge=0)
    budget: LLMBudget = Field(default_factory=LLMBudget)
    retry: RetryPolicy = Field(default_factory=lambda: _retry(2))


class ResearchConfig(_Strict):
    providers: list[ProviderName] = Field(
        default_factory=_builtin_only,
        min_length=1,
        description="fallback order: the first provider that answers wins",
    )
    cache_ttl_s: float = Field(default=86_400.0, ge=0, description="research cache lifetime (0 = no cache)")
    # Keyed by strategy id or event type (strategy wins); see research/questions.py for the defaults.
    questions: dict[str, list[str]] = Field(default_factory=dict)
    dexter: DexterConfig = Field(default_factory=DexterConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)

    @field_validator("providers")
    @classmethod
    def _unique(cls, value: list[ProviderName]) -> list[ProviderName]:
        if len(set(value)) != len(value):
            raise ValueError("a provider may appear only once in the fallback order")
        return value
