"""The bar cache: vendor history in the project database (or Redis); repeated runs fetch only the tail.

One cached series per (vendor, symbol), tagged with its ``adjustment`` (the vendor's price basis:
Polygon ``adjusted``, Alpaca ``adjustment``, yfinance ``auto_adjust``). The rules that keep adjusted and
unadjusted prices from ever mixing:

* ``append`` refuses bars of another adjustment than the stored series (AdjustmentMismatchError);
* :func:`fetch_with_cache` drops the series and refetches it whole when the configured adjustment
  differs from the stored one, or when the vendor's bar for the last cached session differs from the
  cached one (a split or dividend re-adjusted history since: appending would splice two bases).

``fetched_through`` records the last date already asked for, so a run on a weekend or holiday, or a
second run on the same day, makes no request at all.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Protocol

import sqlalchemy as sa

from jax_assistant.domain import utc_now
from jax_assistant.domain.errors import ConfigError
from jax_assistant.marketdata.base import MarketDataError
from jax_assistant.marketdata.providers.base import Candle, VendorBars, VendorUnavailableError
from jax_assistant.observability.logging import get_logger
from jax_assistant.storage.db import Database
from jax_assistant.storage.tables import BarSeriesRow, CachedBarRow

log = get_logger("jax_assistant.marketdata.cache")

# Relative difference between the cached and the refetched bar of the same session above which the
# history is taken to have been re-adjusted. Vendors round to 4 decimals; real adjustments are >= 0.1%.
READJUST_TOLERANCE = 1e-4


class AdjustmentMismatchError(MarketDataError):
    """Bars of one price basis offered for a series stored in another."""


@dataclass(frozen=True)
class CachedSeries:
    source: str
    symbol: str
    adjustment: str
    fetched_through: date
    candles: list[Candle]


class BarCache(Protocol):
    """Storage of cached series. Implementations: :class:`SqlBarCache`, :class:`RedisBarCache`."""

    async def load(self, source: str, symbol: str) -> CachedSeries | None: ...

    async def replace(self, bars: VendorBars, fetched_through: date) -> None:
        """Drop whatever is stored for (source, symbol) and store ``bars`` as the whole series."""
        ...

    async def append(self, bars: VendorBars, fetched_through: date) -> None:
        """Add or overwrite sessions of a series of the same adjustment (else AdjustmentMismatchError)."""
        ...

    async def invalidate(self, source: str, symbol: str) -> None: ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------------------------- SQL


class SqlBarCache:
    """The cache in the project database (tables ``bar_series`` and ``cached_bars``, migration 0006)."""

    def __init__(self, db: Database | Callable[[], Database | None]) -> None:
        self._db = db

    def _database(self) -> Database:
        db = self._db() if callable(self._db) else self._db
        if db is None:
            raise RuntimeError("the bar cache's database is not open")
        return db

    async def load(self, source: str, symbol: str) -> CachedSeries | None:
        db = self._database()
        async with db.engine.connect() as conn:
            meta = (
                await conn.execute(
                    sa.select(BarSeriesRow.adjustment, BarSeriesRow.fetched_through).where(
                        BarSeriesRow.source == source, BarSeriesRow.symbol == symbol
                    )
                )
            ).first()
            if meta is None:
                return None
            c = CachedBarRow
            rows = await conn.execute(
                sa.select(c.day, c.open, c.high, c.low, c.close, c.volume)
                .where(c.source == source, c.symbol == symbol)
                .order_by(c.day)
            )
            candles = [Candle(*row) for row in rows]
        return CachedSeries(source, symbol, meta.adjustment, meta.fetched_through, candles)

    async def replace(self, bars: VendorBars, fetched_through: date) -> None:
        async with self._database().transaction() as conn:
            await self._delete(conn, bars.source, bars.symbol)
            await conn.execute(sa.insert(BarSeriesRow), [self._meta(bars, fetched_through)])
            await self._insert(conn, bars)

    async def append(self, bars: VendorBars, fetched_through: date) -> None:
        async with self._database().transaction() as conn:
            stored = (
                await conn.execute(
                    sa.select(BarSeriesRow.adjustment).where(
                        BarSeriesRow.source == bars.source, BarSeriesRow.symbol == bars.symbol
                    )
                )
            ).scalar_one_or_none()
            if stored is None:
                raise MarketDataError(f"no cached series {bars.source}/{bars.symbol} to append to")
            if stored != bars.adjustment:
                raise AdjustmentMismatchError(
                    f"{bars.source}/{bars.symbol}: refusing to append {bars.adjustment!r} bars to a"
                    f" {stored!r} series",
                    source=bars.source,
                    symbol=bars.symbol,
                )
            if bars.candles:
                dates = [c.date for c in bars.candles]
                await conn.execute(
                    sa.delete(CachedBarRow).where(
                        CachedBarRow.source == bars.source,
                        CachedBarRow.symbol == bars.symbol,
                        CachedBarRow.day.in_(dates),
                    )
                )
                await self._insert(conn, bars)
            await conn.execute(
                sa.update(BarSeriesRow)
                .where(BarSeriesRow.source == bars.source, BarSeriesRow.symbol == bars.symbol)
                .values(fetched_through=fetched_through, updated_at=utc_now())
            )

    async def invalidate(self, source: str, symbol: str) -> None:
        async with self._database().transaction() as conn:
            await self._delete(conn, source, symbol)

    async def aclose(self) -> None:
        return None  # the database belongs to the orchestrator

    @staticmethod
    async def _delete(conn: Any, source: str, symbol: str) -> None:
        await conn.execute(
            sa.delete(CachedBarRow).where(CachedBarRow.source == source, CachedBarRow.symbol == symbol)
        )
        await conn.execute(
            sa.delete(BarSeriesRow).where(BarSeriesRow.source == source, BarSeriesRow.symbol == symbol)
        )

    @staticmethod
    def _meta(bars: VendorBars, fetched_through: date) -> dict[str, Any]:
        return {
            "source": bars.source,
            "symbol": bars.symbol,
            "adjustment": bars.adjustment,
            "fetched_through": fetched_through,
            "updated_at": utc_now(),
        }

    @staticmethod
    async def _insert(conn: Any, bars: VendorBars) -> None:
        rows = [
            {
                "source": bars.source,
                "symbol": bars.symbol,
                "day": c.date,
                "open": c.open,
                "high": c.high,
                "low": c.low,
                "close": c.close,
                "volume": c.volume,
            }
            for c in _dedupe(bars.candles)
        ]
        for start in range(0, len(rows), 2000):  # well under both backends' bind-parameter limits
            await conn.execute(sa.insert(CachedBarRow), rows[start : start + 2000])


# ------------------------------------------------------------------------------------------- Redis


class RedisBarCache:
    """The cache in Redis: a hash of metadata and a hash of session -> bar per series.

    Writes are MULTI/EXEC transactions, with WATCH on the metadata key for ``append`` so a concurrent
    ``replace`` with another adjustment cannot slip in between the check and the write.
    """

    def __init__(self, url: str, *, prefix: str = "jax:bars", client: Any | None = None) -> None:
        if client is None:
            try:
                import redis.asyncio as aioredis  # optional: only loaded when the Redis cache is configured
            except ImportError:
                raise ConfigError(
                    "marketdata.cache = 'redis' needs the redis package: pip install 'jax-assistant[redis]'",
                    key="marketdata.cache",
                ) from None
            client = aioredis.from_url(url, decode_responses=True)
        self._redis = client
        self.prefix = prefix

    def _keys(self, source: str, symbol: str) -> tuple[str, str]:
        base = f"{self.prefix}:{source}:{symbol}"
        return f"{base}:meta", f"{base}:bars"

    async def load(self, source: str, symbol: str) -> CachedSeries | None:
        meta_key, bars_key = self._keys(source, symbol)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(meta_key)
            pipe.hgetall(bars_key)
            meta, raw = await pipe.execute()
        if not meta:
            return None
        candles = sorted(
            (Candle(date.fromisoformat(d), *json.loads(v)) for d, v in raw.items()), key=lambda c: c.date
        )
        return CachedSeries(
            source, symbol, meta["adjustment"], date.fromisoformat(meta["fetched_through"]), candles
        )

    async def replace(self, bars: VendorBars, fetched_through: date) -> None:
        meta_key, bars_key = self._keys(bars.source, bars.symbol)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(meta_key, bars_key)
            if bars.candles:
                pipe.hset(bars_key, mapping=_encode(bars.candles))
            pipe.hset(
                meta_key,
                mapping={"adjustment": bars.adjustment, "fetched_through": fetched_through.isoformat()},
            )
            await pipe.execute()

    async def append(self, bars: VendorBars, fetched_through: date) -> None:
        from redis.exceptions import WatchError

        meta_key, bars_key = self._keys(bars.source, bars.symbol)
        for _ in range(10):
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(meta_key)
                    stored = await pipe.hget(meta_key, "adjustment")
                    if stored is None:
                        raise MarketDataError(f"no cached series {bars.source}/{bars.symbol} to append to")
                    if stored != bars.adjustment:
                        raise AdjustmentMismatchError(
                            f"{bars.source}/{bars.symbol}: refusing to append {bars.adjustment!r} bars to a"
                            f" {stored!r} series",
                            source=bars.source,
                            symbol=bars.symbol,
                        )
                    pipe.multi()
                    if bars.candles:
                        pipe.hset(bars_key, mapping=_encode(bars.candles))
                    pipe.hset(meta_key, "fetched_through", fetched_through.isoformat())
                    await pipe.execute()
                    return
                except WatchError:
                    continue
        raise MarketDataError(
            f"{bars.source}/{bars.symbol}: the cached series kept changing; append abandoned"
        )

    async def invalidate(self, source: str, symbol: str) -> None:
        await self._redis.delete(*self._keys(source, symbol))

    async def aclose(self) -> None:
        await self._redis.aclose()


def _encode(candles: Sequence[Candle]) -> dict[Any, Any]:  # redis-py's mapping type is invariant
    return {c.date.isoformat(): json.dumps([c.open, c.high, c.low, c.close, c.volume]) for c in candles}


def _dedupe(candles: Sequence[Candle]) -> list[Candle]:
    """Last bar per session (a vendor page overlap must not violate the primary key)."""
    return list({c.date: c for c in candles}.values())


# ------------------------------------------------------------------------------------ the fetch rule


class Fetcher(Protocol):
    async def fetch_daily(
        self, symbol: str, start: date, end: date, *, only: str | None = None
    ) -> VendorBars: ...


@dataclass(frozen=True)
class FetchReport:
    """What one cached fetch did (shown in the stage's output and in tests)."""

    source: str
    requested: tuple[date, date] | None  # the range asked of the vendor, None = served from cache
    reason: str  # "cold", "tail", "fresh", "readjusted", "adjustment_changed", "fallback"
    candles: list[Candle]


def _same_bar(a: Candle, b: Candle) -> bool:
    return all(
        math.isclose(x, y, rel_tol=READJUST_TOLERANCE, abs_tol=1e-9)
        for x, y in ((a.open, b.open), (a.high, b.high), (a.low, b.low), (a.close, b.close))
    )


async def fetch_with_cache(
    fetcher: Fetcher,
    cache: BarCache | None,
    symbol: str,
    end: date,
    *,
    history_days: int,
    adjustment_of: Callable[[str], str | None],
) -> FetchReport:
    """The symbol's bars through ``end``: from the cache plus only the missing tail, or fetched whole.

    ``adjustment_of(source)`` is the adjustment that vendor is configured for now (None = not in the
    chain any more); a cached series of another basis is refetched, never extended.
    """
    start = end - timedelta(days=history_days)
    cached = await _first_cached(cache, fetcher, symbol) if cache is not None else None
    if cached is not None and adjustment_of(cached.source) != cached.adjustment:
        await cache.invalidate(cached.source, symbol)  # type: ignore[union-attr]
        return await _cold(fetcher, cache, symbol, start, end, "adjustment_changed")
    if cached is None or not cached.candles:
        return await _cold(fetcher, cache, symbol, start, end, "cold")
    assert cache is not None
    if cached.fetched_through >= end:
        return FetchReport(cached.source, None, "fresh", [c for c in cached.candles if c.date <= end])
    last = cached.candles[-1]
    # The tail starts AT the last cached session: that one overlapping bar shows whether the vendor
    # re-adjusted its history (a split or dividend since the last fetch).
    try:
        tail = await fetcher.fetch_daily(symbol, last.date, end, only=cached.source)
    except VendorUnavailableError:
        # The series' own vendor is down: another vendor's whole series beats no run (cached apart).
        return await _cold(fetcher, cache, symbol, start, end, "fallback")
    if tail.adjustment != cached.adjustment:
        await cache.invalidate(cached.source, symbol)
        return await _cold(fetcher, cache, symbol, start, end, "adjustment_changed")
    overlap = next((c for c in tail.candles if c.date == last.date), None)
    if overlap is not None and not _same_bar(overlap, last):
        log.info(
            "vendor history re-adjusted; refetching it whole",
            source=cached.source,
            symbol=symbol,
            session=str(last.date),
        )
        await cache.invalidate(cached.source, symbol)
        return await _cold(fetcher, cache, symbol, start, end, "readjusted")
    new = [c for c in tail.candles if c.date > last.date]
    await cache.append(VendorBars(tail.source, symbol, tail.adjustment, new), end)
    merged = [c for c in cached.candles if c.date <= end] + new
    return FetchReport(cached.source, (last.date, end), "tail", merged)


async def _first_cached(cache: BarCache, fetcher: Fetcher, symbol: str) -> CachedSeries | None:
    """The cached series of the highest-priority vendor that has one."""
    for name in _source_names(fetcher):
        found = await cache.load(name, symbol)
        if found is not None:
            return found
    return None


def _source_names(fetcher: Fetcher) -> list[str]:
    sources = getattr(fetcher, "sources", None)
    if sources is not None:
        return [s.name for s in sources]
    return [str(getattr(fetcher, "name", ""))]


async def _cold(
    fetcher: Fetcher, cache: BarCache | None, symbol: str, start: date, end: date, reason: str
) -> FetchReport:
    bars = await fetcher.fetch_daily(symbol, start, end)
    if cache is not None:
        await cache.replace(bars, end)
    return FetchReport(bars.source, (start, end), reason, bars.candles)
