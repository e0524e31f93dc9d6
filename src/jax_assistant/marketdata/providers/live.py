"""The live provider: the MarketDataProvider the pipeline reads, backed by a vendor chain and the bar cache.

The pipeline's interface is synchronous (detection runs on a worker thread over numpy arrays), the
vendors are async HTTP. The ``fetch_market_data`` stage bridges them: it awaits :meth:`LiveProvider.load`
(with its own timeout, retries and breaker) and the detect stage then reads the loaded series with
``bars()``. The universe is open: any ticker may be asked for, and an unknown one fails its symbol in
the fetch stage with the vendors' answer.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time, timedelta

from jax_assistant.domain.errors import UnavailableError
from jax_assistant.domain.sessions import is_session
from jax_assistant.marketdata.base import (
    BarSeries,
    DataIssue,
    DataSourceError,
    EarningsReport,
    MarketDataError,
)
from jax_assistant.marketdata.cache import BarCache, FetchReport, fetch_with_cache
from jax_assistant.marketdata.providers.base import EXCHANGE_TZ
from jax_assistant.marketdata.providers.chain import ProviderChain
from jax_assistant.marketdata.validation import clean_series
from jax_assistant.observability.logging import get_logger

log = get_logger("jax_assistant.marketdata.live")

# Vendors publish the final daily bar a while after the 16:00 close; before this the session is open.
DAILY_BAR_READY = time(17, 0)
LOAD_ON_DEMAND_TIMEOUT_S = 300.0


def last_closed_session(now: datetime | None = None) -> date:
    """The latest session whose daily bar is final at ``now`` (default: the current time)."""
    local = (now or datetime.now(EXCHANGE_TZ)).astimezone(EXCHANGE_TZ)
    day = local.date()
    if local.time() < DAILY_BAR_READY:
        day -= timedelta(days=1)
    while not is_session(day):
        day -= timedelta(days=1)
    return day


# Errors of the cache's store (database or Redis) that mean "unreachable", matched by class name so that
# neither driver has to be imported here. Market-data errors (vendors) are never among them.
_CACHE_OUTAGES = frozenset({"OperationalError", "InterfaceError", "RedisError", "ConnectionError", "OSError"})


def _is_cache_outage(exc: BaseException) -> bool:
    if isinstance(exc, MarketDataError | UnavailableError):
        return False
    return any(cls.__name__ in _CACHE_OUTAGES for cls in type(exc).__mro__)


class LiveProvider:
    """Bars from vendors, through the cache. ``load`` must run (the fetch stage) before ``bars``."""

    simulated = False
    open_universe = True  # the orchestrator accepts any ticker; vendors decide what exists

    def __init__(
        self,
        name: str,
        chain: ProviderChain,
        cache: BarCache | None,
        *,
        history_days: int,
        adjustments: dict[str, str],
        today: date | None = None,
    ) -> None:
        self.name = name
        self.chain = chain
        self.cache = cache
        self.history_days = history_days
        self.adjustments = adjustments  # vendor -> its configured price basis
        self._today = today
        self._series: dict[str, BarSeries] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.reports: dict[str, FetchReport] = {}
        # The loop the provider serves (captured when built inside one, or at the first load): bars()
        # called on a worker thread for a symbol not loaded in this process - a run resumed after its
        # fetch stage had completed elsewhere - loads it on that loop, from the cache.
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def symbols(self) -> list[str]:
        return sorted(self._series)

    def latest_date(self) -> date:
        return self._today or last_closed_session()

    async def load(self, symbol: str, as_of: date) -> FetchReport:
        """Fetch (cache first, then only the missing tail) and hold the symbol's bars through ``as_of``."""
        self._loop = asyncio.get_running_loop()
        lock = self._locks.setdefault(symbol, asyncio.Lock())
        async with lock:  # two runs of one symbol at once fetch once
            try:
                report = await self._fetch(symbol, as_of, self.cache)
            except Exception as exc:
                if self.cache is None or not _is_cache_outage(exc):
                    raise
                # The cache is a speed-up, not a dependency: without it the run still gets its bars.
                log.warning("bar cache unavailable; fetching without it", symbol=symbol, error=str(exc))
                report = await self._fetch(symbol, as_of, None)
            c = report.candles
            self._series[symbol] = clean_series(
                symbol,
                [x.date for x in c],
                [x.open for x in c],
                [x.high for x in c],
                [x.low for x in c],
                [x.close for x in c],
                [x.volume for x in c],
            )
            self.reports[symbol] = report
            return report

    async def _fetch(self, symbol: str, as_of: date, cache: BarCache | None) -> FetchReport:
        return await fetch_with_cache(
            self.chain,
            cache,
            symbol,
            as_of,
            history_days=self.history_days,
            adjustment_of=self.adjustments.get,
        )

    def bars(self, symbol: str, as_of: date | None = None) -> BarSeries:
        series = self._series.get(symbol)
        if series is None and as_of is not None and self._loop is not None and self._off_loop():
            future = asyncio.run_coroutine_threadsafe(self.load(symbol, as_of), self._loop)
            future.result(timeout=LOAD_ON_DEMAND_TIMEOUT_S)
            series = self._series.get(symbol)
        if series is None:
            raise DataSourceError(
                f"{symbol}: bars not fetched yet (the fetch_market_data stage runs before detection)",
                source=self.name,
                symbol=symbol,
            )
        return series if as_of is None else series.upto(as_of)

    def _off_loop(self) -> bool:
        """True on a thread other than the loop's own (waiting there for the loop would deadlock)."""
        try:
            return asyncio.get_running_loop() is not self._loop
        except RuntimeError:
            return True

    def earnings_dates(self, symbol: str) -> list[date]:
        return []  # no vendor here supplies an earnings calendar; configure earnings_path for that

    def earnings_reports(self, symbol: str) -> list[EarningsReport]:
        return []

    def sector(self, symbol: str) -> str | None:
        return None

    def issues(self, symbol: str | None = None) -> list[DataIssue]:
        if symbol is not None:
            series = self._series.get(symbol)
            return list(series.issues) if series is not None else []
        return [i for s in self._series.values() for i in s.issues]

    async def aclose(self) -> None:
        await self.chain.aclose()
        if self.cache is not None:
            await self.cache.aclose()
