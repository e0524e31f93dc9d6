"""Yahoo Finance, two ways (``[marketdata.yfinance].via``).

``via = "package"`` (default): the optional ``yfinance`` package (``pip install 'jax-assistant[yfinance]'``),
imported lazily: nothing of it loads unless this source is configured. ``auto_adjust`` follows the
vendor's ``adjusted`` setting. yfinance is blocking, so each download runs on a worker thread, one
limiter grant per download. An empty frame for the whole requested range means the ticker is unknown
(yfinance reports "possibly delisted" that way).

``via = "chart"``: Yahoo's unofficial (undocumented, but stable for years and what yfinance itself calls)
chart endpoint over :class:`VendorHttp`, so it shares the rate limit, retries and size cap of every
other adapter: ``GET /v8/finance/chart/{symbol}?period1=&period2=&interval=1d&events=div,splits`` →
``{"chart": {"result": [{"meta", "timestamp": [epoch s], "indicators": {"quote": [{open, high, low,
close, volume}], "adjclose": [{"adjclose"}]}}], "error": null}}``. An unknown symbol is a 404 whose
``chart.error.code`` is ``"Not Found"``. The quote prices are split-adjusted; ``adjusted = true`` also
applies dividends by scaling open/high/low/close by adjclose/close, as yfinance's ``auto_adjust`` does.
"""

from __future__ import annotations

import asyncio
import importlib
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote

from jax_assistant.domain.errors import ConfigError
from jax_assistant.marketdata.base import UnknownSymbolError
from jax_assistant.marketdata.providers.base import (
    Candle,
    VendorBars,
    VendorHttp,
    VendorResponseError,
    VendorUnavailableError,
    exchange_date_from_ms,
)
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


def _epoch(day: date) -> int:
    return int(datetime.combine(day, time(0), UTC).timestamp())


def _chart_error(body: Any) -> tuple[str, str]:
    """``(code, description)`` of a chart body's ``error`` object, or empty strings."""
    chart = body.get("chart") if isinstance(body, Mapping) else None
    error = chart.get("error") if isinstance(chart, Mapping) else None
    if not isinstance(error, Mapping):
        return "", ""
    return str(error.get("code") or ""), str(error.get("description") or "")


def _series(block: Any, key: str, n: int, symbol: str) -> Sequence[Any]:
    values = block.get(key) if isinstance(block, Mapping) else None
    if not isinstance(values, list) or len(values) != n:
        raise VendorResponseError("yfinance", f"{symbol}: indicator {key!r} is not a list of {n} values")
    return values


def _value(x: Any) -> float | None:
    if x is None:
        return None  # Yahoo leaves nulls in the arrays for halted or partial sessions
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise VendorResponseError("yfinance", f"indicator value {x!r:.40} is not a number")
    return float(x)


class YahooChartSource:
    """Yahoo's chart endpoint over httpx (``via = "chart"``); the same name and price bases as the
    package path, so the cache treats both alike."""

    name = "yfinance"

    def __init__(self, http: VendorHttp, *, adjusted: bool = True) -> None:
        self.http = http
        self.adjusted = adjusted
        self.adjustment = "all" if adjusted else "split"

    async def fetch_daily(self, symbol: str, start: date, end: date) -> VendorBars:
        params = {
            "period1": _epoch(start),
            "period2": _epoch(end + timedelta(days=1)),  # period2 is exclusive
            "interval": "1d",
            "events": "div,splits",
        }
        resp = await self.http.get(f"/v8/finance/chart/{quote(symbol, safe='')}", params)
        code, description = _chart_error(resp.body)
        if resp.status == 404:
            raise UnknownSymbolError(symbol, f"yahoo: {description or code or 'no such symbol'}")
        if resp.status != 200 or code:
            shown = f"{symbol}: HTTP {resp.status} {code} {description}".rstrip()
            raise VendorResponseError(self.name, shown)
        candles = self._candles(resp.body, symbol)
        candles.sort(key=lambda c: c.date)
        return VendorBars(self.name, symbol, self.adjustment, [c for c in candles if start <= c.date <= end])

    def _candles(self, body: Any, symbol: str) -> list[Candle]:
        chart = body.get("chart") if isinstance(body, Mapping) else None
        results = chart.get("result") if isinstance(chart, Mapping) else None
        if not isinstance(results, list) or len(results) != 1 or not isinstance(results[0], Mapping):
            raise VendorResponseError(self.name, f"{symbol}: 'chart.result' is not a one-item list")
        result = results[0]
        stamps = result.get("timestamp") or []  # absent when the range holds no session
        if not isinstance(stamps, list):
            raise VendorResponseError(self.name, f"{symbol}: 'timestamp' is not a list")
        if not stamps:
            return []
        n = len(stamps)
        indicators = result.get("indicators")
        quotes = indicators.get("quote") if isinstance(indicators, Mapping) else None
        if not isinstance(quotes, list) or not quotes:
            raise VendorResponseError(self.name, f"{symbol}: 'indicators.quote' is missing")
        q = quotes[0]
        o, h, lo, c, v = (_series(q, k, n, symbol) for k in ("open", "high", "low", "close", "volume"))
        adj: Sequence[Any] | None = None
        if self.adjusted:
            blocks = indicators.get("adjclose") if isinstance(indicators, Mapping) else None
            if not isinstance(blocks, list) or not blocks:
                raise VendorResponseError(self.name, f"{symbol}: adjusted prices asked, no 'adjclose'")
            adj = _series(blocks[0], "adjclose", n, symbol)
        out = []
        for i, stamp in enumerate(stamps):
            if isinstance(stamp, bool) or not isinstance(stamp, int | float):
                raise VendorResponseError(self.name, f"{symbol}: timestamp {stamp!r:.40} is not a number")
            values = [_value(x[i]) for x in (o, h, lo, c, v)]
            row = [x for x in values if x is not None]
            if len(row) < 5 or not row[3]:
                continue  # a null (or zero close) in Yahoo's arrays: no usable bar that day
            ratio = 1.0
            if adj is not None:
                a = _value(adj[i])
                if a is None:
                    continue
                ratio = a / row[3]
            op, hi, low, cl, vol = row
            out.append(
                Candle(
                    exchange_date_from_ms(stamp * 1000),
                    op * ratio,
                    hi * ratio,
                    low * ratio,
                    cl * ratio,
                    vol,
                )
            )
        return out

    async def aclose(self) -> None:
        await self.http.aclose()
