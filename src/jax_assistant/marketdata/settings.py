"""Settings of the live market-data vendors (the ``[marketdata]`` section; docs/marketdata.md).

Plain pydantic models so that ``config.py`` only has to add one field. Keys are ``SecretStr``: they
never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from jax_assistant.pipeline.policy import RateLimitConfig, RetryPolicy

VendorName = Literal["polygon", "alpaca", "financialdatasets", "ibbridge", "yfinance"]
DEFAULT_CHAIN: tuple[VendorName, ...] = ("polygon", "alpaca")
LIVE_PROVIDERS: tuple[str, ...] = ("polygon", "alpaca", "financialdatasets", "ibbridge", "yfinance", "chain")


def _vendor_retry() -> RetryPolicy:
    # Only what a vendor can fix by waiting: throttling (429), server errors (5xx), timeouts and
    # dropped connections, all raised as TransientError by the HTTP layer. A 4xx is never retried.
    return RetryPolicy(attempts=4, initial_backoff_s=0.5, max_backoff_s=30.0, retry_on=["TransientError"])


class VendorConfig(BaseModel):
    """One vendor: where it is, how to authenticate, and the limit its plan allows."""

    model_config = ConfigDict(extra="forbid")

    base_url: str
    api_key: SecretStr | None = Field(default=None, description="Polygon apiKey, Alpaca key id, X-API-KEY")
    api_secret: SecretStr | None = Field(default=None, description="Alpaca only: APCA-API-SECRET-KEY")
    rate_limit: RateLimitConfig
    retry: RetryPolicy = Field(default_factory=_vendor_retry)
    timeout_s: float = Field(default=15.0, gt=0, description="per HTTP request")
    max_pages: int = Field(default=200, ge=1, description="pagination guard: a vendor looping on next_url")
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, description="larger bodies are refused")
    # Polygon ``adjusted``, yfinance ``auto_adjust``: True = split (and for yfinance dividend) adjusted.
    adjusted: bool = True
    # Alpaca ``adjustment``: raw | split | dividend | all.
    adjustment: Literal["raw", "split", "dividend", "all"] = "all"
    feed: str | None = Field(default=None, description="Alpaca data feed (iex, sip); vendor default if unset")
    # yfinance only: "package" = the optional yfinance extra; "chart" = Yahoo's unofficial chart endpoint
    # (/v8/finance/chart/{symbol}) over httpx at base_url, with no extra installed.
    via: Literal["package", "chart"] = "package"


# Where each vendor is and the limit of its entry plan. A partial `[marketdata.polygon]` (just the key,
# or JAX_MARKETDATA__POLYGON__API_KEY) is merged onto these, so only what differs need be written.
# Yahoo publishes no limit; its self-imposed one keeps a watchlist scan polite.
VENDOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "polygon": {"base_url": "https://api.polygon.io", "rate_limit": {"limit": 5, "period_s": 60}},
    "alpaca": {"base_url": "https://data.alpaca.markets", "rate_limit": {"limit": 200, "period_s": 60}},
    "financialdatasets": {
        "base_url": "https://api.financialdatasets.ai",
        "rate_limit": {"limit": 60, "period_s": 60},
    },
    "ibbridge": {"base_url": "http://127.0.0.1:8081", "rate_limit": {"limit": 50, "period_s": 1}},
    "yfinance": {"base_url": "https://query1.finance.yahoo.com", "rate_limit": {"limit": 60, "period_s": 60}},
}


def _default(name: str) -> Any:
    return lambda: VendorConfig.model_validate(VENDOR_DEFAULTS[name])


class MarketDataConfig(BaseModel):
    """``provider = "chain"`` tries ``chain`` in order; a single vendor name uses that vendor alone."""

    model_config = ConfigDict(extra="forbid")

    chain: list[VendorName] = Field(default_factory=lambda: list(DEFAULT_CHAIN))
    history_days: int = Field(
        default=730, ge=30, le=20_000, description="calendar days fetched the first time"
    )
    cache: Literal["database", "redis", "none"] = "database"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "jax:bars"
    polygon: VendorConfig = Field(default_factory=_default("polygon"))
    alpaca: VendorConfig = Field(default_factory=_default("alpaca"))
    financialdatasets: VendorConfig = Field(default_factory=_default("financialdatasets"))
    ibbridge: VendorConfig = Field(default_factory=_default("ibbridge"))
    yfinance: VendorConfig = Field(default_factory=_default("yfinance"))

    @model_validator(mode="before")
    @classmethod
    def _vendor_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, default in VENDOR_DEFAULTS.items():
                given = data.get(name)
                if isinstance(given, dict):
                    data = {**data, name: {**default, **given}}
        return data

    def vendor(self, name: VendorName) -> VendorConfig:
        cfg: VendorConfig = getattr(self, name)
        return cfg
