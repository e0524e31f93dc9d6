"""The contract's validation rules for memory items, in the contract's order and with its messages."""

from __future__ import annotations

from typing import Any

import pytest

from jax_assistant.domain.errors import InputError
from jax_assistant.memory import (
    MemoryValidationError,
    make_belief,
    parse_item,
    parse_params,
    parse_query,
    validate_bank,
)


def good() -> dict[str, Any]:
    return {
        "ts": "2026-03-02T14:30:00Z",
        "type": "decision",
        "symbol": "aapl",
        "tags": ["sym:aapl"],
        "summary": "Bought the gap.",
        "data": {"entry": 101.5},
        "source": {"system": "jax-orchestrator", "ref": "run_1"},
    }


# Each case breaks its own rule AND every rule after it, so only the contract's order gives its message.
ORDERED_CASES = [
    (
        {"ts": None, "type": " ", "summary": "", "data": None, "source": None, "tags": ["x"] * 11},
        "memory item timestamp required",
        "ts",
    ),
    (
        {"type": "  ", "summary": "", "data": None, "source": None, "tags": ["x"] * 11},
        "memory item type required",
        "type",
    ),
    (
        {"summary": "", "data": None, "source": None, "tags": ["x"] * 11},
        "memory item summary length invalid",
        "summary",
    ),
    ({"summary": "x" * 501, "data": None}, "memory item summary length invalid", "summary"),
    ({"data": None, "source": None, "tags": ["x"] * 11}, "memory item data required", "data"),
    ({"source": None, "tags": ["x"] * 11}, "memory item source required", "source.system"),
    ({"source": {"ref": "r"}, "tags": ["x"] * 11}, "memory item source required", "source.system"),
    ({"source": {"system": " "}}, "memory item source required", "source.system"),
    ({"tags": ["a"] * 11 + [""]}, "memory item has too many tags", "tags"),
    ({"tags": ["ok", "   "]}, "memory item tags must be lowercase and non-empty", "tags"),
]


@pytest.mark.parametrize(("change", "message", "field"), ORDERED_CASES)
def test_rules_apply_in_contract_order(change: dict[str, Any], message: str, field: str) -> None:
    raw = good() | change
    with pytest.raises(MemoryValidationError) as info:
        parse_item(raw)
    assert str(info.value) == message
    assert info.value.field == field
    assert isinstance(info.value, InputError)


def test_missing_ts_key_is_the_timestamp_rule() -> None:
    raw = good()
    del raw["ts"]
    with pytest.raises(MemoryValidationError, match=r"^memory item timestamp required$"):
        parse_item(raw)


def test_boundaries_that_pass() -> None:
    item = parse_item(good() | {"summary": "x" * 500, "tags": [f"t{i}" for i in range(10)]})
    assert len(item.summary) == 500
    assert parse_item(good() | {"summary": "x", "data": {}}).data == {}


def test_tags_are_trimmed_and_lowercased_before_validation() -> None:
    item = parse_item(good() | {"tags": ["  Sym:AAPL ", "KIND:Decision"]})
    assert item.tags == ["sym:aapl", "kind:decision"]
    assert item.symbol == "AAPL"


def test_data_is_redacted_before_the_backend_sees_it() -> None:
    raw = good() | {"data": {"broker_key": "k", "nested": {"api_key": "s", "price": 3}, "account_id": "A1"}}
    item = parse_item(raw)
    assert item.data == {
        "broker_key": "[REDACTED]",
        "nested": {"api_key": "[REDACTED]", "price": 3},
        "account_id": "[REDACTED]",
    }
    assert raw["data"]["nested"]["api_key"] == "s"  # the caller's dict is not mutated


def test_wrong_types_name_the_field() -> None:
    with pytest.raises(MemoryValidationError) as info:
        parse_item(good() | {"ts": "not a time"})
    assert info.value.field == "item.ts"
    with pytest.raises(MemoryValidationError, match="item must be an object"):
        parse_item(["x"])  # type: ignore[arg-type]


def test_bank_and_params_rules() -> None:
    with pytest.raises(MemoryValidationError, match=r"^bank is required$"):
        validate_bank(" ")
    with pytest.raises(MemoryValidationError) as info:
        validate_bank("Trade-Decisions")
    assert info.value.field == "bank"
    assert validate_bank(" signals ") == "signals"
    with pytest.raises(MemoryValidationError, match=r"^params.query is required$"):
        parse_params({"window_days": 7})
    with pytest.raises(MemoryValidationError, match=r"^params.query is required$"):
        parse_params({"query": "  "})
    assert parse_params({"query": "q", "window_days": 7}).window_days == 7
    with pytest.raises(MemoryValidationError) as info:
        parse_params({"query": "q", "window_days": 0})
    assert info.value.field == "params.window_days"


def test_query_aliases_and_window_order() -> None:
    q = parse_query({"from": "2026-01-01", "to": "2026-02-01", "tags": [" A "], "symbol": "msft"})
    assert q.from_ is not None and q.from_.year == 2026 and q.tags == ["a"] and q.symbol == "MSFT"
    assert q.model_dump(by_alias=True)["from"] == q.from_
    with pytest.raises(MemoryValidationError) as info:
        parse_query({"from": "2026-02-02", "to": "2026-02-01"})
    assert info.value.field == "from"
    with pytest.raises(MemoryValidationError) as info:
        parse_query({"limit": 0})
    assert info.value.field == "query.limit"


def test_belief_shape() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 3, 1, tzinfo=UTC)
    belief = make_belief(
        belief_type="outcome_balance",
        summary="More wins.",
        window=(now, now),
        evidence_ids=["a"],
        confidence=0.65,
        ts=now,
        wins=2,
    )
    assert belief.type == "belief" and belief.source is not None
    assert belief.source.system == "jax-reflection"
    assert belief.data is not None
    assert belief.data["time_window"] == {"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}
    assert belief.data["wins"] == 2 and belief.data["confidence"] == 0.65
    validated = parse_item(belief)
    assert validated.tags == ["belief", "belief:outcome_balance"]
