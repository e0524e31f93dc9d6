from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from jax_assistant.domain import Adjustment, RiskResult, TradeSetup
from jax_assistant.risk import (
    PortfolioBook,
    PortfolioState,
    Position,
    RiskConstraints,
    RiskInputError,
    RiskManager,
)

AS_OF = date(2024, 3, 8)  # a Friday
MakeSetup = Callable[..., TradeSetup]


def constraints(**sections: dict[str, Any]) -> RiskConstraints:
    return RiskConstraints().merged(sections)


def position(
    symbol: str, *, sector: str | None = None, entry: float = 100, stop: float = 95, size: int = 20
) -> Position:
    return Position(
        symbol=symbol, sector=sector, direction="long", entry=entry, stop=stop, size=size, opened_on=AS_OF
    )


async def assess(
    setup: TradeSetup,
    *,
    manager: RiskManager | None = None,
    sector: str | None = None,
    as_of: date = AS_OF,
    strategy_max_risk_percent: float | None = None,
) -> RiskResult:
    manager = manager or RiskManager()
    return await manager.assess(
        setup, sector=sector, as_of=as_of, strategy_max_risk_percent=strategy_max_risk_percent
    )


def codes(result: RiskResult) -> list[str]:
    return [v.code for v in result.constraints.violations]


def assert_rejected(result: RiskResult, code: str) -> None:
    assert code in codes(result)
    assert result.allowed is False
    assert result.position_size == 0 and result.total_risk == 0
    assert result.constraints.reason == result.constraints.violations[0].message


# --------------------------------------------------------------------------- the contract example


async def test_contract_example_default_three_percent_is_clamped_to_the_two_percent_cap(
    setup_factory: MakeSetup,
) -> None:
    r = await assess(setup_factory(entry=100, stop=95, targets=(110,)))
    assert r.allowed and r.constraints.reason == "ok" and r.constraints.violations == []
    assert r.constraints.adjustments == [
        Adjustment(field="risk_percent", requested=3, applied=2, rule="max_risk_per_trade")
    ]
    assert (r.risk_percent, r.account_size) == (2, 10_000)
    assert (r.risk_per_unit, r.position_size, r.total_risk, r.r_multiple) == (5, 40, 200, 2)
    m = r.constraints.risk_metrics
    assert m == {
        "position_risk": 0.02,
        "portfolio_risk": 0.02,
        "position_size": 40,
        "dollar_risk": 200,
        "risk_per_unit": 5,
        "leverage": 0.4,
        "stop_distance": 0.05,
        "sector_exposure": 0,
        "gross_leverage": 0.4,
        "correlated_exposure": 0.4,
    }
    assert (r.decision, r.rank, r.score, r.effective_risk_percent) == ("allocated", 1, 1.0, 2.0)
    out = r.to_contract()
    assert (out["positionSize"], out["riskPerUnit"], out["totalRisk"], out["rMultiple"]) == (40, 5, 200, 2)


async def test_without_the_clamp_the_contract_example_sizes_sixty(setup_factory: MakeSetup) -> None:
    m = RiskManager(constraints(position_limits={"max_risk_per_trade": 0.05}))
    r = await assess(setup_factory(), manager=m)
    assert (r.position_size, r.total_risk, r.risk_percent) == (60, 300, 3)
    assert r.constraints.adjustments == []


async def test_strategy_max_risk_percent_lowers_the_request(setup_factory: MakeSetup) -> None:
    r = await assess(setup_factory(), strategy_max_risk_percent=1.5)
    assert (r.risk_percent, r.position_size) == (1.5, 30)
    assert r.constraints.adjustments == []
    r = await assess(setup_factory(), strategy_max_risk_percent=5)  # asks more than the run: the run wins
    assert r.risk_percent == 2 and r.constraints.adjustments[0].requested == 3


async def test_allowed_setup_is_reserved_in_the_book(setup_factory: MakeSetup) -> None:
    m = RiskManager()
    setup = setup_factory()
    await assess(setup, manager=m, sector="Tech")
    [pos] = (await m.book.snapshot()).open_positions
    assert (pos.setup_id, pos.size, pos.sector) == (setup.id, 30, "Tech")


# --------------------------------------------------------------------------- violation codes


