"""Each vendor adapter against the fake vendor on loopback: shapes, auth, pagination, failure modes."""

from __future__ import annotations

import logging
from datetime import date

import pytest
from tests.fakes.vendors import ALPACA_SECRET, FDS_KEY, POLYGON_KEY, FakeVendors, Fault
from tests.marketdata.providers.conftest import HTTP_VENDORS, md_config, source

from jax_assistant.domain.errors import ConfigError
from jax_assistant.marketdata.base import UnknownSymbolError
from jax_assistant.marketdata.providers import (
    VendorResponseError,
    VendorUnavailableError,
    build_source,
    safe_url,
)
from jax_assistant.marketdata.settings import VendorName
from jax_assistant.pipeline.resilience import FakeClock, ResilienceRegistry

START, END = date(2025, 1, 2), date(2026, 11, 27)
ADJUSTED = {"polygon": True, "alpaca": True, "financialdatasets": True, "ibbridge": True, "yfinance": True}


@pytest.mark.parametrize("name", HTTP_VENDORS)
async def test_fetches_the_documented_shape_across_pages(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock, name: VendorName
) -> None:
    vendors.splits["AAPL"] = (date(2025, 6, 2), 4.0)  # adjusted prices differ from raw before it
    src = source(vendors, name, registry, clock)
    try:
        got = await src.fetch_daily("AAPL", START, END)
    finally:
        await src.aclose()
    want = vendors.prices("AAPL", START, END, adjusted=ADJUSTED[name])
    assert [c.date for c in got.candles] == [d for d, _ in want]
    assert [[c.open, c.high, c.low, c.close] for c in got.candles] == [row[:4] for _, row in want]
    assert [c.volume for c in got.candles] == pytest.approx([row[4] for _, row in want])
    assert got.source == name and got.symbol == "AAPL"
    pages = len(vendors.seen(name))
    if name == "ibbridge":
        assert pages == 1  # the bridge pages by `limit` only
        assert vendors.seen(name)[0].query["timeframe"] == "1d"
    elif name == "yfinance":
        assert pages == 1  # Yahoo's chart answers a whole range at once
    else:
        assert pages == -(-len(want) // vendors.page_size)  # every page followed, none twice


async def test_keys_go_where_each_vendor_documents_them(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock
) -> None:
    for name in ("polygon", "alpaca", "financialdatasets"):
        src = source(vendors, name, registry, clock)  # type: ignore[arg-type]
        await src.fetch_daily("MSFT", date(2026, 11, 2), END)
        await src.aclose()
    polygon, alpaca, fds = (
        vendors.seen("polygon")[0],
        vendors.seen("alpaca")[0],
        vendors.seen("financialdatasets")[0],
    )
    assert polygon.query["apiKey"] == POLYGON_KEY and polygon.query["adjusted"] == "true"
    assert (
        polygon.query["sort"] == "asc"
        and polygon.path == "/v2/aggs/ticker/MSFT/range/1/day/2026-11-02/2026-11-27"
    )
    assert alpaca.headers["apca-api-secret-key"] == ALPACA_SECRET and "apiKey" not in alpaca.query
    assert alpaca.query["timeframe"] == "1Day" and alpaca.query["adjustment"] == "all"
    assert fds.headers["x-api-key"] == FDS_KEY and fds.query["interval"] == "day"


@pytest.mark.parametrize("name", HTTP_VENDORS)
async def test_unknown_symbol_is_a_clear_data_error(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock, name: VendorName
) -> None:
    src = source(vendors, name, registry, clock)
    with pytest.raises(UnknownSymbolError, match="ZZZZ") as info:
        await src.fetch_daily("ZZZZ", START, END)
    await src.aclose()
    assert info.value.symbol == "ZZZZ"


async def test_polygon_empty_range_is_empty_not_unknown(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock
) -> None:
    src = source(vendors, "polygon", registry, clock)
    got = await src.fetch_daily("AAPL", date(2026, 11, 28), date(2026, 11, 29))  # a weekend
    await src.aclose()
    assert got.candles == []
    assert [r.path for r in vendors.seen("polygon")][-1] == "/v3/reference/tickers/AAPL"  # settled by lookup


@pytest.mark.parametrize("name", HTTP_VENDORS)
async def test_429_is_retried_after_the_servers_retry_after(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock, name: VendorName
) -> None:
    vendors.fault(name, Fault(429, retry_after=7))
    src = source(vendors, name, registry, clock)
    got = await src.fetch_daily("NVDA", date(2026, 11, 2), END)
    await src.aclose()
    assert len(got.candles) == len(vendors.prices("NVDA", date(2026, 11, 2), END, adjusted=True))
    assert 7.0 in clock.sleeps  # the server's 7 s, not the 0.5 s backoff


@pytest.mark.parametrize("name", HTTP_VENDORS)
async def test_5xx_retried_then_given_up_as_unavailable(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock, name: VendorName
) -> None:
    vendors.fault(name, Fault(502))
    src = source(vendors, name, registry, clock)
    assert (await src.fetch_daily("NVDA", date(2026, 11, 2), END)).candles  # one 502, then fine
    vendors.fault(name, Fault(500), Fault(503), Fault(500))
    before = len(vendors.seen(name))
    with pytest.raises(VendorUnavailableError, match="gave up after 3 attempt"):
        await src.fetch_daily("NVDA", date(2026, 11, 2), END)
    await src.aclose()
    assert len(vendors.seen(name)) - before == 3  # the policy's attempts, no more


async def test_a_hung_request_times_out_and_is_retried(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock
) -> None:
    vendors.fault("alpaca", Fault("hang"))
    src = source(vendors, "alpaca", registry, clock, timeout_s=0.3)
    got = await src.fetch_daily("AAPL", date(2026, 11, 2), END)
    await src.aclose()
    assert got.candles and len(vendors.seen("alpaca")) == 2


@pytest.mark.parametrize("kind", ["garbage", "oversized"])
async def test_garbage_and_oversized_bodies_are_refused(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock, kind: str
) -> None:
    vendors.fault("polygon", Fault(kind))  # type: ignore[arg-type]
    src = source(vendors, "polygon", registry, clock)
    with pytest.raises(VendorResponseError, match="not JSON" if kind == "garbage" else "exceeds"):
        await src.fetch_daily("AAPL", date(2026, 11, 2), END)
    await src.aclose()


async def test_refused_key_is_unavailable_and_never_shown(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    src = source(vendors, "polygon", registry, clock, api_key="wrong-5ecret-key")
    with pytest.raises(VendorUnavailableError, match="401") as info:
        await src.fetch_daily("AAPL", START, END)
    vendors.fault("polygon", Fault(503), Fault(503), Fault(503))
    src2 = source(vendors, "polygon", registry, clock)
    with pytest.raises(VendorUnavailableError) as info2:
        await src2.fetch_daily("AAPL", START, END)
    await src.aclose()
    await src2.aclose()
    # Everything the client side logged (httpx included); the fake server's access log is the vendor's.
    client_logs = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("uvicorn"))
    assert "HTTP Request: GET" in client_logs  # httpx did log the requests, with the key masked
    shown = str(info.value) + str(info2.value) + client_logs
    assert "apiKey=%5BREDACTED%5D" in str(info2.value) or "apiKey=[REDACTED]" in str(info2.value)
    assert "wrong-5ecret-key" not in shown and POLYGON_KEY not in shown


def test_safe_url_hides_every_sensitive_query_value() -> None:
    url = safe_url("https://api.polygon.io/v2/aggs?apiKey=abc&cursor=xyz&token=t0k")
    assert "abc" not in url and "t0k" not in url and "cursor=xyz" in url


async def test_next_url_off_the_vendors_origin_is_not_followed(
    vendors: FakeVendors, registry: ResilienceRegistry, clock: FakeClock
) -> None:
    src = source(vendors, "polygon", registry, clock)
    vendors.url = "http://attacker.invalid:9"  # the fake now hands out next_url links to another host
    with pytest.raises(VendorResponseError, match="refusing to follow"):
        await src.fetch_daily("AAPL", START, END)
    await src.aclose()


def test_missing_key_is_a_config_error_naming_the_setting(registry: ResilienceRegistry) -> None:
    md = md_config("http://127.0.0.1:9")
    md.alpaca.api_secret = None
    with pytest.raises(ConfigError, match=r"marketdata\.alpaca\.api_secret") as info:
        build_source("alpaca", md, registry)
    assert info.value.key == "marketdata.alpaca.api_secret"


def test_yfinance_without_the_extra_says_how_to_install_it(registry: ResilienceRegistry) -> None:
    try:
        import yfinance  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"jax-assistant\[yfinance\]"):
            md = md_config("http://127.0.0.1:9", yfinance={"via": "package"})
            build_source("yfinance", md, registry)
    else:
        pytest.skip("yfinance is installed: its source builds (it would need the network to fetch)")


def test_a_partial_vendor_section_keeps_the_vendors_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from jax_assistant.config import load_settings

    monkeypatch.setenv("JAX_PROVIDER", "polygon")
    monkeypatch.setenv("JAX_MARKETDATA__POLYGON__API_KEY", "pk_from_env")
    monkeypatch.setenv("JAX_MARKETDATA__ALPACA__RATE_LIMIT__LIMIT", "1000")
    settings = load_settings()
    polygon, alpaca = settings.marketdata.polygon, settings.marketdata.alpaca
    assert polygon.base_url == "https://api.polygon.io" and polygon.rate_limit.limit == 5
    assert polygon.api_key is not None and polygon.api_key.get_secret_value() == "pk_from_env"
    assert "pk_from_env" not in repr(settings)  # SecretStr
    assert alpaca.base_url == "https://data.alpaca.markets" and alpaca.rate_limit.limit == 1000
    assert alpaca.rate_limit.period_s == 60
