"""Strategy config files: the shipped defaults, parsing of targetRule, clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jax_assistant.strategies import (
    StrategyConfig,
    StrategyConfigError,
    default_strategies_dir,
    load_strategy_configs,
    parse_target_rule,
)

VALID: dict[str, Any] = {
    "id": "my_gap_v1",
    "name": "My Gap",
    "eventTypes": ["gap_open"],
    "minRR": 2.0,
    "maxRiskPercent": 1.0,
    "entryRule": "open",
    "stopRule": "session low/high",
    "targetRule": "2R,3R",
}


def write(folder: Path, name: str, data: object) -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_shipped_defaults() -> None:
    folder = default_strategies_dir()
    assert folder.is_dir()
    configs = {c.id: c for c in load_strategy_configs(folder)}
    assert set(configs) == {"earnings_gap_v1", "volatility_spike_v1"}
    eg = configs["earnings_gap_v1"]
    assert eg.event_types == ["earnings_surprise", "gap_open"]
    assert (eg.min_rr, eg.max_risk_percent, eg.target_rule) == (2.0, 3.0, "2R,3R")
    assert eg.target_multiples == [2.0, 3.0]
    vs = configs["volatility_spike_v1"]
    assert vs.event_types == ["volume_spike"]
    assert (vs.min_rr, vs.max_risk_percent, vs.target_rule) == (1.5, 2.0, "1.5R,2R")
    assert all(c.enabled for c in configs.values())


def test_round_trips_in_contract_shape() -> None:
    cfg = StrategyConfig.model_validate(VALID)
    out = cfg.to_contract()
    assert {k: out[k] for k in VALID} == VALID
    assert out["enabled"] is True and out["description"] is None


def test_unknown_field_is_rejected_naming_field_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "typo.json", {**VALID, "maxRiskPercnt": 2.0})
    with pytest.raises(StrategyConfigError) as err:
        load_strategy_configs(tmp_path)
    msg = str(err.value)
    assert "maxRiskPercnt" in msg
    assert str(path) in msg
    assert "unknown field" in msg


def test_bad_value_names_field_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.json", {**VALID, "minRR": "lots"})
    with pytest.raises(StrategyConfigError, match="minRR") as err:
        load_strategy_configs(tmp_path)
    assert str(path) in str(err.value)


def test_missing_field_names_it(tmp_path: Path) -> None:
    data = dict(VALID)
    del data["targetRule"]
    write(tmp_path, "missing.json", data)
    with pytest.raises(StrategyConfigError, match="targetRule"):
        load_strategy_configs(tmp_path)


def test_invalid_json_names_the_file_and_position(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.json", '{"id": "x",\n "name": }')
    with pytest.raises(StrategyConfigError, match="invalid JSON at line 2") as err:
        load_strategy_configs(tmp_path)
    assert str(path) in str(err.value)


def test_not_an_object(tmp_path: Path) -> None:
    write(tmp_path, "list.json", [VALID])
    with pytest.raises(StrategyConfigError, match="one JSON object"):
        load_strategy_configs(tmp_path)


def test_bad_target_rule_in_file(tmp_path: Path) -> None:
    write(tmp_path, "t.json", {**VALID, "targetRule": "2R,banana"})
    with pytest.raises(StrategyConfigError, match=r"targetRule.*banana"):
        load_strategy_configs(tmp_path)


def test_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    write(tmp_path, "a.json", VALID)
    write(tmp_path, "b.json", {**VALID, "name": "Other"})
    with pytest.raises(StrategyConfigError, match="duplicate strategy id 'my_gap_v1'") as err:
        load_strategy_configs(tmp_path)
    assert "a.json" in str(err.value) and "b.json" in str(err.value)


def test_loads_sorted_and_ignores_other_files(tmp_path: Path) -> None:
    write(tmp_path, "b.json", {**VALID, "id": "b_v1"})
    write(tmp_path, "a.json", {**VALID, "id": "a_v1"})
    write(tmp_path, "README.md", "not a strategy")
    assert [c.id for c in load_strategy_configs(tmp_path)] == ["a_v1", "b_v1"]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(StrategyConfigError, match="not found"):
        load_strategy_configs(tmp_path / "nope")


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("2R,3R", [2.0, 3.0]), ("1.5R, 2R", [1.5, 2.0]), (" 2r ", [2.0]), ("0.5R,1R,1.5R", [0.5, 1.0, 1.5])],
)
def test_parse_target_rule(rule: str, expected: list[float]) -> None:
    assert parse_target_rule(rule) == expected


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("", "non-empty"),
        ("2,3", "'2' is not an R multiple"),
        ("2R,,3R", "'' is not an R multiple"),
        ("-1R", "not an R multiple"),
        ("0R", "must be > 0"),
        ("3R,2R", "strictly increasing"),
        ("2R,2R", "strictly increasing"),
    ],
)
def test_parse_target_rule_errors(rule: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_target_rule(rule)


def test_field_constraints() -> None:
    for bad in ({"eventTypes": []}, {"maxRiskPercent": 0}, {"id": "has space"}, {"minRR": -1}):
        with pytest.raises(ValueError):
            StrategyConfig.model_validate({**VALID, **bad})


@pytest.mark.parametrize(("min_rr", "target_rule"), [(2.5, "2R,3R"), (2.0, "1.5R,2R")])
def test_first_target_below_min_rr_is_rejected_naming_the_file(
    tmp_path: Path, min_rr: float, target_rule: str
) -> None:
    path = write(tmp_path, "never.json", {**VALID, "minRR": min_rr, "targetRule": target_rule})
    with pytest.raises(StrategyConfigError, match="minRR") as err:
        load_strategy_configs(tmp_path)
    assert str(path) in str(err.value) and "could never produce a setup" in str(err.value)


def test_first_target_at_min_rr_is_accepted(tmp_path: Path) -> None:
    write(tmp_path, "edge.json", {**VALID, "minRR": 1.5, "targetRule": "1.5R,2R"})
    [cfg] = load_strategy_configs(tmp_path)
    assert cfg.target_multiples[0] == cfg.min_rr
