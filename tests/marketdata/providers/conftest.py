"""Fixtures for the vendor adapters: the fake vendors on loopback and settings pointing at them."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr
from tests.fakes.vendors import ALPACA_KEY_ID, ALPACA_SECRET, FDS_KEY, POLYGON_KEY, FakeVendors, vendor_server

from jax_assistant.marketdata.providers import BarSource, build_source
from jax_assistant.marketdata.settings import MarketDataConfig, VendorConfig, VendorName
from jax_assistant.pipeline.policy import RateLimitConfig, ResilienceConfig, RetryPolicy
from jax_assistant.pipeline.resilience import FakeClock, ResilienceRegistry

# yfinance through Yahoo's chart endpoint (via = "chart"); the package path needs the network.
HTTP_VENDORS: list[VendorName] = ["polygon", "alpaca", "financialdatasets", "ibbridge", "yfinance"]
KEYS = {
    "polygon": {"api_key": SecretStr(POLYGON_KEY)},
    "alpaca": {"api_key": SecretStr(ALPACA_KEY_ID), "api_secret": SecretStr(ALPACA_SECRET)},
    "financialdatasets": {"api_key": SecretStr(FDS_KEY)},
    "ibbridge": {},
    "yfinance": {"via": "chart"},
}


@pytest.fixture
async def vendors() -> AsyncIterator[FakeVendors]:
    fake = FakeVendors()
    fake.add("AAPL", "MSFT", "NVDA")
    async with vendor_server(fake) as running:
        yield running


def vendor_config(url: str, name: str, **over: Any) -> VendorConfig:
    data: dict[str, Any] = {
        "base_url": url,
        "rate_limit": RateLimitConfig(limit=1000, period_s=60),
        "retry": RetryPolicy(attempts=3, initial_backoff_s=0.5, jitter=0.0, retry_on=["TransientError"]),
        "timeout_s": 5.0,
        "max_body_bytes": 256 * 1024,
        **KEYS[name],
    }
    data.update(over)
    return VendorConfig(**data)


def md_config(url: str, **per_vendor: dict[str, Any]) -> MarketDataConfig:
    return MarketDataConfig(
        **{name: vendor_config(url, name, **per_vendor.get(name, {})) for name in HTTP_VENDORS},
        cache="none",
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@pytest.fixture
def registry(clock: FakeClock) -> ResilienceRegistry:
    return ResilienceRegistry(ResilienceConfig(), clock)


def source(
    vendors: FakeVendors, name: VendorName, registry: ResilienceRegistry, clock: FakeClock, **over: Any
) -> BarSource:
    md = md_config(vendors.url, **{name: over})
    return build_source(name, md, registry, clock=clock, rng=random.Random(1))
