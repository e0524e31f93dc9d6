"""How an outcome item from memory's trade_outcomes bank is read (the memory adapter's one rule)."""

from __future__ import annotations

from jax_assistant.research.memory_history import outcome_of


def test_outcome_labels_and_signs() -> None:
    assert outcome_of({"outcome": "WIN"}) == "win"
    assert outcome_of({"result": "stopped"}) == "loss"
    assert outcome_of({"rMultiple": -1.0}) == "loss"
    assert outcome_of({"pnl": 12.5}) == "win"
    assert outcome_of({"outcome": "open"}) is None
    assert outcome_of({"r": True}) is None  # a flag is not a number
    assert outcome_of({}) is None
