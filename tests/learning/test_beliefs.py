"""The deterministic reasoner's beliefs: contract shape, statistics, weak evidence moving little."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from jax_assistant.memory.beliefs import OutcomeEvidence, reflect_outcomes, track_record, wilson_interval
from jax_assistant.memory.models import BeliefData, validate_item

D0 = date(2016, 1, 4)


def ev(
    i: int, r: float, strategy: str = "s1", symbol: str = "AAPL", event: str | None = "gap_open"
) -> OutcomeEvidence:
    return OutcomeEvidence(
        setup_id=f"out_{i}",
        strategy_id=strategy,
        symbol=symbol,
        event_type=event,
        exit_on=D0 + timedelta(i),
        r_multiple=r,
    )


def test_track_record_numbers_by_hand() -> None:
    rec = track_record([2.0, -1.0, 1.0, -1.0])
    assert (rec.sample_size, rec.wins, rec.losses, rec.win_rate) == (4, 2, 2, 0.5)
    assert rec.average_r == 0.25 and rec.expectancy == 0.25  # 0.5 x 1.5 - 0.5 x 1.0
    assert rec.profit_factor == 1.5
    # sd = sqrt(((1.75)^2 + (1.25)^2 + 0.75^2 + 1.25^2) / 3) = 1.5; t(3) = 3.182; half = 3.182 x 1.5 / 2
    assert rec.r_interval == pytest.approx((0.25 - 2.3865, 0.25 + 2.3865), abs=1e-4)
    # Wilson, 2 of 4 at z = 1.96: centre 0.5, half-width 1.96 x sqrt(0.0625 + 0.0600) / 1.9604 = 0.350
    assert wilson_interval(2, 4) == pytest.approx((0.1500, 0.8500), abs=1e-3)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    assert track_record([1.0]).r_interval is None


def test_belief_shapes_and_contract_item() -> None:
    outcomes = [ev(1, 2.0), ev(2, -1.0, symbol="MSFT"), ev(3, 1.5, strategy="s2", event=None)]
    beliefs = reflect_outcomes(outcomes, as_of=D0 + timedelta(10))
    kinds = [(b.belief_type, b.strategy_id, b.event_type, b.symbol) for b in beliefs]
    assert kinds == [
        ("strategy_track_record", "s1", None, None),
        ("strategy_track_record", "s2", None, None),
        ("strategy_event_track_record", "s1", "gap_open", None),
        ("symbol_track_record", None, None, "AAPL"),
        ("symbol_track_record", None, None, "MSFT"),
    ]
    s1 = beliefs[0]
    assert s1.evidence_ids == ["out_1", "out_2"]
    assert s1.time_window == (D0 + timedelta(1), D0 + timedelta(10))
    data = BeliefData.model_validate(s1.to_memory_item().data)
    assert data.belief_type == "strategy_track_record" and data.evidence_ids == ["out_1", "out_2"]
    assert data.model_extra is not None and data.model_extra["sample_size"] == 2
    item = validate_item(s1.to_memory_item())
    assert item.type == "belief" and item.source is not None and item.source.system == "jax-reflection"
    # Deterministic: the same evidence gives the same ids and bytes.
    assert reflect_outcomes(list(reversed(outcomes)), as_of=D0 + timedelta(10)) == beliefs


def test_weak_evidence_has_low_confidence_and_the_future_is_ignored() -> None:
    few = reflect_outcomes([ev(1, 3.0), ev(2, 3.0)], as_of=D0 + timedelta(5))[0]
    many = reflect_outcomes([ev(i, 3.0) for i in range(60)], as_of=D0 + timedelta(60))[0]
    assert few.confidence == round(2 / 22, 6) and many.confidence == round(60 / 80, 6)
    later = reflect_outcomes([ev(1, 3.0), ev(30, -1.0)], as_of=D0 + timedelta(5))
    assert later[0].evidence_ids == ["out_1"]  # exits after as_of are unknown on as_of
    windowed = reflect_outcomes([ev(1, 3.0), ev(30, -1.0)], as_of=D0 + timedelta(30), window_days=10)
    assert windowed[0].evidence_ids == ["out_30"]


def test_outcomes_as_memory_items_feed_both_reasoners() -> None:
    from jax_assistant.learning.outcomes import outcome_memory_item
    from jax_assistant.memory.beliefs import evidence_from_items, track_record_items

    rows = [
        {
            "setup_id": f"out_{i}", "symbol": "AAPL", "strategy_id": "s1", "event_type": "gap_open",
            "direction": "long", "decided_on": D0, "status": "target" if r > 0 else "stop",
            "settled_through": D0 + timedelta(i), "exit_on": D0 + timedelta(i), "r_multiple": r,
            "sessions_held": 2, "pnl": 10.0 * r,
        }
        for i, r in ((1, 2.0), (2, 1.0), (3, -1.0))
    ]  # fmt: skip
    items = [validate_item(outcome_memory_item(r)) for r in rows]
    assert [i.data["outcome"] for i in items if i.data] == ["win", "win", "loss"]
    assert [e.setup_id for e in evidence_from_items(items)] == ["out_1", "out_2", "out_3"]
    [strategy, _event, _symbol] = track_record_items(items, as_of=D0 + timedelta(5), window_days=None)
    assert strategy.data is not None and strategy.data["evidence_ids"] == ["out_1", "out_2", "out_3"]
    assert strategy.data["win_rate"] == round(2 / 3, 6)
    # memory.reflect (the local reasoner) gives the old beliefs and the track records from one window.
    from datetime import UTC, datetime

    from jax_assistant.memory.models import ReflectionParams
    from jax_assistant.memory.reflection import reflect_items

    now = datetime.combine(D0 + timedelta(5), datetime.min.time(), tzinfo=UTC)
    stored = [i.model_copy(update={"id": f"mem_{n}"}) for n, i in enumerate(items)]  # ids come with retain
    reflected = reflect_items(stored, ReflectionParams(query="how did s1 do", window_days=30), now)
    kinds = [b.data["belief_type"] for b in reflected if b.data]
    assert "outcome_balance" in kinds
    assert {"strategy_track_record", "strategy_event_track_record", "symbol_track_record"} <= set(kinds)
