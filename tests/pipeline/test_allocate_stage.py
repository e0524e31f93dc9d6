"""The run-level allocate stage over real data, called directly (``run_all``), and calculate_risk's
candidates: the correlated-exposure limit on two oil majors, and decisions independent of item order."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from jax_assistant.analysis.detectors import DetectorConfig
from jax_assistant.domain import TradeSetup
from jax_assistant.marketdata.csv_provider import CsvProvider
from jax_assistant.pipeline.base import StageContext, WorkItem, is_run_stage
from jax_assistant.pipeline.services import Services
from jax_assistant.pipeline.stages import AllocateStage, CalculateRiskStage
from jax_assistant.risk import PortfolioBook, PortfolioState, RiskConstraints, RiskManager
from jax_assistant.strategies.registry import StrategyRegistry

AS_OF = date(2015, 12, 31)  # XOM/CVX 60-session return correlation ~0.9 here
SYMBOLS = ["XOM", "CVX", "DUK", "AAPL", "MSFT", "JPM"]


@pytest.fixture(scope="module")
def provider(shared_data: Path) -> CsvProvider:
    return CsvProvider(shared_data / "daily_ohlcv_stooq_sp500.csv.gz", symbols=SYMBOLS)


def services(
    provider: CsvProvider, constraints: RiskConstraints, state: PortfolioState | None = None
) -> Services:
    return Services(
        provider=provider,
        detectors=DetectorConfig(),
        strategies=StrategyRegistry.default(),
        risk=RiskManager(constraints, PortfolioBook(state or PortfolioState()), risk_percent=2.0),
    )


def ctx(svc: Services, stage: str) -> StageContext:
    return StageContext(run_id="run_t", correlation_id="c", as_of=AS_OF, services=svc, stage=stage)


def setup_at_close(provider: CsvProvider, symbol: str, confidence: float = 0.6) -> TradeSetup:
    close = float(provider.bars(symbol, AS_OF).close[-1])
    return TradeSetup(
        id=f"ts_earnings_gap_v1_{symbol}_t",
        symbol=symbol,
        direction="long",
        entry=close,
        stop=round(close * 0.95, 2),
        targets=[round(close * 1.10, 2)],
        strategy_id="earnings_gap_v1",
        confidence=confidence,
    )


async def candidates(svc: Services, setups: dict[str, list[TradeSetup]]) -> list[WorkItem]:
    stage = CalculateRiskStage()
    items = []
    for symbol, s in setups.items():
        item = WorkItem(run_id="run_t", symbol=symbol, as_of=AS_OF, correlation_id="c", setups=s)
        items.append((await stage.run(ctx(svc, stage.name), item)).item)
    return items


def constraints(**portfolio: Any) -> RiskConstraints:
    return RiskConstraints().merged(
        {"portfolio_constraints": {"max_sector_exposure": 1.0, "max_correlated_exposure": 0.6, **portfolio}}
    )


def decisions(items: list[WorkItem]) -> dict[str, Any]:
    return {t.setup.id: t.risk for item in items for t in item.trades}


def test_allocate_is_a_run_level_stage() -> None:
    stage = AllocateStage()
    assert is_run_stage(stage) and stage.policy.after == ["calculate_risk"]
    assert not is_run_stage(CalculateRiskStage())


async def test_calculate_risk_only_produces_candidates(provider: CsvProvider) -> None:
    svc = services(provider, constraints())
    [item] = await candidates(svc, {"XOM": [setup_at_close(provider, "XOM")]})
    [trade] = item.trades
    assert trade.risk.decision == "candidate" and not trade.risk.allowed and trade.risk.position_size > 0
    assert (await svc.risk.book.snapshot()).open_positions == []  # nothing reserved per symbol


async def test_correlated_oil_majors_share_one_correlated_exposure_limit(provider: CsvProvider) -> None:
    svc = services(provider, constraints())
    items = await candidates(
        svc,
        {
            "XOM": [setup_at_close(provider, "XOM", confidence=0.8)],
            "CVX": [setup_at_close(provider, "CVX", confidence=0.7)],
        },
    )
    out = await AllocateStage().run_all(ctx(svc, "allocate"), items)
    assert [i.symbol for i in out.items] == ["XOM", "CVX"]
    xom, cvx = (item.trades[0].risk for item in out.items)
    assert xom.allowed and xom.rank == 1 and not xom.constraints.adjustments[1:]
    # CVX is cut so that XOM + CVX stay within 60 % of equity (XOM alone is ~40 %).
    assert cvx.allowed and cvx.rank == 2 and cvx.position_size > 0
    cut = cvx.constraints.adjustments[-1]
    assert cut.rule == "max_correlated_exposure" and cut.applied < cut.requested
    assert cvx.constraints.risk_metrics["correlated_exposure"] == pytest.approx(0.6, abs=0.02)
    assert cvx.constraints.risk_metrics["correlated_exposure"] <= 0.6
    booked = {p.symbol for p in (await svc.risk.book.snapshot()).open_positions}
    assert booked == {"XOM", "CVX"}


async def test_an_uncorrelated_name_is_not_cut(provider: CsvProvider) -> None:
    svc = services(provider, constraints())
    items = await candidates(
        svc,
        {
            "XOM": [setup_at_close(provider, "XOM", confidence=0.8)],
            "AAPL": [setup_at_close(provider, "AAPL", confidence=0.7)],
        },
    )
    out = await AllocateStage().run_all(ctx(svc, "allocate"), items)
    xom, aapl = (item.trades[0].risk for item in out.items)
    assert xom.allowed and aapl.allowed
    assert aapl.constraints.adjustments == []  # its full 2 % size
    assert aapl.position_size == int(200 // aapl.risk_per_unit)


async def test_correlation_with_a_position_from_the_portfolio_file(provider: CsvProvider) -> None:
    from jax_assistant.risk import Position

    held = Position(
        symbol="XOM", sector="Energy", direction="long", entry=70, stop=66, size=80, opened_on=AS_OF
    )
    svc = services(provider, constraints(), PortfolioState(open_positions=[held]))  # 5 600 = 56 %
    [cvx_item] = await candidates(svc, {"CVX": [setup_at_close(provider, "CVX")]})
    out = await AllocateStage().run_all(ctx(svc, "allocate"), [cvx_item])
    [cvx] = [t.risk for t in out.items[0].trades]
    assert [v.code for v in cvx.constraints.violations] == ["RISK_PER_TRADE_TOO_LOW"]
    # 400 of room left under 60 %: 4 shares of ~90 risk ~0.2 % of the account, below the 0.5 % floor.
    assert cvx.constraints.adjustments[-1].rule == "max_correlated_exposure"


async def test_decisions_do_not_depend_on_the_order_of_items(provider: CsvProvider) -> None:
    c = RiskConstraints().merged({"portfolio_constraints": {"max_positions": 3}})
    setups = {s: [setup_at_close(provider, s, confidence=0.5 + 0.05 * i)] for i, s in enumerate(SYMBOLS)}
    results = []
    for order in (SYMBOLS, list(reversed(SYMBOLS))):
        svc = services(provider, c)
        items = await candidates(svc, {s: setups[s] for s in order})
        out = await AllocateStage().run_all(ctx(svc, "allocate"), items)
        assert [i.symbol for i in out.items] == order  # items come back in the order given
        results.append({k: v.model_dump_json() for k, v in decisions(out.items).items()})
    assert results[0] == results[1]
    allowed = {k for k, v in decisions(out.items).items() if v.allowed}
    assert len(allowed) == 3


async def test_no_candidates_is_skipped(provider: CsvProvider) -> None:
    svc = services(provider, constraints())
    item = WorkItem(run_id="run_t", symbol="XOM", as_of=AS_OF, correlation_id="c")
    out = await AllocateStage().run_all(ctx(svc, "allocate"), [item])
    assert out.status == "skipped" and out.items == [item]


async def test_running_the_allocation_twice_books_each_setup_once_the_same_way(provider: CsvProvider) -> None:
    """A retried barrier gets the same candidates again: it must not compete with its own bookings."""
    c = RiskConstraints().merged({"portfolio_constraints": {"max_positions": 2}})
    svc = services(provider, c)
    setups = {s: [setup_at_close(provider, s, confidence=0.5 + 0.05 * i)] for i, s in enumerate(SYMBOLS)}
    items = await candidates(svc, setups)
    first = await AllocateStage().run_all(ctx(svc, "allocate"), items)
    second = await AllocateStage().run_all(ctx(svc, "allocate"), items)
    assert decisions(first.items) == decisions(second.items)
    assert sum(r.allowed for r in decisions(second.items).values()) == 2
    booked = [p.setup_id for p in (await svc.risk.book.snapshot()).open_positions]
    assert sorted(booked) == sorted(k for k, r in decisions(second.items).items() if r.allowed)
