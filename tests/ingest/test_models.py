"""Normalisation and significance rules of jax-ingest observations."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jax_assistant.ingest import TYPE_ALIASES, Observation, bank_for, normalise_type

TS = "2026-11-27T14:30:00Z"


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("earnings_detected", "earnings"),
        ("earnings_event", "earnings"),
        ("news", "news_headline"),
        ("headline", "news_headline"),
        ("volume_spike", "unusual_volume"),
        ("volume", "unusual_volume"),
        ("gap", "price_gap"),
        ("gap_up", "price_gap"),
        ("gap_down", "price_gap"),
        ("Gap-Up", "price_gap"),
        ("analyst_upgrade", "analyst_upgrade"),  # not an alias: kept as sent (normalised case)
    ],
)
def test_type_aliases_are_normalised_as_the_issue_lists(alias: str, canonical: str) -> None:
    assert normalise_type(alias) == canonical
    assert Observation.model_validate({"type": alias, "timestamp": TS, "symbol": "X"}).type == canonical


def test_alias_table_is_exactly_the_issues() -> None:
    assert len(TYPE_ALIASES) == 9
    assert bank_for("price_gap") == bank_for("unusual_volume") == "signals"
    assert bank_for("earnings") == bank_for("news_headline") == "market_events"


@pytest.mark.parametrize(
    ("fields", "significant"),
    [
        ({"impact_estimate": 0.7}, True),  # the threshold itself counts
        ({"impact_estimate": -0.75}, True),  # |impact|
        ({"impact_estimate": 0.69, "confidence": 0.69}, False),
        ({"confidence": 0.7}, True),
        ({"bookmarked": True, "impact_estimate": 0.0}, True),
        ({}, False),
    ],
)
def test_significance(fields: dict[str, object], significant: bool) -> None:
    obs = Observation.model_validate({"type": "news", "timestamp": TS, **fields})
    assert obs.is_significant(0.7) is significant


def test_key_is_the_normalised_content() -> None:
    a = Observation.model_validate({"type": "gap_up", "timestamp": TS, "symbol": "aapl", "price": 1.0})
    b = Observation.model_validate(
        {"type": "gap", "timestamp": "2026-11-27T09:30:00-05:00", "symbol": "AAPL ", "price": 1}
    )
    c = Observation.model_validate({"type": "gap", "timestamp": TS, "symbol": "AAPL", "price": 1.01})
    assert a.idempotency_key() == b.idempotency_key() != c.idempotency_key()


def test_non_finite_numbers_are_rejected() -> None:
    with pytest.raises(ValidationError, match="price"):
        Observation.model_validate({"type": "news", "timestamp": TS, "price": float("nan")})
