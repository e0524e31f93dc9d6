"""Polygon.io daily aggregates: ``GET /v2/aggs/ticker/{ticker}/range/1/day/{from}/{to}``.

Documented shapes used: query ``adjusted``, ``sort=asc``, ``limit`` (max 50000) and ``apiKey``; the body's
``status`` (``OK``/``DELAYED``/``ERROR``), ``adjusted``, ``results[{t (ms epoch), o, h, l, c, v, vw, n}]``
and ``next_url`` (a full URL without the key: the key is added back only for Polygon's own origin).
An empty ``results`` is ambiguous (no sessions, or no such ticker), so it is settled by
``GET /v3/reference/tickers/{ticker}``: 404 means the symbol is unknown.
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
    exchange_date_from_ms,
    number,
)

PAGE_LIMIT = 50_000


class PolygonSource:
    name = "polygon"

    def __init__(
        self, http: VendorHttp, *, api_key: str, adjusted: bool = True, max_pages: int = 200
    ) -> None:
        self.http = http
        self._key = api_key
        self.adjusted = adjusted
        self.adjustment = "adjusted" if adjusted else "raw"
        self.max_pages = max_pages

    async def fetch_daily(self, symbol: str, start: date, end: date) -> VendorBars:
        path = f"/v2/aggs/ticker/{quote(symbol, safe='')}/range/1/day/{start.isoformat()}/{end.isoformat()}"
        params: dict[str, Any] = {
            "adjusted": "true" if self.adjusted else "false",
            "sort": "asc",
            "limit": PAGE_LIMIT,
            "apiKey": self._key,
        }
        url: str | None = path
        candles: list[Candle] = []
        pages = 0
        while url is not None:
            pages += 1
            if pages > self.max_pages:
                raise VendorResponseError(
                    self.name, f"{symbol}: more than {self.max_pages} pages (next_url loop?)"
                )
            resp = await self.http.get(url, params)
            body = resp.body
            if resp.status == 404:
                raise UnknownSymbolError(symbol, f"polygon has no ticker {symbol!r}")
            if resp.status != 200 or not isinstance(body, Mapping):
                raise VendorResponseError(
                    self.name, f"{symbol}: HTTP {resp.status} {error_text(body)}".rstrip()
                )
            if body.get("status") not in ("OK", "DELAYED"):
                raise VendorResponseError(
                    self.name, f"{symbol}: status {body.get('status')!r} {error_text(body)}".rstrip()
                )
            if "adjusted" in body and bool(body["adjusted"]) != self.adjusted:
                # Never mix price bases: the cache keys series by adjustment.
                raise VendorResponseError(
                    self.name, f"{symbol}: asked adjusted={self.adjusted}, got {body['adjusted']}"
                )
            candles += candles_from(
                body,
                "results",
                source=self.name,
                symbol=symbol,
                when=lambda row: exchange_date_from_ms(number(row, "t", self.name)),
                fields=SHORT_OHLCV,
            )
            next_url = body.get("next_url")
            url = next_url if isinstance(next_url, str) and next_url else None
            params = {"apiKey": self._key}  # next_url carries the cursor and the original query
        if not candles:
            await self._check_known(symbol)
        return VendorBars(self.name, symbol, self.adjustment, [c for c in candles if start <= c.date <= end])

    async def _check_known(self, symbol: str) -> None:
        resp = await self.http.get(f"/v3/reference/tickers/{quote(symbol, safe='')}", {"apiKey": self._key})
        if resp.status == 404:
            raise UnknownSymbolError(symbol, "polygon has no such ticker")

    async def aclose(self) -> None:
        await self.http.aclose()
