"""Fake market-data vendors on loopback: Polygon, Alpaca, financialdatasets.ai, the Jax IB bridge and
Yahoo's chart endpoint (``/v8/finance/chart/{symbol}``, the API behind the yfinance package).

One FastAPI app serves the five vendors' documented endpoints and shapes, from a deterministic set of
daily bars, with the vendors' authentication checks, pagination and failure modes:

* ``faults[vendor]`` is a FIFO of planned answers consumed one per request: ``Fault(429, retry_after=7)``,
  ``Fault(503)``, ``Fault("hang")`` (held until the test ends), ``Fault("garbage")``,
  ``Fault("oversized")``, ``Fault("body", body={...})`` (JSON that is not the vendor's shape);
* ``down`` lists vendors answering every request with 503;
* ``splits[symbol] = (date, ratio)`` makes adjusted prices before ``date`` equal raw / ratio, so tests
  can change a vendor's history under a cached series;
* ``dividends[symbol] = (date, factor)`` makes Yahoo's ``adjclose`` before ``date`` equal close * factor
  (its quote prices stay split-adjusted only, as Yahoo's are); ``yahoo_nulls`` are sessions Yahoo
  lists with null prices.

Every request is recorded in ``requests`` (vendor, path, query, headers) so tests can assert what was
asked, including that keys went where the vendor documents them.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from tests.api.helpers import LiveServer

from jax_assistant.domain.sessions import is_session

NY = ZoneInfo("America/New_York")
POLYGON_KEY = "pk_test_5ecret"
ALPACA_KEY_ID = "AKTESTKEYID"
ALPACA_SECRET = "alpaca-5ecret"
FDS_KEY = "fds-5ecret"
LAST_SESSION = date(2026, 11, 27)  # a Friday

Vendor = Literal["polygon", "alpaca", "financialdatasets", "ibbridge", "yfinance"]


@dataclass
class Fault:
    kind: int | Literal["hang", "garbage", "oversized", "body"]
    retry_after: float | str | None = None
    body: Any = None  # for "body": this JSON with status 200 (a shape that is not the vendor's)


@dataclass(frozen=True)
class Seen:
    vendor: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


def sessions(start: date, end: date) -> list[date]:
    out, day = [], start
    while day <= end:
        if is_session(day):
            out.append(day)
        day += timedelta(days=1)
    return out


def make_bars(
    symbol: str, start: date = date(2023, 1, 3), end: date = LAST_SESSION
) -> dict[date, list[float]]:
    """Deterministic raw (unadjusted) OHLCV per session: a wave around a symbol-specific level."""
    base = 50.0 + 10.0 * (sum(map(ord, symbol)) % 17)
    out = {}
    for i, day in enumerate(sessions(start, end)):
        close = base * (1.0 + 0.1 * math.sin(i / 9.0)) + 0.01 * i
        open_ = close * (1.0 - 0.004 * math.cos(i / 3.0))
        out[day] = [
            round(open_, 4),
            round(max(open_, close) * 1.01, 4),
            round(min(open_, close) * 0.99, 4),
            round(close, 4),
            float(1_000_000 + 1000 * (i % 50)),
        ]
    return out


@dataclass
class FakeVendors:
    bars: dict[str, dict[date, list[float]]] = field(default_factory=dict)
    splits: dict[str, tuple[date, float]] = field(default_factory=dict)
    dividends: dict[str, tuple[date, float]] = field(default_factory=dict)
    yahoo_nulls: set[date] = field(default_factory=set)
    faults: dict[str, deque[Fault]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    requests: list[Seen] = field(default_factory=list)
    page_size: int = 250  # small, so a two-year history takes several pages everywhere
    released: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    def add(self, *symbols: str) -> None:
        for s in symbols:
            self.bars[s] = make_bars(s)

    def fault(self, vendor: str, *faults: Fault) -> None:
        self.faults.setdefault(vendor, deque()).extend(faults)

    def seen(self, vendor: str) -> list[Seen]:
        return [r for r in self.requests if r.vendor == vendor]

    def prices(
        self, symbol: str, start: date, end: date, *, adjusted: bool
    ) -> list[tuple[date, list[float]]]:
        split = self.splits.get(symbol)
        out = []
        for day, row in sorted(self.bars.get(symbol, {}).items()):
            if not start <= day <= end:
                continue
            o, h, lo, c, v = row
            if adjusted and split is not None and day < split[0]:
                r = split[1]
                o, h, lo, c, v = o / r, h / r, lo / r, c / r, v * r
            out.append((day, [round(o, 4), round(h, 4), round(lo, 4), round(c, 4), v]))
        return out

    # ------------------------------------------------------------------ the app

    async def _gate(self, vendor: str, request: Request) -> Response | None:
        self.requests.append(
            Seen(vendor, request.url.path, dict(request.query_params), dict(request.headers))
        )
        if vendor in self.down:
            return JSONResponse({"status": "ERROR", "error": "service unavailable"}, status_code=503)
        planned = self.faults.get(vendor)
        if not planned:
            return None
        fault = planned.popleft()
        if fault.kind == "hang":
            await self.released.wait()
            return JSONResponse({}, status_code=504)
        if fault.kind == "garbage":
            return Response(
                b"<html><body>502 Bad Gateway</body></html>", status_code=200, media_type="text/html"
            )
        if fault.kind == "body":
            return JSONResponse(fault.body)
        if fault.kind == "oversized":
            return Response(b"[" + b"0," * 600_000 + b"0]", status_code=200, media_type="application/json")
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        return JSONResponse(
            {"status": "ERROR", "error": f"HTTP {fault.kind}"}, status_code=int(fault.kind), headers=headers
        )

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{start}/{end}")
        async def polygon_aggs(
            request: Request, ticker: str, multiplier: int, timespan: str, start: str, end: str
        ) -> Response:
            if (early := await self._gate("polygon", request)) is not None:
                return early
            q = request.query_params
            if q.get("apiKey") != POLYGON_KEY:
                return JSONResponse(
                    {"status": "ERROR", "request_id": "r1", "error": "Unknown API Key"}, status_code=401
                )
            adjusted = q.get("adjusted", "true") == "true"
            rows = self.prices(ticker, date.fromisoformat(start), date.fromisoformat(end), adjusted=adjusted)
            offset = int(q.get("cursor", "0"))
            limit = min(int(q.get("limit", "5000")), self.page_size)
            page = rows[offset : offset + limit]
            body: dict[str, Any] = {
                "ticker": ticker,
                "queryCount": len(page),
                "resultsCount": len(page),
                "adjusted": adjusted,
                "status": "OK",
                "request_id": "req",
            }
            if page:
                body["results"] = [
                    {
                        "v": v,
                        "vw": round((h + lo + c) / 3, 4),
                        "o": o,
                        "c": c,
                        "h": h,
                        "l": lo,
                        "t": int(datetime.combine(d, time(0), NY).timestamp() * 1000),
                        "n": 1000,
                    }
                    for d, (o, h, lo, c, v) in page
                ]
            if offset + limit < len(rows):
                body["next_url"] = (
                    f"{self.url}/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{start}/{end}"
                    f"?cursor={offset + limit}&adjusted={q.get('adjusted', 'true')}&sort=asc"
                    f"&limit={q.get('limit', '5000')}"
                )
            return JSONResponse(body)

        @app.get("/v3/reference/tickers/{ticker}")
        async def polygon_ticker(request: Request, ticker: str) -> Response:
            if (early := await self._gate("polygon", request)) is not None:
                return early
            if ticker not in self.bars:
                return JSONResponse(
                    {"status": "NOT_FOUND", "request_id": "r", "message": "Ticker not found."},
                    status_code=404,
                )
            return JSONResponse({"status": "OK", "results": {"ticker": ticker, "active": True}})

        @app.get("/v2/stocks/{symbol}/bars")
        async def alpaca_bars(request: Request, symbol: str) -> Response:
            if (early := await self._gate("alpaca", request)) is not None:
                return early
            h = request.headers
            if h.get("apca-api-key-id") != ALPACA_KEY_ID or h.get("apca-api-secret-key") != ALPACA_SECRET:
                return JSONResponse({"message": "forbidden."}, status_code=403)
            if symbol not in self.bars:
                return JSONResponse(
                    {"code": 42210000, "message": f"invalid symbol: {symbol}"}, status_code=422
                )
            q = request.query_params
            adjusted = q.get("adjustment", "raw") != "raw"
            rows = self.prices(
                symbol,
                date.fromisoformat(q["start"][:10]),
                date.fromisoformat(q["end"][:10]),
                adjusted=adjusted,
            )
            offset = int(q.get("page_token", "0") or 0)
            limit = min(int(q.get("limit", "1000")), self.page_size)
            page = rows[offset : offset + limit]
            return JSONResponse(
                {
                    "bars": [
                        {
                            "t": datetime.combine(d, time(0), NY)
                            .astimezone(ZoneInfo("UTC"))
                            .strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "o": o,
                            "h": hi,
                            "l": lo,
                            "c": c,
                            "v": v,
                            "n": 100,
                            "vw": c,
                        }
                        for d, (o, hi, lo, c, v) in page
                    ]
                    or None,
                    "symbol": symbol,
                    "next_page_token": str(offset + limit) if offset + limit < len(rows) else None,
                }
            )

        @app.get("/prices/")
        async def fds_prices(request: Request) -> Response:
            if (early := await self._gate("financialdatasets", request)) is not None:
                return early
            if request.headers.get("x-api-key") != FDS_KEY:
                return JSONResponse({"error": "Invalid API key"}, status_code=401)
            q = request.query_params
            ticker = q.get("ticker", "")
            if ticker not in self.bars:
                return JSONResponse({"error": f"Ticker {ticker} not found"}, status_code=404)
            rows = self.prices(
                ticker, date.fromisoformat(q["start_date"]), date.fromisoformat(q["end_date"]), adjusted=True
            )
            offset = int(q.get("offset", "0"))
            page = rows[offset : offset + self.page_size]
            body: dict[str, Any] = {
                "prices": [
                    {
                        "ticker": ticker,
                        "open": o,
                        "close": c,
                        "high": hi,
                        "low": lo,
                        "volume": int(v),
                        "time": datetime.combine(d, time(0), NY).isoformat(),
                        "time_milliseconds": int(datetime.combine(d, time(0), NY).timestamp() * 1000),
                    }
                    for d, (o, hi, lo, c, v) in page
                ]
            }
            if offset + self.page_size < len(rows):
                body["next_page_url"] = (
                    f"{self.url}/prices/?ticker={ticker}&interval=day&interval_multiplier=1"
                    f"&start_date={q['start_date']}&end_date={q['end_date']}&offset={offset + self.page_size}"
                )
            return JSONResponse(body)

        @app.get("/candles/{symbol}")
        async def ib_candles(request: Request, symbol: str) -> Response:
            if (early := await self._gate("ibbridge", request)) is not None:
                return early
            if symbol not in self.bars:
                return JSONResponse({"error": f"No security definition found for {symbol}"}, status_code=404)
            q = request.query_params
            limit = int(q.get("limit", "100"))
            rows = self.prices(symbol, date(1900, 1, 1), date(2100, 1, 1), adjusted=True)[-limit:]
            return JSONResponse(
                {
                    "symbol": symbol,
                    "candles": [
                        {
                            "timestamp": datetime.combine(d, time(16), NY).isoformat(),
                            "open": o,
                            "high": hi,
                            "low": lo,
                            "close": c,
                            "volume": v,
                            "vwap": c,
                        }
                        for d, (o, hi, lo, c, v) in rows
                    ],
                }
            )

        @app.get("/v8/finance/chart/{symbol}")
        async def yahoo_chart(request: Request, symbol: str) -> Response:
            if (early := await self._gate("yfinance", request)) is not None:
                return early
            if symbol not in self.bars:
                return JSONResponse(
                    {
                        "chart": {
                            "result": None,
                            "error": {
                                "code": "Not Found",
                                "description": "No data found, symbol may be delisted",
                            },
                        }
                    },
                    status_code=404,
                )
            q = request.query_params
            if q.get("interval") != "1d":
                return JSONResponse(
                    {"chart": {"result": None, "error": {"code": "Bad Request", "description": "interval"}}},
                    status_code=400,
                )
            first = datetime.fromtimestamp(int(q["period1"]), ZoneInfo("UTC")).date()
            last = datetime.fromtimestamp(int(q["period2"]) - 1, ZoneInfo("UTC")).date()
            rows = self.prices(symbol, first, last, adjusted=True)  # Yahoo's quotes are split-adjusted
            dividend = self.dividends.get(symbol)
            result: dict[str, Any] = {
                "meta": {
                    "currency": "USD",
                    "symbol": symbol,
                    "exchangeName": "NMS",
                    "instrumentType": "EQUITY",
                    "timezone": "EST",
                    "exchangeTimezoneName": "America/New_York",
                    "dataGranularity": "1d",
                },
                "indicators": {"quote": [{}], "adjclose": [{}]},
            }
            if rows:
                nulls = [d in self.yahoo_nulls for d, _ in rows]

                def column(k: int) -> list[float | None]:
                    return [None if null else r[k] for (_, r), null in zip(rows, nulls, strict=True)]

                adjclose = [
                    None if null else round(r[3] * (dividend[1] if dividend and d < dividend[0] else 1.0), 6)
                    for (d, r), null in zip(rows, nulls, strict=True)
                ]
                result["timestamp"] = [int(datetime.combine(d, time(9, 30), NY).timestamp()) for d, _ in rows]
                result["indicators"] = {
                    "quote": [
                        {"open": column(0), "high": column(1), "low": column(2), "close": column(3)}
                        | {"volume": [None if x is None else int(x) for x in column(4)]}
                    ],
                    "adjclose": [{"adjclose": adjclose}],
                }
                result["events"] = {}
            return JSONResponse({"chart": {"result": [result], "error": None}})

        return app


@asynccontextmanager
async def vendor_server(vendors: FakeVendors | None = None) -> AsyncIterator[FakeVendors]:
    """The fake vendors on a real uvicorn server on 127.0.0.1 (a free port)."""
    fake = vendors or FakeVendors()
    server = LiveServer(fake.app())
    await server.start()
    fake.url = server.url
    try:
        yield fake
    finally:
        fake.released.set()  # let hung requests finish so the server can stop
        await server.stop()
