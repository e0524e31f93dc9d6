"""Yahoo Finance through the optional ``yfinance`` package (``pip install 'jax-assistant[yfinance]'``).

Imported lazily: nothing of it loads unless this source is configured. ``auto_adjust`` follows the
vendor's ``adjusted`` setting. yfinance is blocking, so each download runs on a worker thread, one
limiter grant per download. An empty frame for the whole requested range means the ticker is unknown
(yfinance reports "possibly delisted" that way).
"""

from __future__ import annotations

import asyncio
import importlib
import random
from datetime import date, timedelta
from typing import Any

from jax_assistant.domain.errors import ConfigError
from jax_assistant.marketdata.base import UnknownSymbolError
from jax_assistant.marketdata.providers.base import Candle, VendorBars, VendorUnavailableError
from jax_assistant.pipeline.base import TransientError
from jax_assistant.pipeline.policy import RetryPolicy
from jax_assistant.pipeline.resilience import Clock, RateLimiter, SystemClock, call_with_retry


def load_yfinance() -> Any:
    try:
        return importlib.import_module("yfinance")
    except ImportError:
        raise ConfigError(
            "provider yfinance needs the optional package: pip install 'jax-assistant[yfinance]'",
            key="provider",
        ) from None


class YFinanceSource:
    name = "yfinance"

    def __init__(
        self,
        *,
        limiter: RateLimiter,
        retry: RetryPolicy,
        adjusted: bool = True,
        clock: Clock | None = None,
        module: Any | None = None,
    ) -> None:
        self._yf = module if module is not None else load_yfinance()
        self.limiter = limiter
        self.retry = retry
        self.adjusted = adjusted
        self.adjustment = "all" if adjusted else "split"  # yfinance's raw prices are still split-adjusted
        self.clock: Clock = clock or SystemClock()
        self._rng = random.Random()

    def _download(self, symbol: str, start: date, end: date) -> list[Candle]:
        try:
            frame = self._yf.Ticker(symbol).history(
                start=start.isoformat(),
                end=(end + timedelta(days=1)).isoformat(),  # yfinance's end is exclusive
                interval="1d",
                auto_adjust=self.adjusted,
            )
        except (OSError, ConnectionError) as exc:
            raise TransientError(f"yfinance: {type(exc).__name__}: {exc}") from None
        out = []
        for stamp, row in frame.iterrows():
            out.append(
                Candle(
                    stamp.date(),
                    float(row["Open"]),
                    float(row["High"]),
                    float(row["Low"]),
                    float(row["Close"]),
                    float(row["Volume"]),
                )
            )
        return out

    async def fetch_daily(self, symbol: str, start: date, end: date) -> VendorBars:
        async def once() -> list[Candle]:
            await self.limiter.acquire()
            return await asyncio.to_thread(self._download, symbol, start, end)

        try:
            candles, _ = await call_with_retry(once, self.retry, clock=self.clock, rng=self._rng)
        except TransientError as exc:
            raise VendorUnavailableError(self.name, str(exc)) from exc
        if not candles and (end - start).days > 14:
            raise UnknownSymbolError(symbol, "yfinance returned no prices (unknown or delisted ticker)")
        return VendorBars(self.name, symbol, self.adjustment, [c for c in candles if start <= c.date <= end])

    async def aclose(self) -> None:
        return None
