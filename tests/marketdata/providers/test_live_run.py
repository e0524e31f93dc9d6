"""A whole run on a live provider: fetch stage first, unknown symbols failed by name, cache reused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest
from tests.fakes.vendors import FakeVendors
from tests.marketdata.providers.conftest import md_config
from tests.pgutil import backend_url

from jax_assistant.config import DEFAULT_PIPELINE, Settings
from jax_assistant.domain import SymbolStatus
from jax_assistant.orchestrator import Orchestrator, RunRequest

pytestmark = pytest.mark.usefixtures("api_auth_off")

END = date(2026, 11, 27)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with backend_url(request.param, tmp_path) as url:
        yield url


def live_settings(vendors: FakeVendors, database_url: str, provider: str = "polygon") -> Settings:
    md = md_config(vendors.url).model_copy(
        update={"cache": "database", "history_days": 300, "chain": ["polygon", "alpaca"]}
    )
    return Settings(provider=provider, database_url=database_url, marketdata=md)  # type: ignore[arg-type]


async def test_live_run_fetches_then_detects_and_reuses_the_cache(
    vendors: FakeVendors, database_url: str
) -> None:
    async with Orchestrator(live_settings(vendors, database_url)) as orch:
        assert [s.name for s in orch.stages()] == ["fetch_market_data", *DEFAULT_PIPELINE]
        outcome = await orch.start_run(RunRequest(symbols=["AAPL", "MSFT", "ZZZZ"], as_of=END))
        by = {r.symbol: r for r in outcome.results}
        assert outcome.run.provider == "polygon" and not outcome.run.simulated
        for sym in ("AAPL", "MSFT"):
            assert by[sym].status in (SymbolStatus.SUCCEEDED, SymbolStatus.DEGRADED), by[sym].error
            stages = [s.stage for s in by[sym].stages]
            assert stages[0] == "fetch_market_data"  # first, before detection reads the bars
            assert stages.index("detect_events") > 0
            assert by[sym].extras["fetch_market_data"]["reason"] == "cold"
            assert by[sym].extras["fetch_market_data"]["bars"] > 150
        assert by["ZZZZ"].status is SymbolStatus.FAILED
        assert "unknown symbol 'ZZZZ'" in (by["ZZZZ"].error or "")
        sent = len(vendors.requests)
        again = await orch.start_run(RunRequest(symbols=["AAPL", "MSFT"], as_of=END))
        assert len(vendors.requests) == sent  # history and tail both cached: no request at all
        assert {r.extras["fetch_market_data"]["reason"] for r in again.results} == {"fresh"}


async def test_chain_run_falls_back_when_the_first_vendor_is_down(
    vendors: FakeVendors, database_url: str
) -> None:
    vendors.down.add("polygon")
    async with Orchestrator(live_settings(vendors, database_url, provider="chain")) as orch:
        outcome = await orch.start_run(RunRequest(symbols=["NVDA"], as_of=END))
    (result,) = outcome.results
    assert result.status in (SymbolStatus.SUCCEEDED, SymbolStatus.DEGRADED), result.error
    assert result.extras["fetch_market_data"]["source"] == "alpaca"


def test_the_default_pipelines_do_not_change() -> None:
    for provider in ("sample", "csv"):
        orch = Orchestrator(Settings(provider=provider))  # type: ignore[arg-type]
        assert [s.name for s in orch.stages()] == DEFAULT_PIPELINE


async def test_a_resumed_process_reads_bars_fetched_by_another_from_the_cache(
    vendors: FakeVendors, database_url: str
) -> None:
    import asyncio

    settings = live_settings(vendors, database_url)
    async with Orchestrator(settings) as first:
        live = first.provider()
        await live.load("AAPL", END)  # type: ignore[attr-defined]
        want = live.bars("AAPL", END)
    sent = len(vendors.requests)
    async with Orchestrator(settings) as second:  # a new process: nothing loaded in memory
        live = second.provider()
        assert live.symbols() == []
        # Detection calls bars() on a worker thread; it loads the symbol from the cache on the loop.
        got = await asyncio.to_thread(live.bars, "AAPL", END)
    assert len(vendors.requests) == sent  # from the cache, no vendor request
    assert got.close.tolist() == want.close.tolist() and got.last_date == END


async def test_process_route_runs_a_live_provider_with_a_fetch_stage_override(
    vendors: FakeVendors, database_url: str
) -> None:
    import asyncio

    from tests.api.helpers import serve

    from jax_assistant.api import create_app

    app = create_app(live_settings(vendors, database_url), resume_on_startup=False)
    async with serve(app) as svc:
        resp = await svc.client.post(
            "/process",
            json={
                "symbols": ["MSFT"],
                "asOf": END.isoformat(),
                "stageOverrides": {"fetch_market_data": {"timeout_s": 60}},
            },
        )
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["runId"]
        for _ in range(400):
            body = (await svc.client.get(f"/runs/{run_id}")).json()
            if body["run"]["status"] not in ("pending", "running"):
                break
            await asyncio.sleep(0.05)
        assert body["run"]["status"] == "completed", body
        (symbol,) = body["symbols"]
        assert symbol["stages"][0]["stage"] == "fetch_market_data"
        status = (await svc.client.get("/status")).json()
        assert "marketdata.polygon" in status["resilience"]["rate_limits"]


async def test_an_unreachable_cache_does_not_stop_the_run(vendors: FakeVendors, tmp_path: Path) -> None:
    md = md_config(vendors.url).model_copy(
        update={
            "cache": "redis",
            "redis_url": "redis://127.0.0.1:1/0",
            "history_days": 200,
        }  # nothing listens
    )
    settings = Settings(
        provider="polygon", database_url=f"sqlite+aiosqlite:///{tmp_path / 'j.db'}", marketdata=md
    )  # type: ignore[arg-type]
    async with Orchestrator(settings) as orch:
        outcome = await orch.start_run(RunRequest(symbols=["AAPL"], as_of=END))
    (result,) = outcome.results
    assert result.status in (SymbolStatus.SUCCEEDED, SymbolStatus.DEGRADED), result.error
    assert result.extras["fetch_market_data"]["reason"] == "cold" and vendors.seen("polygon")