async def test_stop_too_tight(setup_factory: MakeSetup) -> None:
    r = await assess(setup_factory(entry=100, stop=99.5))
    assert_rejected(r, "STOP_TOO_TIGHT")
    v = r.constraints.violations[0]
    assert (v.limit, v.actual) == (0.01, 0.005)


async def test_stop_too_wide(setup_factory: MakeSetup) -> None:
    r = await assess(setup_factory(entry=100, stop=85))
    assert_rejected(r, "STOP_TOO_WIDE")


@pytest.mark.parametrize(("entry", "stop"), [(100, 99), (100, 90), (1.1, 1.0), (100, 110)])
async def test_stop_distance_bounds_are_allowed(setup_factory: MakeSetup, entry: float, stop: float) -> None:
    r = await assess(setup_factory(entry=entry, stop=stop, targets=()))
    assert "STOP_TOO_TIGHT" not in codes(r) and "STOP_TOO_WIDE" not in codes(r)


async def test_rejected_setup_is_not_reserved(setup_factory: MakeSetup) -> None:
    m = RiskManager()
    await assess(setup_factory(entry=100, stop=99.5), manager=m)
    assert (await m.book.snapshot()).open_positions == []


async def test_risk_per_trade_too_high_when_clamping_is_off(setup_factory: MakeSetup) -> None:
    r = await assess(setup_factory(), manager=RiskManager(clamp_risk=False))
    assert_rejected(r, "RISK_PER_TRADE_TOO_HIGH")
    assert r.constraints.adjustments == []
    v = r.constraints.violations[0]
    assert (v.limit, v.actual) == (0.02, 0.03)
    ok = await assess(setup_factory(), manager=RiskManager(clamp_risk=False, risk_percent=2))
    assert ok.allowed and ok.position_size == 40


async def test_risk_per_trade_too_low(setup_factory: MakeSetup) -> None:
    r = await assess(setup_factory(), strategy_max_risk_percent=0.4)
    assert_rejected(r, "RISK_PER_TRADE_TOO_LOW")
    assert (await assess(setup_factory(), strategy_max_risk_percent=0.5)).allowed


async def test_account_too_small(setup_factory: MakeSetup) -> None:
    r = await assess(setup_factory(), manager=RiskManager(account_size=5_000))
    assert_rejected(r, "ACCOUNT_TOO_SMALL")
    assert r.account_size == 5_000


async def test_position_value_clamped_to_max_position_size(setup_factory: MakeSetup) -> None:
    m = RiskManager(constraints(portfolio_constraints={"max_position_size": 2_550}))
    r = await assess(setup_factory(), manager=m)
    assert r.allowed and r.position_size == 25 and r.total_risk == 125
    assert r.constraints.adjustments[-1] == Adjustment(
        field="position_size", requested=40, applied=25, rule="max_position_size"
    )


async def test_position_value_clamped_to_max_leverage(setup_factory: MakeSetup) -> None:
    m = RiskManager(constraints(position_limits={"max_leverage": 0.2}))
    r = await assess(setup_factory(), manager=m)
    assert r.allowed and r.position_size == 20
    assert r.constraints.adjustments[-1].rule == "max_leverage"
    assert r.constraints.risk_metrics["leverage"] == 0.2


async def test_position_value_too_large_when_not_one_unit_fits(setup_factory: MakeSetup) -> None:
    m = RiskManager(constraints(portfolio_constraints={"max_position_size": 50}))
    r = await assess(setup_factory(), manager=m)
    assert_rejected(r, "POSITION_VALUE_TOO_LARGE")
    assert r.constraints.adjustments[-1].applied == 0


async def test_position_size_zero_when_one_unit_risks_more_than_the_budget(setup_factory: MakeSetup) -> None:
    r = await assess(setup_factory(entry=2_500, stop=2_250, targets=()))  # 250 a unit > 200 budget
    assert_rejected(r, "POSITION_SIZE_ZERO")


async def test_too_many_open_positions(setup_factory: MakeSetup) -> None:
    state = PortfolioState(
        equity=1_000_000, peak_equity=1_000_000, open_positions=[position(f"P{i}") for i in range(10)]
    )
    r = await assess(setup_factory(), manager=RiskManager(book=PortfolioBook(state)))
    assert_rejected(r, "TOO_MANY_OPEN_POSITIONS")


async def test_daily_loss_exceeded(setup_factory: MakeSetup) -> None:
    book = PortfolioBook(PortfolioState(realised_pnl_today=-300))
    assert_rejected(await assess(setup_factory(), manager=RiskManager(book=book)), "DAILY_LOSS_EXCEEDED")


