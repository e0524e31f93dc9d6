"""The yfinance vendor through Yahoo's chart endpoint (``via = "chart"``) against a loopback Yahoo.

The shapes, unknown symbol, 429/5xx and pagination are also covered by the parametrised tests in
test_vendors.py; here what is Yahoo's own: the adjclose ratio, nulls, the empty range, hangs, garbage.
"""

from __future__ import annotations

from datetime import date

import pytest
from tests.fakes.vendors import FakeVendors, Fault
from tests.marketdata.providers.conftest import md_config, source

from jax_assistant.marketdata.base import UnknownSymbolError
from jax_assistant.marketdata.providers import (
    VendorResponseError,
    VendorUnavailableError,
    YahooChartSource,
    YFinanceSource,
    build_source,
)
from jax_assistant.marketdata.settings import MarketDataConfig
from jax_assistant.pipeline.policy import RateLimitConfig
from jax_assistant.pipeline.resilience import FakeClock, ResilienceRegistry

START, END = date(2026, 10, 1), date(2026, 11, 27)
EX_DIV = date(2026, 11, 2)


def test_via_chooses_the_chart_endpoint_or_the_package(registry: ResilienceRegistry) -> None:
    assert isinstance(build_source("yfinance", md_config("http://127.0.0.1:9"), registry), YahooChartSource)
    assert MarketDataConfig().yfinance.via == "package"  # the default stays the optional extra
    try:
        import yfinance
    except ImportError:
        pytest.skip("the yfinance extra is not installed")
    md = md_config("http://127.0.0.1:9", yfinance={"via": "package"})
    assert isinstance(build_source("yfinance", md, registry, yfinance_module=yfinance), YFinanceSource)


async def test_the_request_is_yahoos_documented_query(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock
) -> None:
    src = source(vendors, "yfinance", registry, clock)
    got = await src.fetch_daily("MSFT", START, END)
    await src.aclose()
    (seen,) = vendors.seen("yfinance")
    assert seen.path == "/v8/finance/chart/MSFT"
    assert seen.query["interval"] == "1d" and seen.query["events"] == "div,splits"
    assert int(seen.query["period1"]) == 1790812800  # 2026-10-01T00:00Z
    assert int(seen.query["period2"]) == 1795824000  # 2026-11-28T00:00Z: exclusive, so END is in
    assert got.candles[0].date == START and got.candles[-1].date == END


async def test_adjusted_applies_the_dividend_ratio_unadjusted_keeps_split_prices(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock
) -> None:
    vendors.dividends["AAPL"] = (EX_DIV, 0.99)
    vendors.splits["AAPL"] = (date(2026, 10, 15), 2.0)  # Yahoo's quotes are split-adjusted either way
    adj = source(vendors, "yfinance", registry, clock)
    raw = source(vendors, "yfinance", registry, clock, adjusted=False)
    a, r = await adj.fetch_daily("AAPL", START, END), await raw.fetch_daily("AAPL", START, END)
    await adj.aclose()
    await raw.aclose()
    assert (a.adjustment, r.adjustment) == ("all", "split")  # never cached as one series
    split_adjusted = vendors.prices("AAPL", START, END, adjusted=True)
    assert [[c.open, c.high, c.low, c.close, c.volume] for c in r.candles] == [
        row for _, row in split_adjusted
    ]
    for ca, cr in zip(a.candles, r.candles, strict=True):
        factor = 0.99 if ca.date < EX_DIV else 1.0
        assert [ca.open, ca.high, ca.low, ca.close] == pytest.approx(
            [cr.open * factor, cr.high * factor, cr.low * factor, cr.close * factor], rel=1e-6
        )
        assert ca.volume == cr.volume  # auto_adjust leaves volume alone


async def test_sessions_with_null_prices_are_skipped(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock
) -> None:
    vendors.yahoo_nulls = {date(2026, 11, 3)}
    src = source(vendors, "yfinance", registry, clock)
    got = await src.fetch_daily("AAPL", START, END)
    await src.aclose()
    dates = [c.date for c in got.candles]
    assert date(2026, 11, 3) not in dates and date(2026, 11, 4) in dates
    assert len(dates) == len(vendors.prices("AAPL", START, END, adjusted=True)) - 1


