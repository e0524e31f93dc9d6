from __future__ import annotations

import math

import pytest

from jax_assistant.risk import PositionSizing, RiskInputError, calculate_position, stop_distance


def test_contract_example_before_the_cap() -> None:
    s = calculate_position(10_000, 3, 100, 95, 110)
    assert s.risk_budget == 300
    assert s.risk_per_unit == 5
    assert s.position_size == 60
    assert s.total_risk == 300
    assert s.r_multiple == 2


def test_contract_example_at_the_two_percent_cap() -> None:
    s = calculate_position(10_000, 2, 100, 95, 110)
    assert (s.risk_budget, s.position_size, s.total_risk, s.r_multiple) == (200, 40, 200, 2)


def test_floor_is_exact_where_binary_floats_are_not() -> None:
    assert calculate_position(10_000, 3, 100, 95).position_size == 60
    # In floats 100 / (1.1 - 1.0) is 999.99..., a naive floor would give 999.
    assert math.floor(10_000 * 1 / 100 / (1.1 - 1.0)) == 999
    s = calculate_position(10_000, 1, 1.1, 1.0)
    assert s.position_size == 1000
    assert s.risk_per_unit == 0.1
    assert s.total_risk == 100


def test_floor_rounds_down() -> None:
    s = calculate_position(10_000, 2, 100, 97)  # 200 / 3 = 66.67
    assert s.position_size == 66
    assert s.total_risk == 198


def test_short_setup_and_no_target() -> None:
    s = calculate_position(10_000, 2, 95, 100, 85)
    assert (s.position_size, s.risk_per_unit, s.r_multiple) == (40, 5, 2)
    assert calculate_position(10_000, 2, 100, 95).r_multiple == 0


def test_camel_case_contract_shape() -> None:
    out = calculate_position(10_000, 2, 100, 95, 110).to_contract()
    assert out == {
        "positionSize": 40,
        "riskPerUnit": 5.0,
        "totalRisk": 200.0,
        "rMultiple": 2.0,
        "riskBudget": 200.0,
    }


def test_with_size_recomputes_total_risk_and_refuses_to_grow() -> None:
    s = calculate_position(10_000, 2, 1.1, 1.0)
    smaller = s.with_size(3)
    assert isinstance(smaller, PositionSizing)
    assert (smaller.position_size, smaller.total_risk) == (3, 0.3)
    with pytest.raises(ValueError):
        s.with_size(s.position_size + 1)


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"),
    [
        ({"account_size": 0}, "account_size", "greater than 0"),
        ({"account_size": -5}, "account_size", "greater than 0"),
        ({"account_size": math.inf}, "account_size", "finite"),
        ({"risk_percent": 0}, "risk_percent", "greater than 0"),
        ({"risk_percent": -1}, "risk_percent", "greater than 0"),
        ({"risk_percent": math.nan}, "risk_percent", "finite"),
        ({"entry": math.nan}, "entry", "finite"),
        ({"stop": -1}, "stop", "greater than 0"),
        ({"stop": 100}, "stop", "must differ from entry"),
        ({"target": math.inf}, "target", "finite"),
    ],
)
def test_input_errors_name_the_field(kwargs: dict[str, float], field: str, rule: str) -> None:
    args: dict[str, float] = {"account_size": 10_000, "risk_percent": 2, "entry": 100, "stop": 95}
    args.update(kwargs)
    with pytest.raises(RiskInputError) as info:
        calculate_position(**args)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")
    assert rule in str(info.value)
    assert isinstance(info.value, ValueError)


def test_stop_distance_is_exact_on_typed_decimals() -> None:
    assert stop_distance(100, 99) == 0.01
    assert stop_distance(1.1, 1.0) == pytest.approx(0.1 / 1.1)
    assert stop_distance(100, 110) == 0.1
