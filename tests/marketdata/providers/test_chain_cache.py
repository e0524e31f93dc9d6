"""Limiter compliance, provider fallback and the bar cache (SQLite, PostgreSQL, Redis)."""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from tests.fakes.vendors import FakeVendors
from tests.marketdata.providers.conftest import md_config, source
from tests.pgutil import backend_url

from jax_assistant.marketdata.base import UnknownSymbolError
from jax_assistant.marketdata.cache import (
    AdjustmentMismatchError,
    BarCache,
    RedisBarCache,
    SqlBarCache,
    fetch_with_cache,
)
from jax_assistant.marketdata.providers import ProviderChain, VendorBars, VendorUnavailableError, build_source
from jax_assistant.marketdata.providers.base import Candle
from jax_assistant.pipeline.policy import BreakerConfig, RateLimitConfig, ResilienceConfig
from jax_assistant.pipeline.resilience import FakeClock, ResilienceRegistry
from jax_assistant.storage import open_database

END = date(2026, 11, 27)


# ------------------------------------------------------------------------------------- rate limit


async def test_vendor_limit_never_exceeded_over_any_window(vendors: FakeVendors, clock: FakeClock) -> None:
    registry = ResilienceRegistry(ResilienceConfig(), clock)
    src = source(vendors, "polygon", registry, clock, rate_limit=RateLimitConfig(limit=5, period_s=60))
    symbols = [f"S{i:02d}" for i in range(12)]
    vendors.add(*symbols)
    results = await asyncio.gather(*(src.fetch_daily(s, date(2026, 11, 2), END) for s in symbols))
    await src.aclose()
    assert all(r.candles for r in results)
    sent = sorted(src.http.sent_at)  # type: ignore[attr-defined]
    assert len(sent) == 12
    for i, t in enumerate(sent):  # every 60 s window starting at a request holds at most 5
        assert sum(1 for u in sent[i:] if u < t + 60) <= 5
    assert sent[-1] - sent[0] >= 120  # 12 requests at 5/min need two full windows of waiting
    assert registry.snapshot()["rate_limits"]["marketdata.polygon"]["granted"] == 12  # an engine policy


# --------------------------------------------------------------------------------------- fallback


def chain_of(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock, *names: str
) -> ProviderChain:
    md = md_config(vendors.url)
    return ProviderChain(
        [build_source(n, md, registry, clock=clock, rng=random.Random(2)) for n in names],  # type: ignore[arg-type]
        registry,
    )


async def test_chain_falls_back_in_priority_order_and_breaks_a_dead_vendor(
    vendors: FakeVendors, clock: FakeClock
) -> None:
    registry = ResilienceRegistry(
        ResilienceConfig(
            breakers={"marketdata.polygon": BreakerConfig(sliding_window_size=2, minimum_number_of_calls=2)}
        ),
        clock,
    )
    chain = chain_of(vendors, registry, clock, "polygon", "alpaca", "financialdatasets")
    ok = await chain.fetch_daily("AAPL", date(2026, 11, 2), END)
    assert ok.source == "polygon" and not vendors.seen("alpaca")
    vendors.down.add("polygon")
    got = await chain.fetch_daily("AAPL", date(2026, 11, 2), END)
    assert got.source == "alpaca" and got.candles
    await chain.fetch_daily("MSFT", date(2026, 11, 2), END)
    assert registry.breaker("marketdata.polygon").state.value == "open"
    polygon_calls = len(vendors.seen("polygon"))
    got = await chain.fetch_daily("NVDA", date(2026, 11, 2), END)
    assert got.source == "alpaca" and len(vendors.seen("polygon")) == polygon_calls  # skipped at once
    vendors.down.add("alpaca")
    assert (await chain.fetch_daily("NVDA", date(2026, 11, 2), END)).source == "financialdatasets"
    vendors.down.add("financialdatasets")
    with pytest.raises(VendorUnavailableError, match="no vendor could serve NVDA"):
        await chain.fetch_daily("NVDA", date(2026, 11, 2), END)
    await chain.aclose()


async def test_chain_unknown_everywhere_is_unknown(vendors: FakeVendors, clock: FakeClock) -> None:
    registry = ResilienceRegistry(ResilienceConfig(), clock)
    chain = chain_of(vendors, registry, clock, "alpaca", "ibbridge")
    with pytest.raises(UnknownSymbolError, match=r"alpaca: .*ibbridge: "):
        await chain.fetch_daily("NOPE", date(2026, 1, 2), END)
    vendors.down.add("ibbridge")  # one vendor down: "unknown" is not certain any more
    with pytest.raises(VendorUnavailableError):
        await chain.fetch_daily("NOPE", date(2026, 1, 2), END)
    await chain.aclose()


# ------------------------------------------------------------------------------------------ cache


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "redis"])
async def cache(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BarCache]:
    if request.param == "redis":
        prefix = f"jaxtest:{secrets.token_hex(4)}"
        redis_cache = RedisBarCache("redis://127.0.0.1:6379/0", prefix=prefix)
        try:
            yield redis_cache
        finally:
            keys = [k async for k in redis_cache._redis.scan_iter(f"{prefix}:*")]
            if keys:
                await redis_cache._redis.delete(*keys)
            await redis_cache.aclose()
        return
    async with backend_url(request.param, tmp_path) as url:
        db = await open_database(url)
        try:
            yield SqlBarCache(db)
        finally:
            await db.close()


def adjustments(**over: str) -> dict[str, str]:
    return {"polygon": "adjusted", "alpaca": "all", **over}