async def test_drawdown_halts_every_new_trade(setup_factory: MakeSetup) -> None:
    m = RiskManager(book=PortfolioBook(PortfolioState(equity=7_900, peak_equity=10_000)))
    for symbol in ("AAPL", "MSFT", "XOM"):
        assert_rejected(await assess(setup_factory(symbol), manager=m), "DRAWDOWN_HALT")


async def test_cooldown_after_a_stop_out(setup_factory: MakeSetup) -> None:
    m = RiskManager(book=PortfolioBook(PortfolioState(last_stop_out={"AAPL": date(2024, 3, 6)})))
    assert_rejected(await assess(setup_factory("AAPL"), manager=m), "COOLDOWN_ACTIVE")
    assert (await assess(setup_factory("MSFT"), manager=m)).allowed
    assert (await assess(setup_factory("AAPL"), manager=m, as_of=date(2024, 3, 12))).allowed


async def test_portfolio_risk_limit(setup_factory: MakeSetup) -> None:
    m = RiskManager(constraints(position_limits={"max_leverage": 10}))
    results = [await assess(setup_factory(f"S{i}"), manager=m) for i in range(8)]
    assert [r.allowed for r in results] == [True] * 7 + [False]  # 7 x 2 % = 14 %, the 8th makes 16 %
    assert_rejected(results[-1], "PORTFOLIO_RISK_TOO_HIGH")
    assert results[-1].constraints.risk_metrics["portfolio_risk"] == pytest.approx(0.16)


# --------------------------------------------------------------------------- sector exposure


async def test_sector_exposure_clamps_the_size(setup_factory: MakeSetup) -> None:
    book = PortfolioBook(PortfolioState(open_positions=[position("MSFT", sector="Tech", size=20)]))  # 20 %
    m = RiskManager(book=book)
    r = await assess(setup_factory("AAPL"), manager=m, sector="tech")
    assert r.allowed and r.position_size == 10 and r.total_risk == 50
    assert r.constraints.adjustments[-1] == Adjustment(
        field="position_size", requested=40, applied=10, rule="max_sector_exposure"
    )
    assert r.constraints.risk_metrics["sector_exposure"] == pytest.approx(0.30)
    other = await assess(setup_factory("XOM"), manager=m, sector="Energy")
    assert other.position_size == 30  # its own sector's cap, not Tech's


async def test_sector_exposure_rejects_when_the_sector_is_full(setup_factory: MakeSetup) -> None:
    book = PortfolioBook(PortfolioState(open_positions=[position("MSFT", sector="Tech", size=30)]))
    r = await assess(setup_factory("AAPL"), manager=RiskManager(book=book), sector="Tech")
    assert_rejected(r, "SECTOR_EXPOSURE_TOO_HIGH")
    assert (await assess(setup_factory("AAPL"), manager=RiskManager(book=book), sector=None)).allowed


async def test_unknown_sector_is_not_capped(setup_factory: MakeSetup) -> None:
    r = await assess(setup_factory(), sector=None)
    assert r.position_size == 40 and r.constraints.risk_metrics["sector_exposure"] == 0


# --------------------------------------------------------------------------- several violations


async def test_all_violations_are_listed_and_the_first_is_the_reason(setup_factory: MakeSetup) -> None:
    m = RiskManager(risk_percent=0.4)
    r = await assess(setup_factory(entry=100, stop=99.5), manager=m)
    assert codes(r) == ["STOP_TOO_TIGHT", "RISK_PER_TRADE_TOO_LOW"]
    assert r.constraints.reason.startswith("stop distance 0.50%")
    # Metrics show the evaluated size to explain the rejection.
    assert r.constraints.risk_metrics["position_size"] == 80


async def test_a_per_symbol_rejection_never_reaches_the_portfolio_checks(setup_factory: MakeSetup) -> None:
    book = PortfolioBook(PortfolioState(equity=7_000, peak_equity=10_000))
    r = await assess(setup_factory(entry=100, stop=99.5), manager=RiskManager(book=book))
    assert codes(r) == ["STOP_TOO_TIGHT"] and r.rank is None and r.decision == "allocated"
    # 400 units clamped to 2 x equity 7 000 / 100 = 140 before the stop check rejected it.
    assert r.constraints.risk_metrics["position_size"] == 140


