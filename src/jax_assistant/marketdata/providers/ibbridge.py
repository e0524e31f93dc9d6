"""The Jax IB bridge: ``GET /candles/{symbol}?limit=&timeframe=1d``.

Body ``{symbol, candles: [{timestamp, open, high, low, close, volume, vwap}]}`` (the contract). The
bridge pages by ``limit`` only (the most recent N candles), so the adapter asks for enough sessions to
cover the range and trims. 404 means the bridge (TWS) does not know the contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from urllib.parse import quote

from jax_assistant.marketdata.base import UnknownSymbolError
from jax_assistant.marketdata.providers.base import (
    LONG_OHLCV,
    VendorBars,
    VendorHttp,
    VendorResponseError,
    candles_from,
    error_text,
    exchange_date_from_ms,
    exchange_date_from_text,
)

MAX_LIMIT = 5000


def _when(value: object, source: str) -> date:
    if isinstance(value, str):
        return exchange_date_from_text(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        # Epoch seconds or milliseconds: anything past year 2286 in seconds is milliseconds.
        return exchange_date_from_ms(value if value > 1e10 else value * 1000)
    raise VendorResponseError(source, f"candle timestamp {value!r:.40} is neither text nor a number")


class IbBridgeSource:
    name = "ibbridge"
    adjustment = "vendor"  # TWS historical bars (TRADES): split-adjusted by IB, no switch

    def __init__(self, http: VendorHttp) -> None:
        self.http = http

    async def fetch_daily(self, symbol: str, start: date, end: date) -> VendorBars:
        # Sessions in the range plus the days since `end` (the bridge counts back from today).
        limit = min(MAX_LIMIT, (date.today() - start).days + 1)
        resp = await self.http.get(
            f"/candles/{quote(symbol, safe='')}", {"limit": max(limit, 1), "timeframe": "1d"}
        )
        body = resp.body
        if resp.status == 404:
            raise UnknownSymbolError(symbol, f"ib bridge: {error_text(body) or 'unknown contract'}")
        if resp.status != 200 or not isinstance(body, Mapping):
            raise VendorResponseError(self.name, f"{symbol}: HTTP {resp.status} {error_text(body)}".rstrip())
        candles = candles_from(
            body,
            "candles",
            source=self.name,
            symbol=symbol,
            when=lambda row: _when(row.get("timestamp"), self.name),
            fields=LONG_OHLCV,
        )
        candles.sort(key=lambda c: c.date)
        return VendorBars(self.name, symbol, self.adjustment, [c for c in candles if start <= c.date <= end])

    async def aclose(self) -> None:
        await self.http.aclose()