async def test_repeated_runs_fetch_only_the_missing_tail(
    vendors: FakeVendors, clock: FakeClock, cache: BarCache
) -> None:
    registry = ResilienceRegistry(ResilienceConfig(), clock)
    chain = chain_of(vendors, registry, clock, "polygon", "alpaca")
    first = await fetch_with_cache(
        chain, cache, "AAPL", date(2026, 11, 20), history_days=400, adjustment_of=adjustments().get
    )
    assert first.reason == "cold" and first.source == "polygon"
    cold_requests = len(vendors.requests)
    again = await fetch_with_cache(
        chain, cache, "AAPL", date(2026, 11, 20), history_days=400, adjustment_of=adjustments().get
    )
    assert again.reason == "fresh" and len(vendors.requests) == cold_requests  # not one request
    assert again.candles == first.candles
    tail = await fetch_with_cache(
        chain, cache, "AAPL", END, history_days=400, adjustment_of=adjustments().get
    )
    assert tail.reason == "tail" and len(vendors.requests) == cold_requests + 1
    assert vendors.requests[-1].path == "/v2/aggs/ticker/AAPL/range/1/day/2026-11-20/2026-11-27"
    want = vendors.prices("AAPL", date(2026, 11, 20) - timedelta(days=400), END, adjusted=True)  # first start
    assert [c.date for c in tail.candles] == [d for d, _ in want]
    stored = await cache.load("polygon", "AAPL")
    assert stored is not None and stored.fetched_through == END and stored.candles == tail.candles
    await chain.aclose()


async def test_a_readjusted_history_is_refetched_whole_not_spliced(
    vendors: FakeVendors, clock: FakeClock, cache: BarCache
) -> None:
    registry = ResilienceRegistry(ResilienceConfig(), clock)
    chain = chain_of(vendors, registry, clock, "polygon")
    await fetch_with_cache(
        chain, cache, "MSFT", date(2026, 11, 20), history_days=200, adjustment_of=adjustments().get
    )
    vendors.splits["MSFT"] = (date(2026, 11, 24), 2.0)  # a 2:1 split after the cached history
    report = await fetch_with_cache(
        chain, cache, "MSFT", END, history_days=200, adjustment_of=adjustments().get
    )
    assert report.reason == "readjusted"
    want = vendors.prices("MSFT", date(2026, 5, 11), END, adjusted=True)
    assert [c.close for c in report.candles] == [row[3] for _, row in want]  # one basis throughout
    stored = await cache.load("polygon", "MSFT")
    assert stored is not None and [c.close for c in stored.candles] == [row[3] for _, row in want]
    await chain.aclose()


async def test_a_changed_adjustment_setting_invalidates_the_series(
    vendors: FakeVendors, clock: FakeClock, cache: BarCache
) -> None:
    vendors.splits["NVDA"] = (date(2026, 6, 1), 10.0)
    registry = ResilienceRegistry(ResilienceConfig(), clock)
    chain = chain_of(vendors, registry, clock, "polygon")
    await fetch_with_cache(
        chain, cache, "NVDA", date(2026, 11, 20), history_days=300, adjustment_of=adjustments().get
    )
    raw_md = md_config(vendors.url, polygon={"adjusted": False})
    raw_chain = ProviderChain([build_source("polygon", raw_md, registry, clock=clock)], registry)
    report = await fetch_with_cache(
        raw_chain,
        cache,
        "NVDA",
        date(2026, 11, 20),
        history_days=300,
        adjustment_of=adjustments(polygon="raw").get,
    )
    assert report.reason == "adjustment_changed"
    stored = await cache.load("polygon", "NVDA")
    assert stored is not None and stored.adjustment == "raw"
    want = vendors.prices("NVDA", date(2026, 1, 24), date(2026, 11, 20), adjusted=False)
    assert [c.close for c in stored.candles] == [row[3] for _, row in want]
    await chain.aclose()
    await raw_chain.aclose()


async def test_append_refuses_another_price_basis_and_keeps_the_series(cache: BarCache) -> None:
    bars = [Candle(date(2026, 11, d), 10.0, 11.0, 9.0, 10.5, 100.0) for d in (23, 24, 25)]
    await cache.replace(VendorBars("alpaca", "ACME", "split", bars), date(2026, 11, 25))
    extra = [Candle(date(2026, 11, 26), 20.0, 21.0, 19.0, 20.5, 100.0)]
    with pytest.raises(AdjustmentMismatchError, match="refusing to append 'raw' bars to a 'split' series"):
        await cache.append(VendorBars("alpaca", "ACME", "raw", extra), date(2026, 11, 26))
    stored = await cache.load("alpaca", "ACME")
    assert stored is not None and stored.candles == bars and stored.fetched_through == date(2026, 11, 25)
    await cache.append(VendorBars("alpaca", "ACME", "split", extra), date(2026, 11, 26))
    stored = await cache.load("alpaca", "ACME")
    assert stored is not None and stored.candles == bars + extra


async def test_tail_falls_back_when_the_series_vendor_is_down(
    vendors: FakeVendors, clock: FakeClock, cache: BarCache
) -> None:
    registry = ResilienceRegistry(ResilienceConfig(), clock)
    chain = chain_of(vendors, registry, clock, "polygon", "alpaca")
    await fetch_with_cache(
        chain, cache, "AAPL", date(2026, 11, 20), history_days=100, adjustment_of=adjustments().get
    )
    vendors.down.add("polygon")
    report = await fetch_with_cache(
        chain, cache, "AAPL", END, history_days=100, adjustment_of=adjustments().get
    )
    assert report.reason == "fallback" and report.source == "alpaca"
    assert report.candles[-1].date == END
    assert (await cache.load("alpaca", "AAPL")) is not None  # cached apart from polygon's series
    polygon = await cache.load("polygon", "AAPL")
    assert polygon is not None and polygon.fetched_through == date(2026, 11, 20)
    await chain.aclose()
