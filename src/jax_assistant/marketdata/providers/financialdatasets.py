"""financialdatasets.ai prices: ``GET /prices/?ticker=&interval=day&start_date=&end_date=``.

Header ``X-API-KEY``. Body ``{prices: [{open, close, high, low, volume, time}], next_page_url?}``;
``time`` is an ISO timestamp. Unknown tickers answer 404 (or 400 naming the ticker).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from jax_assistant.marketdata.base import UnknownSymbolError
from jax_assistant.marketdata.providers.base import (
    LONG_OHLCV,
    Candle,
    VendorBars,
    VendorHttp,
    VendorResponseError,
    candles_from,
    error_text,
    text_date,
)

PAGE_LIMIT = 5000


class FinancialDatasetsSource:
    name = "financialdatasets"
    adjustment = "vendor"  # the vendor documents no adjustment switch: one basis, its own

    def __init__(self, http: VendorHttp, *, max_pages: int = 200) -> None:
        self.http = http
        self.max_pages = max_pages

    async def fetch_daily(self, symbol: str, start: date, end: date) -> VendorBars:
        url = "/prices/"
        params: dict[str, Any] | None = {
            "ticker": symbol,
            "interval": "day",
            "interval_multiplier": 1,
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "limit": PAGE_LIMIT,
        }
        candles: list[Candle] = []
        for _page in range(self.max_pages):
            resp = await self.http.get(url, params)
            body = resp.body
            if resp.status == 404 or (resp.status == 400 and "ticker" in error_text(body).lower()):
                raise UnknownSymbolError(symbol, f"financialdatasets: {error_text(body) or 'unknown ticker'}")
            if resp.status != 200 or not isinstance(body, Mapping):
                raise VendorResponseError(
                    self.name, f"{symbol}: HTTP {resp.status} {error_text(body)}".rstrip()
                )
            candles += candles_from(
                body,
                "prices",
                source=self.name,
                symbol=symbol,
                when=lambda row: text_date(row, "time", self.name),
                fields=LONG_OHLCV,
            )
            nxt = body.get("next_page_url")
            if not isinstance(nxt, str) or not nxt:
                candles.sort(key=lambda c: c.date)
                return VendorBars(
                    self.name, symbol, self.adjustment, [c for c in candles if start <= c.date <= end]
                )
            url, params = nxt, None  # the link carries the query; the key stays in the header
        raise VendorResponseError(
            self.name, f"{symbol}: more than {self.max_pages} pages (next_page_url loop?)"
        )

    async def aclose(self) -> None:
        await self.http.aclose()
