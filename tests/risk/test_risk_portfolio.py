from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from jax_assistant.domain import RiskResult, TradeRecord, TradeSetup
from jax_assistant.risk import (
    Candidate,
    PortfolioBook,
    PortfolioState,
    RiskConfigError,
    RiskConstraints,
    RiskManager,
    load_portfolio_state,
)

AS_OF = date(2024, 3, 8)
MakeSetup = Callable[..., TradeSetup]


def test_state_defaults() -> None:
    s = PortfolioState(account_size=25_000)
    assert (s.equity, s.peak_equity, s.realised_pnl_today) == (25_000, 25_000, 0)
    assert PortfolioState(equity=9_000, peak_equity=12_000).account_size == 10_000


def test_peak_below_equity_is_rejected() -> None:
    with pytest.raises(ValueError, match="peak_equity must be >= equity"):
        PortfolioState(equity=12_000, peak_equity=10_000)


def test_load_state_from_json(tmp_path: Path) -> None:
    path = tmp_path / "portfolio.json"
    data = {
        "account_size": 20_000,
        "equity": 19_000,
        "peak_equity": 21_000,
        "realised_pnl_today": -150,
        "open_positions": [
            {
                "symbol": "msft",
                "sector": "Tech",
                "direction": "long",
                "entry": 400,
                "stop": 380,
                "size": 5,
                "opened_on": "2024-03-01",
            }
        ],
        "last_stop_out": {"nvda": "2024-03-06"},
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    s = load_portfolio_state(path)
    assert PortfolioState.load(str(path)) == s
    assert s.open_positions[0].symbol == "MSFT"
    assert s.open_positions[0].value == 2_000 and s.open_risk == 100
    assert s.last_stop_out == {"NVDA": date(2024, 3, 6)}
    assert s.sector_value("tech") == 2_000 and s.sector_value(None) == 0


def test_load_state_rejects_unknown_field(tmp_path: Path) -> None:
    path = tmp_path / "portfolio.json"
    path.write_text(json.dumps({"acount_size": 1}), encoding="utf-8")
    with pytest.raises(RiskConfigError, match=r"portfolio\.json: acount_size"):
        load_portfolio_state(path)


def candidate(setup: TradeSetup, sector: str | None = None) -> Candidate:
    return Candidate(setup=setup, risk=RiskManager().candidate(setup), sector=sector)


async def test_allocate_books_the_allowed_position(setup_factory: MakeSetup) -> None:
    book = PortfolioBook()
    setup = setup_factory("AAPL")
    [r] = await book.allocate([candidate(setup, "Tech")], RiskConstraints(), as_of=AS_OF)
    assert r.allowed and r.position_size == 30  # 40 clamped to the 30 % sector cap
    [pos] = (await book.snapshot()).open_positions
    assert (pos.symbol, pos.size, pos.sector, pos.opened_on, pos.setup_id) == (
        "AAPL",
        30,
        "Tech",
        AS_OF,
        setup.id,
    )


async def test_snapshot_is_a_copy(setup_factory: MakeSetup) -> None:
    book = PortfolioBook()
    before = await book.snapshot()
    before.realised_pnl_today = -1_000
    assert (await book.snapshot()).realised_pnl_today == 0


async def test_the_book_copies_its_initial_state(setup_factory: MakeSetup) -> None:
    state = PortfolioState()
    book = PortfolioBook(state)
    await book.allocate([candidate(setup_factory())], RiskConstraints(), as_of=AS_OF)
    assert state.open_positions == []
    assert len((await book.snapshot()).open_positions) == 1


async def test_a_book_given_its_state_without_a_copy_owns_that_object(setup_factory: MakeSetup) -> None:
    # copy=False is for a state nobody else holds: the book reads that very object (a later change
    # to it shows), and its allocations still replace the state instead of changing it in place.
    state = PortfolioState()
    book = PortfolioBook(state, copy=False)
    state.realised_pnl_today = -5.0
    assert (await book.snapshot()).realised_pnl_today == -5.0
    await book.allocate([candidate(setup_factory())], RiskConstraints(), as_of=AS_OF)
    assert state.open_positions == []
    assert len((await book.snapshot()).open_positions) == 1


async def test_concurrent_allocations_respect_max_positions(setup_factory: MakeSetup) -> None:
    c = RiskConstraints().merged(
        {
            "portfolio_constraints": {"max_positions": 10, "max_portfolio_risk": 1.0},
            "position_limits": {"max_leverage": 10},
        }
    )
    book = PortfolioBook()

    async def one(i: int) -> bool:
        await asyncio.sleep(0)
        [r] = await book.allocate([candidate(setup_factory(f"S{i}"))], c, as_of=AS_OF)
        return r.allowed

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert sum(results) == 10
    assert len((await book.snapshot()).open_positions) == 10


def _record(setup: TradeSetup, risk: RiskResult) -> TradeRecord:
    return TradeRecord(setup=setup, risk=risk)


async def test_restore_books_allocated_allowed_decisions_only(setup_factory: MakeSetup) -> None:
    allocated_setup, candidate_setup, rejected_setup = (setup_factory(s) for s in ("AAA", "BBB", "CCC"))
    [allocated] = await PortfolioBook().allocate([candidate(allocated_setup)], RiskConstraints(), as_of=AS_OF)
    pending = RiskManager().candidate(candidate_setup)
    assert pending.constraints.allowed and pending.position_size == 40 and not pending.allowed
    rejected = RiskManager(risk_percent=0.1).candidate(rejected_setup)
    book = PortfolioBook()
    trades = [
        _record(allocated_setup, allocated),
        _record(candidate_setup, pending),
        _record(rejected_setup, rejected),
        _record(allocated_setup, allocated),  # seen twice (a resumed run and its origin): booked once
    ]
    assert book.restore(trades, sector_of=lambda s: "Tech") == 1
    [pos] = (await book.snapshot()).open_positions
    assert (pos.symbol, pos.size, pos.sector) == ("AAA", 40, "Tech")


async def test_passing_an_earlier_decision_again_keeps_its_booking(setup_factory: MakeSetup) -> None:
    book = PortfolioBook()
    setup = setup_factory("AAPL")
    [decided] = await book.allocate([candidate(setup)], RiskConstraints(), as_of=AS_OF)
    [kept] = await book.allocate([Candidate(setup=setup, risk=decided)], RiskConstraints(), as_of=AS_OF)
    assert kept == decided
    assert [p.setup_id for p in (await book.snapshot()).open_positions] == [setup.id]