async def test_a_range_without_sessions_is_empty_not_unknown(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock
) -> None:
    src = source(vendors, "yfinance", registry, clock)
    got = await src.fetch_daily("AAPL", date(2026, 11, 28), date(2026, 11, 29))  # a weekend
    await src.aclose()
    assert got.candles == [] and len(vendors.seen("yfinance")) == 1


async def test_unknown_symbol_carries_yahoos_description(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock
) -> None:
    src = source(vendors, "yfinance", registry, clock)
    with pytest.raises(UnknownSymbolError, match="symbol may be delisted"):
        await src.fetch_daily("ZZZZ", START, END)
    await src.aclose()
    assert len(vendors.seen("yfinance")) == 1  # a 404 is an answer, never retried


async def test_429_waits_the_retry_after_and_5xx_exhausts_to_unavailable(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock
) -> None:
    vendors.fault("yfinance", Fault(429, retry_after=11), Fault(503))
    src = source(vendors, "yfinance", registry, clock)
    assert (await src.fetch_daily("NVDA", START, END)).candles
    assert 11.0 in clock.sleeps and len(vendors.seen("yfinance")) == 3
    vendors.fault("yfinance", Fault(500), Fault(502), Fault(500))
    with pytest.raises(VendorUnavailableError, match="gave up after 3 attempt"):
        await src.fetch_daily("NVDA", START, END)
    await src.aclose()


async def test_a_hung_request_times_out_and_is_retried(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock
) -> None:
    vendors.fault("yfinance", Fault("hang"))
    src = source(vendors, "yfinance", registry, clock, timeout_s=0.3)
    got = await src.fetch_daily("AAPL", START, END)
    await src.aclose()
    assert got.candles and len(vendors.seen("yfinance")) == 2


@pytest.mark.parametrize(("kind", "message"), [("garbage", "not JSON"), ("oversized", "exceeds")])
async def test_garbage_and_oversized_bodies_are_refused(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock, kind: str, message: str
) -> None:
    vendors.fault("yfinance", Fault(kind))  # type: ignore[arg-type]
    src = source(vendors, "yfinance", registry, clock)
    with pytest.raises(VendorResponseError, match=message):
        await src.fetch_daily("AAPL", START, END)
    await src.aclose()


BAD_BODIES = [
    {"chart": {"result": None, "error": {"code": "Bad Request", "description": "Invalid input"}}},
    {"chart": {"result": [], "error": None}},
    {"finance": {"result": None}},
    {"chart": {"result": [{"timestamp": [1790861400], "indicators": {"quote": [{"open": [1.0]}]}}]}},
    {
        "chart": {
            "result": [
                {
                    "timestamp": [1790861400],
                    "indicators": {
                        "quote": [{"open": ["1"], "high": [1], "low": [1], "close": [1], "volume": [1]}],
                        "adjclose": [{"adjclose": [1]}],
                    },
                }
            ]
        }
    },
]


@pytest.mark.parametrize("body", BAD_BODIES)
async def test_json_that_is_not_the_chart_shape_is_refused(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock, body: object
) -> None:
    vendors.fault("yfinance", Fault("body", body=body))
    src = source(vendors, "yfinance", registry, clock)
    with pytest.raises(VendorResponseError, match=r"yfinance: (AAPL|indicator)"):
        await src.fetch_daily("AAPL", START, END)
    await src.aclose()


async def test_every_request_takes_a_grant_of_the_yahoo_limit(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock
) -> None:
    src = source(vendors, "yfinance", registry, clock, rate_limit=RateLimitConfig(limit=2, period_s=60))
    assert isinstance(src, YahooChartSource)
    for symbol in ("AAPL", "MSFT", "NVDA"):
        await src.fetch_daily(symbol, START, END)
    await src.aclose()
    sent = list(src.http.sent_at)
    assert len(sent) == 3 and sent[2] - sent[0] >= 60.0  # the third waited for the window
