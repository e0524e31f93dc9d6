"""Live market-data vendors behind the provider interface (docs/marketdata.md).

``build_live_provider(settings, registry)`` is what the orchestrator calls for a live ``provider``:
the configured vendor (or ``[marketdata].chain`` for ``provider = "chain"``), each with its rate limit
registered as an engine policy under ``marketdata.<vendor>``, behind the bar cache.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from jax_assistant.domain.errors import ConfigError
from jax_assistant.marketdata.cache import BarCache, RedisBarCache, SqlBarCache
from jax_assistant.marketdata.providers.alpaca import AlpacaSource
from jax_assistant.marketdata.providers.base import (
    BarSource,
    Candle,
    VendorBars,
    VendorHttp,
    VendorResponseError,
    VendorUnavailableError,
    safe_url,
)
from jax_assistant.marketdata.providers.chain import ProviderChain, breaker_key
from jax_assistant.marketdata.providers.financialdatasets import FinancialDatasetsSource
from jax_assistant.marketdata.providers.ibbridge import IbBridgeSource
from jax_assistant.marketdata.providers.live import LiveProvider, last_closed_session
from jax_assistant.marketdata.providers.polygon import PolygonSource
from jax_assistant.marketdata.providers.yfinance import YahooChartSource, YFinanceSource
from jax_assistant.marketdata.settings import LIVE_PROVIDERS, MarketDataConfig, VendorName
from jax_assistant.pipeline.resilience import Clock, RateLimiter, ResilienceRegistry

if TYPE_CHECKING:
    from jax_assistant.config import Settings
    from jax_assistant.storage.db import Database

__all__ = [
    "LIVE_PROVIDERS",
    "AlpacaSource",
    "BarSource",
    "Candle",
    "FinancialDatasetsSource",
    "IbBridgeSource",
    "LiveProvider",
    "PolygonSource",
    "ProviderChain",
    "VendorBars",
    "VendorHttp",
    "VendorResponseError",
    "VendorUnavailableError",
    "YFinanceSource",
    "YahooChartSource",
    "breaker_key",
    "build_live_provider",
    "build_source",
    "is_live",
    "last_closed_session",
    "safe_url",
]


def is_live(provider: str) -> bool:
    return provider in LIVE_PROVIDERS


def vendor_limiter(name: str, md: MarketDataConfig, registry: ResilienceRegistry) -> RateLimiter:
    """The vendor's limiter from the engine's registry (``marketdata.<vendor>``), so /status shows it.

    A ``[resilience.rate_limits."marketdata.<vendor>"]`` entry wins over ``[marketdata.<vendor>].rate_limit``.
    """
    key = breaker_key(name)
    registry.config.rate_limits.setdefault(key, md.vendor(name).rate_limit)  # type: ignore[arg-type]
    return registry.limiter(key)


def _secret(md: MarketDataConfig, name: str, field: str) -> str:
    value = getattr(md.vendor(name), field)  # type: ignore[arg-type]
    if value is None or not value.get_secret_value():
        raise ConfigError(
            f"marketdata.{name}.{field} is not set (JAX_MARKETDATA__{name.upper()}__{field.upper()})",
            key=f"marketdata.{name}.{field}",
        )
    return str(value.get_secret_value())


def build_source(
    name: VendorName,
    md: MarketDataConfig,
    registry: ResilienceRegistry,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    yfinance_module: object | None = None,
) -> BarSource:
    """One vendor adapter from its settings. Raises ConfigError for a missing key."""
    cfg = md.vendor(name)
    limiter = vendor_limiter(name, md, registry)
    if name == "yfinance" and cfg.via == "package":
        return YFinanceSource(
            limiter=limiter, retry=cfg.retry, adjusted=cfg.adjusted, clock=clock, module=yfinance_module
        )
    headers: dict[str, str] = {"Accept": "application/json"}
    if name == "alpaca":
        headers["APCA-API-KEY-ID"] = _secret(md, name, "api_key")
        headers["APCA-API-SECRET-KEY"] = _secret(md, name, "api_secret")
    elif name == "financialdatasets":
        headers["X-API-KEY"] = _secret(md, name, "api_key")
    elif name == "ibbridge" and cfg.api_key is not None:
        headers["Authorization"] = f"Bearer {cfg.api_key.get_secret_value()}"
    http = VendorHttp(
        name,
        cfg.base_url,
        limiter=limiter,
        retry=cfg.retry,
        timeout_s=cfg.timeout_s,
        max_body_bytes=cfg.max_body_bytes,
        headers=headers,
        clock=clock,
        rng=rng,
        transport=transport,
    )
    if name == "polygon":
        return PolygonSource(
            http, api_key=_secret(md, name, "api_key"), adjusted=cfg.adjusted, max_pages=cfg.max_pages
        )
    if name == "alpaca":
        return AlpacaSource(http, adjustment=cfg.adjustment, feed=cfg.feed, max_pages=cfg.max_pages)
    if name == "financialdatasets":
        return FinancialDatasetsSource(http, max_pages=cfg.max_pages)
    if name == "yfinance":
        return YahooChartSource(http, adjusted=cfg.adjusted)
    return IbBridgeSource(http)


def build_cache(md: MarketDataConfig, database: Callable[[], Database | None]) -> BarCache | None:
    if md.cache == "none":
        return None
    if md.cache == "redis":
        return RedisBarCache(md.redis_url, prefix=md.redis_prefix)
    return SqlBarCache(database)


def build_live_provider(
    settings: Settings,
    registry: ResilienceRegistry,
    database: Callable[[], Database | None],
    *,
    kind: str | None = None,
    clock: Clock | None = None,
) -> LiveProvider:
    """The live provider ``kind`` (default: the configured ``provider``): one vendor, or the chain."""
    md = settings.marketdata
    kind = kind or settings.provider
    names: list[VendorName] = list(md.chain) if kind == "chain" else [kind]  # type: ignore[list-item]
    if not names:
        raise ConfigError("marketdata.chain is empty: name at least one vendor", key="marketdata.chain")
    sources = [build_source(n, md, registry, clock=clock) for n in names]
    adjustments = {s.name: s.adjustment for s in sources}
    return LiveProvider(
        kind,
        ProviderChain(sources, registry),
        build_cache(md, database),
        history_days=md.history_days,
        adjustments=adjustments,
    )