async def test_portfolio_violations_are_all_listed(setup_factory: MakeSetup) -> None:
    state = PortfolioState(
        equity=7_000, peak_equity=10_000, open_positions=[position(f"P{i}", size=1) for i in range(10)]
    )
    r = await assess(setup_factory(), manager=RiskManager(book=PortfolioBook(state)))
    assert codes(r) == ["TOO_MANY_OPEN_POSITIONS", "DRAWDOWN_HALT"]
    assert r.constraints.reason == r.constraints.violations[0].message


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"risk_percent": 0}, "risk_percent"), ({"account_size": -1}, "account_size")],
)
def test_manager_input_errors_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(RiskInputError) as info:
        RiskManager(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


async def test_strategy_risk_percent_error_names_the_field(setup_factory: MakeSetup) -> None:
    with pytest.raises(RiskInputError) as info:
        await assess(setup_factory(), strategy_max_risk_percent=-1)
    assert info.value.field == "strategy_max_risk_percent"


async def test_account_size_defaults_to_the_book_and_an_explicit_one_sizes(setup_factory: MakeSetup) -> None:
    book = PortfolioBook(PortfolioState(account_size=25_000))
    assert RiskManager(book=book).account_size == 25_000
    assert RiskManager(account_size=25_000).book.account_size == 25_000
    r = await assess(setup_factory(), manager=RiskManager(book=book, account_size=20_000))
    assert (r.account_size, r.position_size) == (20_000, 80)  # 2 % of 20 000 / 5


# --------------------------------------------------------------------------- concurrency


class SlowBook(PortfolioBook):
    """A book whose reads yield to the event loop, as a persistent one would: a manager that decided
    on a snapshot instead of inside ``allocate`` would let every task through."""

    async def snapshot(self) -> PortfolioState:
        state = await super().snapshot()
        await asyncio.sleep(0)
        return state


@pytest.mark.parametrize("book_type", [PortfolioBook, SlowBook])
async def test_fifty_concurrent_assessments_get_exactly_max_positions(
    setup_factory: MakeSetup, book_type: type[PortfolioBook]
) -> None:
    c = constraints(
        portfolio_constraints={"max_positions": 10, "max_portfolio_risk": 1.0},
        position_limits={"max_leverage": 10},
    )
    m = RiskManager(c, book_type())
    rng = random.Random(7)

    async def one(i: int) -> tuple[str, RiskResult]:
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(0)
        setup = setup_factory(f"S{i}")
        return setup.id, await m.assess(setup, sector=None, as_of=AS_OF)

    results = await asyncio.gather(*(one(i) for i in range(50)))
    allowed = {sid for sid, r in results if r.allowed}
    assert len(allowed) == 10
    assert all(codes(r) == ["TOO_MANY_OPEN_POSITIONS"] for _, r in results if not r.allowed)
    book = await m.book.snapshot()
    assert {p.setup_id for p in book.open_positions} == allowed


def test_new_constraints_or_a_new_equity_take_effect_on_the_next_setup(setup_factory: MakeSetup) -> None:
    # The manager keeps the figures derived from its constraints and the book's equity between setups;
    # replacing either must not leave a stale cap, floor or value cap behind.
    book = PortfolioBook(PortfolioState(account_size=10_000))
    manager = RiskManager(book=book)
    setup = setup_factory(entry=100, stop=95)
    first = manager.candidate(setup)
    assert (first.risk_percent, first.position_size) == (2.0, 40)
    manager.constraints = constraints(position_limits={"max_risk_per_trade": 0.01})
    assert (manager.candidate(setup).risk_percent, manager.candidate(setup).position_size) == (1.0, 20)
    manager.constraints = constraints(portfolio_constraints={"max_position_size": 1_000})
    clamped = manager.candidate(setup)
    assert clamped.position_size == 10
    assert clamped.constraints.adjustments[-1].rule == "max_position_size"
    # Equity below the position value: max_leverage (2 x equity) becomes the tighter cap.
    manager.constraints = RiskConstraints()
    book._state = book._state.model_copy(update={"equity": 1_500.0, "peak_equity": 10_000.0})
    by_leverage = manager.candidate(setup)
    assert by_leverage.position_size == 30  # 3 000 / 100
    assert by_leverage.constraints.adjustments[-1].rule == "max_leverage"
