"""Beliefs into the registry: shrunk weights, belief notes on setups, suspension and re-admission."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from jax_assistant.domain import ConstraintResult, RiskResult
from jax_assistant.marketdata import CsvProvider
from jax_assistant.memory.beliefs import OutcomeEvidence, reflect_outcomes
from jax_assistant.strategies import StrategyRegistry
from jax_assistant.strategies.weighting import WeightingConfig, apply_weights, strategy_weights

D0 = date(2016, 1, 4)
AS_OF = date(2015, 8, 24)


def ev(i: int, r: float, strategy: str = "ma_crossover_v1") -> OutcomeEvidence:
    return OutcomeEvidence(
        setup_id=f"o{i}", strategy_id=strategy, symbol="AAPL", exit_on=D0 + timedelta(i), r_multiple=r
    )


def test_expectancy_is_shrunk_toward_the_prior_by_sample_size() -> None:
    cfg = WeightingConfig(prior_strength=20)
    few = strategy_weights(reflect_outcomes([ev(i, 2.0) for i in range(2)], as_of=D0 + timedelta(99)), cfg)
    many = strategy_weights(reflect_outcomes([ev(i, 2.0) for i in range(80)], as_of=D0 + timedelta(99)), cfg)
    assert few["ma_crossover_v1"].shrunk_expectancy == round(2 * 2.0 / 22, 6)
    assert few["ma_crossover_v1"].weight == round(1 + 4 / 22, 4)
    assert many["ma_crossover_v1"].weight == 2.0  # 1 + 1.6 capped at max_weight
    assert not few["ma_crossover_v1"].suspended


def test_suspension_needs_enough_losing_trades_and_lifts_when_the_record_recovers() -> None:
    cfg = WeightingConfig(suspend_after=20)
    losing = [ev(i, -1.0) for i in range(19)]
    assert not strategy_weights(reflect_outcomes(losing, as_of=D0 + timedelta(99)), cfg)[
        "ma_crossover_v1"
    ].suspended
    losing.append(ev(19, -1.0))
    w = strategy_weights(reflect_outcomes(losing, as_of=D0 + timedelta(99)), cfg)["ma_crossover_v1"]
    assert w.suspended and w.weight == 0.5
    # Paper trades kept coming in; over a 60-day window only the recent winners count.
    paper = [ev(100 + i, 1.5) for i in range(25)]
    back = strategy_weights(reflect_outcomes(losing + paper, as_of=D0 + timedelta(130), window_days=60), cfg)
    assert not back["ma_crossover_v1"].suspended and back["ma_crossover_v1"].weight > 1.0


def test_registry_without_beliefs_is_unchanged_and_with_them_cites_them(shared_data: Path) -> None:
    provider = CsvProvider(shared_data / "daily_ohlcv_stooq_sp500.csv.gz", symbols=["AAPL"])
    series = provider.bars("AAPL", AS_OF)
    plain = StrategyRegistry.default().generate(series, [], as_of=AS_OF, lookback=250)
    reg = StrategyRegistry.default()
    apply_weights(reg, {})
    assert reg.generate(series, [], as_of=AS_OF, lookback=250) == plain
    ma = [s for s in plain if s.strategy_id == "ma_crossover_v1"]
    assert ma, "the window must hold ma_crossover setups for this test to mean anything"

    weights = strategy_weights(
        reflect_outcomes([ev(i, 2.0) for i in range(10)], as_of=D0 + timedelta(99)), WeightingConfig()
    )
    apply_weights(reg, weights)
    shaped = [
        s for s in reg.generate(series, [], as_of=AS_OF, lookback=250) if s.strategy_id == "ma_crossover_v1"
    ]
    w = weights["ma_crossover_v1"]
    assert [s.confidence for s in shaped] == [round(min(1.0, s.confidence * w.weight), 4) for s in ma]
    assert all(w.belief_id in s.notes and "weight x" in s.notes for s in shaped)
    others = [
        s for s in reg.generate(series, [], as_of=AS_OF, lookback=250) if s.strategy_id != "ma_crossover_v1"
    ]
    assert others == [s for s in plain if s.strategy_id != "ma_crossover_v1"]

    risk = RiskResult(
        position_size=10,
        risk_per_unit=1,
        total_risk=10,
        r_multiple=2,
        risk_percent=1,
        account_size=10_000,
        constraints=ConstraintResult(allowed=True),
        decision="candidate",
    )
    assert reg.admit(shaped[0], risk) is risk
    apply_weights(
        reg,
        strategy_weights(
            reflect_outcomes([ev(i, -1.0) for i in range(30)], as_of=D0 + timedelta(99)), WeightingConfig()
        ),
    )
    gated = reg.admit(shaped[0], risk)
    assert (gated.position_size, gated.constraints.allowed) == (0, False)
    assert [v.code for v in gated.constraints.violations] == ["STRATEGY_SUSPENDED"]
