"""The run-level allocation: ranking, filling the book under every limit, and the cuts it records."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest

from jax_assistant.domain import Adjustment, RiskResult, TradeSetup, Violation
from jax_assistant.risk import (
    Candidate,
    PortfolioState,
    Position,
    RiskConstraints,
    RiskManager,
    allocate,
    score,
)

AS_OF = date(2024, 3, 8)
MakeSetup = Callable[..., TradeSetup]

# Only the limit a test is about binds: everything else is wide open.
OPEN = {
    "portfolio_constraints": {
        "max_positions": 1_000,
        "max_portfolio_risk": 1.0,
        "max_sector_exposure": 100.0,
        "max_correlated_exposure": 100.0,
    },
    "position_limits": {"max_leverage": 100.0},
}


def limits(**sections: dict[str, Any]) -> RiskConstraints:
    merged = {k: {**v, **sections.get(k, {})} for k, v in OPEN.items()}
    return RiskConstraints().merged({**sections, **merged})


def candidate(
    setup: TradeSetup, *, sector: str | None = None, manager: RiskManager | None = None
) -> Candidate:
    manager = manager or RiskManager(limits())
    return Candidate(setup=setup, risk=manager.candidate(setup), sector=sector)


def codes(result: RiskResult) -> list[str]:
    return [v.code for v in result.constraints.violations]


def held(symbol: str, *, entry: float = 100, size: int = 20, sector: str | None = None) -> Position:
    return Position(
        symbol=symbol,
        sector=sector,
        direction="long",
        entry=entry,
        stop=entry * 0.95,
        size=size,
        opened_on=AS_OF,
    )


# --------------------------------------------------------------------------- ranking


def test_with_too_many_candidates_the_highest_ranked_take_the_room(setup_factory: MakeSetup) -> None:
    # Alphabetically first symbols get the lowest confidence: first come, first served would book them.
    symbols = [f"S{i:02d}" for i in range(15)]
    cands = [
        candidate(setup_factory(sym, confidence=round(0.2 + 0.05 * i, 2), targets=(110.0,)))
        for i, sym in enumerate(symbols)
    ]
    out = allocate(cands, PortfolioState(), limits(portfolio_constraints={"max_positions": 10}), as_of=AS_OF)
    by_symbol = {c.setup.symbol: d for c, d in zip(cands, out.decisions, strict=True)}
    allowed = {s for s, d in by_symbol.items() if d.allowed}
    assert allowed == set(symbols[5:])  # the ten best scores
    assert all(codes(by_symbol[s]) == ["TOO_MANY_OPEN_POSITIONS"] for s in symbols[:5])
    # Ranks follow the score; rank 1 is the best setup.
    assert by_symbol["S14"].rank == 1 and by_symbol["S00"].rank == 15
    assert by_symbol["S14"].score == pytest.approx(0.9 * 2.0)
    assert [p.symbol for p in out.booked] == list(reversed(symbols[5:]))


def test_score_is_confidence_times_first_target_r(setup_factory: MakeSetup) -> None:
    # 3R at confidence 0.5 (1.5) beats 2R at confidence 0.7 (1.4).
    far = candidate(setup_factory("FAR", targets=(115.0,), confidence=0.5))
    near = candidate(setup_factory("NEAR", targets=(110.0,), confidence=0.7))
    assert (score(far), score(near)) == (pytest.approx(1.5), pytest.approx(1.4))
    out = allocate(
        [near, far], PortfolioState(), limits(portfolio_constraints={"max_positions": 1}), as_of=AS_OF
    )
    assert [d.allowed for d in out.decisions] == [False, True]


def test_ties_go_to_the_smaller_setup_id_whatever_the_input_order(setup_factory: MakeSetup) -> None:
    cands = [candidate(setup_factory(sym)) for sym in ("CCC", "AAA", "BBB")]
    c = limits(portfolio_constraints={"max_positions": 1})
    for order in (cands, list(reversed(cands))):
        out = allocate(order, PortfolioState(), c, as_of=AS_OF)
        assert [p.symbol for p in out.booked] == ["AAA"]


def test_decisions_do_not_depend_on_the_order_candidates_arrive_in(setup_factory: MakeSetup) -> None:
    rng = random.Random(3)
    cands = [
        candidate(
            setup_factory(
                f"S{i}", entry=100, stop=100 - rng.choice((2, 3, 5)), confidence=rng.choice((0.4, 0.6))
            ),
            sector=rng.choice(("Tech", "Energy", None)),
        )
        for i in range(40)
    ]
    c = RiskConstraints()  # the bundled limits: several of them bind on 40 candidates

    def decided(order: list[Candidate]) -> dict[str, str]:
        out = allocate(order, PortfolioState(), c, as_of=AS_OF)
        return {x.setup.id: d.model_dump_json() for x, d in zip(order, out.decisions, strict=True)}

    reference = decided(cands)
    allowed = [RiskResult.model_validate_json(v).allowed for v in reference.values()]
    assert 0 < sum(allowed) < len(allowed)
    for _ in range(5):
        shuffled = cands[:]
        rng.shuffle(shuffled)
        assert decided(shuffled) == reference


def test_the_input_state_is_not_changed(setup_factory: MakeSetup) -> None:
    state = PortfolioState()
    out = allocate([candidate(setup_factory())], state, limits(), as_of=AS_OF)
    assert state.open_positions == [] and len(out.state.open_positions) == 1


def test_per_symbol_rejections_and_earlier_decisions_pass_through(setup_factory: MakeSetup) -> None:
    rejected = candidate(setup_factory("TIGHT", entry=100, stop=99.9))
    assert codes(rejected.risk) == ["STOP_TOO_TIGHT"] and rejected.risk.decision == "candidate"
    decided_before = allocate([candidate(setup_factory("OLD"))], PortfolioState(), limits(), as_of=AS_OF)
    earlier = Candidate(setup=setup_factory("OLD"), risk=decided_before.decisions[0])
    out = allocate([rejected, earlier], PortfolioState(), limits(), as_of=AS_OF)
    assert out.decisions[0].decision == "allocated" and not out.decisions[0].allowed
    assert out.decisions[0].rank is None and codes(out.decisions[0]) == ["STOP_TOO_TIGHT"]
    assert out.decisions[1] == earlier.risk and out.booked == []


# --------------------------------------------------------------------------- cuts and the min-risk re-check


def test_sector_cut_is_recorded_and_the_effective_risk_stored(setup_factory: MakeSetup) -> None:
    state = PortfolioState(open_positions=[held("MSFT", sector="Tech", size=15)])  # 1 500 of 3 000
    c = limits(portfolio_constraints={"max_sector_exposure": 0.30})
    [d] = allocate([candidate(setup_factory("AAPL"), sector="Tech")], state, c, as_of=AS_OF).decisions
    assert d.allowed and d.position_size == 15  # 40 units of 100 cut to the 1 500 left in Tech
    assert d.constraints.adjustments[-1] == Adjustment(
        field="position_size", requested=40, applied=15, rule="max_sector_exposure"
    )
    assert (d.risk_percent, d.effective_risk_percent, d.total_risk) == (2.0, 0.75, 75)


def test_minimum_risk_is_checked_again_after_a_cut(setup_factory: MakeSetup) -> None:
    # 10 units of 400 (stop 380) risk 2 %; 500 left in the sector is 1 unit: 0.2 % of the account.
    state = PortfolioState(open_positions=[held("MSFT", sector="Tech", size=25)])
    c = limits(portfolio_constraints={"max_sector_exposure": 0.30})
    [d] = allocate(
        [candidate(setup_factory("AVGO", entry=400, stop=380, targets=(440.0,)), sector="Tech")],
        state,
        c,
        as_of=AS_OF,
    ).decisions
    assert codes(d) == ["RISK_PER_TRADE_TOO_LOW"] and not d.allowed and d.position_size == 0
    assert d.constraints.violations[0].actual == pytest.approx(0.002)
    assert d.constraints.adjustments[-1].applied == 1
    assert d.risk_percent == 2.0 and d.effective_risk_percent == 0


def test_minimum_risk_is_checked_again_after_the_position_value_clamp(setup_factory: MakeSetup) -> None:
    # A 1 % stop sizes 200 units (20 000); max_position_size 1 000 leaves 10 units risking 0.1 %.
    m = RiskManager(limits(portfolio_constraints={"max_position_size": 1_000}))
    r = m.candidate(setup_factory(entry=100, stop=99))
    assert codes(r) == ["RISK_PER_TRADE_TOO_LOW"] and r.position_size == 0
    assert r.constraints.adjustments[-1] == Adjustment(
        field="position_size", requested=200, applied=10, rule="max_position_size"
    )
    ok = RiskManager(limits(portfolio_constraints={"max_position_size": 5_000})).candidate(
        setup_factory(entry=100, stop=99)
    )
    assert ok.constraints.allowed and (ok.position_size, ok.effective_risk_percent) == (50, 0.5)


def test_gross_leverage_is_cut_and_then_rejected(setup_factory: MakeSetup) -> None:
    state = PortfolioState(open_positions=[held("A", size=180)])  # 18 000 of 20 000 (2 x equity)
    c = limits(position_limits={"max_leverage": 2.0})
    first, second = allocate(
        [
            candidate(setup_factory("B", confidence=0.9), manager=RiskManager(c)),
            candidate(setup_factory("C"), manager=RiskManager(c)),
        ],
        state,
        c,
        as_of=AS_OF,
    ).decisions
    assert first.allowed and first.position_size == 20
    assert first.constraints.adjustments[-1] == Adjustment(
        field="position_size", requested=40, applied=20, rule="max_leverage"
    )
    assert first.constraints.risk_metrics["gross_leverage"] == pytest.approx(2.0)
    assert codes(second) == ["LEVERAGE_TOO_HIGH"]


def test_every_cut_is_recorded_in_order(setup_factory: MakeSetup) -> None:
    # Tech holds 1 000 of its 3 000; the book holds 18 500 of its 20 000 gross.
    state = PortfolioState(open_positions=[held("MSFT", sector="Tech", size=10), held("XOM", size=175)])
    c = limits(portfolio_constraints={"max_sector_exposure": 0.30}, position_limits={"max_leverage": 2.0})
    [d] = allocate([candidate(setup_factory("AAPL"), sector="Tech")], state, c, as_of=AS_OF).decisions
    assert d.allowed and d.position_size == 15
    assert d.constraints.adjustments == [
        Adjustment(field="risk_percent", requested=3, applied=2, rule="max_risk_per_trade"),
        Adjustment(field="position_size", requested=40, applied=20, rule="max_sector_exposure"),
        Adjustment(field="position_size", requested=20, applied=15, rule="max_leverage"),
    ]
    assert d.effective_risk_percent == 0.75


# --------------------------------------------------------------------------- correlated exposure


def table(pairs: dict[frozenset[str], float]) -> Callable[[str, str], float | None]:
    return lambda a, b: pairs.get(frozenset((a, b)))


def test_correlated_exposure_cuts_and_then_rejects(setup_factory: MakeSetup) -> None:
    state = PortfolioState(open_positions=[held("XOM", size=30)])  # 3 000 = 30 % of equity
    c = limits(portfolio_constraints={"max_correlated_exposure": 0.40})
    corr = table(
        {frozenset(("XOM", "CVX")): 0.9, frozenset(("XOM", "COP")): 0.8, frozenset(("CVX", "COP")): 0.85}
    )
    cvx, cop = allocate(
        [candidate(setup_factory("CVX", confidence=0.9)), candidate(setup_factory("COP"))],
        state,
        c,
        as_of=AS_OF,
        correlation=corr,
    ).decisions
    assert cvx.allowed and cvx.position_size == 10  # 40 cut to the 1 000 left under 40 %
    assert cvx.constraints.adjustments[-1] == Adjustment(
        field="position_size", requested=40, applied=10, rule="max_correlated_exposure"
    )
    assert cvx.constraints.risk_metrics["correlated_exposure"] == pytest.approx(0.40)
    assert codes(cop) == ["CORRELATED_EXPOSURE_TOO_HIGH"]
    assert "CVX, XOM" in cop.constraints.reason


def test_weakly_correlated_or_unknown_names_are_not_cut(setup_factory: MakeSetup) -> None:
    state = PortfolioState(open_positions=[held("XOM", size=30)])
    c = limits(portfolio_constraints={"max_correlated_exposure": 0.40})
    corr = table({frozenset(("XOM", "DUK")): 0.69})
    duk, new = allocate(
        [candidate(setup_factory("DUK")), candidate(setup_factory("NEW"))],
        state,
        c,
        as_of=AS_OF,
        correlation=corr,
    ).decisions
    assert (duk.position_size, new.position_size) == (40, 40)
    # The same symbol counts as correlated with itself even without return data.
    [again] = allocate([candidate(setup_factory("XOM"))], state, c, as_of=AS_OF, correlation=corr).decisions
    assert again.position_size == 10


def test_equal_scores_up_to_float_noise_tie_and_go_to_the_setup_id(setup_factory: MakeSetup) -> None:
    # Targets computed as a strategy does (entry + 1.75 x risk, in binary floats): the first is
    # 1.749999999999995R, the second 1.750000000000004R. At confidence 0.5 both are a 0.875 setup.
    def at_175r(symbol: str, entry: float, stop: float) -> Candidate:
        return candidate(
            setup_factory(
                symbol, entry=entry, stop=stop, targets=(entry + 1.75 * (entry - stop),), confidence=0.5
            )
        )

    low_noise, high_noise = at_175r("AAA", 80.13, 76.2), at_175r("ZZZ", 33.17, 31.9)
    assert low_noise.risk.r_multiple < 1.75 < high_noise.risk.r_multiple
    assert score(low_noise) == score(high_noise) == 0.875
    c = limits(portfolio_constraints={"max_positions": 1})
    out = allocate([high_noise, low_noise], PortfolioState(), c, as_of=AS_OF)
    assert [p.symbol for p in out.booked] == ["AAA"]


def test_a_candidate_is_never_allowed_and_the_contract_shape_carries_the_decision(
    setup_factory: MakeSetup,
) -> None:
    cand = candidate(setup_factory())
    assert cand.risk.constraints.allowed and not cand.risk.allowed
    out = cand.risk.to_contract()
    assert (out["decision"], out["rank"], out["score"]) == ("candidate", None, None)
    [decided] = allocate([cand], PortfolioState(), limits(), as_of=AS_OF).decisions
    out = decided.to_contract()
    assert decided.allowed
    assert (out["decision"], out["rank"], out["score"], out["effectiveRiskPercent"]) == (
        "allocated",
        1,
        1.0,
        2.0,
    )
    # Results stored before allocation existed read back as decisions.
    legacy = {k: v for k, v in out.items() if k not in ("decision", "rank", "score", "effectiveRiskPercent")}
    assert RiskResult.model_validate(legacy).allowed


@dataclass(frozen=True)
class BlockWhenBooked:
    """A protection that depends on the book: blocks ``symbol`` once any position is open."""

    constraints: RiskConstraints
    symbol: str = "LATE"
    name: str = "block_when_booked"

    def check(self, state: PortfolioState, symbol: str, as_of: date) -> Violation | None:
        if symbol != self.symbol or not state.open_positions:
            return None
        return Violation(
            code="BLOCKED", message=f"{symbol} blocked", limit=0, actual=len(state.open_positions)
        )


def test_protections_are_asked_again_after_a_booking_and_each_block_is_its_own_record(
    setup_factory: MakeSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A symbol the protections let through is not re-checked while the book stays the same; a booking
    # changes the book, so the verdicts must be taken again, and a blocked symbol's decisions each get
    # their own violation.
    from jax_assistant.risk import protections

    monkeypatch.setitem(protections.PROTECTIONS, "block_when_booked", BlockWhenBooked)
    c = limits().merged({"protections": {"enabled": ["block_when_booked"]}})
    first = candidate(setup_factory("FIRST", confidence=0.9), manager=RiskManager(c))
    late = [
        candidate(setup_factory("LATE", entry=100.0 + k, confidence=0.5), manager=RiskManager(c))
        for k in range(2)
    ]
    out = allocate([*late, first], PortfolioState(), c, as_of=AS_OF)
    assert [p.symbol for p in out.booked] == ["FIRST"]
    blocked = out.decisions[:2]
    assert all(codes(d) == ["BLOCKED"] for d in blocked)
    assert blocked[0].constraints.violations[0] is not blocked[1].constraints.violations[0]
    # Alone, the better LATE candidate passes (nothing booked yet), and its booking blocks the other.
    alone = allocate(late, PortfolioState(), c, as_of=AS_OF)
    assert sorted((d.rank, d.allowed, codes(d)) for d in alone.decisions) == [
        (1, True, []),
        (2, False, ["BLOCKED"]),
    ]
