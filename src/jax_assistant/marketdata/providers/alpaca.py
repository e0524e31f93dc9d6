"""Alpaca market data v2 bars: ``GET /v2/stocks/{symbol}/bars``.

Headers ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY``; query ``timeframe=1Day``, ``start``/``end``
(RFC 3339 or a date), ``limit`` (max 10000), ``adjustment`` (raw/split/dividend/all), ``feed``,
``page_token``. Body ``{bars: [{t, o, h, l, c, v, n, vw}] | null, symbol, next_page_token}``. An
invalid symbol is a 422 (or 404) whose ``message`` names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any
from urllib.parse import quote

from jax_assistant.marketdata.base import UnknownSymbolError
from jax_assistant.marketdata.providers.base import (
    SHORT_OHLCV,
    Candle,
    VendorBars,
    VendorHttp,
    VendorResponseError,
    candles_from,
    error_text,
    text_date,
)

PAGE_LIMIT = 10_000


class AlpacaSource:
    name = "alpaca"

    def __init__(
        self, http: VendorHttp, *, adjustment: str = "all", feed: str | None = None, max_pages: int = 200
    ) -> None:
        self.http = http
        self.adjustment = adjustment
        self.feed = feed
        self.max_pages = max_pages

    async def fetch_daily(self, symbol: str, start: date, end: date) -> VendorBars:
        path = f"/v2/stocks/{quote(symbol, safe='')}/bars"
        params: dict[str, Any] = {
            "timeframe": "1Day",
            "start": start.isoformat(),
            "end": end.isoformat(),
            "limit": PAGE_LIMIT,
            "adjustment": self.adjustment,
        }
        if self.feed:
            params["feed"] = self.feed
        candles: list[Candle] = []
        for _page in range(self.max_pages):
            resp = await self.http.get(path, params)
            body = resp.body
            if resp.status in (404, 422) or (resp.status == 400 and "symbol" in error_text(body).lower()):
                raise UnknownSymbolError(symbol, f"alpaca: {error_text(body) or 'invalid symbol'}")
            if resp.status != 200 or not isinstance(body, Mapping):
                raise VendorResponseError(
                    self.name, f"{symbol}: HTTP {resp.status} {error_text(body)}".rstrip()
                )
            # "bars" is null when there are none.
            candles += candles_from(
                body,
                "bars",
                source=self.name,
                symbol=symbol,
                when=lambda row: text_date(row, "t", self.name),
                fields=SHORT_OHLCV,
            )
            token = body.get("next_page_token")
            if not isinstance(token, str) or not token:
                return VendorBars(
                    self.name, symbol, self.adjustment, [c for c in candles if start <= c.date <= end]
                )
            params = {**params, "page_token": token}
        raise VendorResponseError(
            self.name, f"{symbol}: more than {self.max_pages} pages (next_page_token loop?)"
        )

    async def aclose(self) -> None:
        await self.http.aclose()
