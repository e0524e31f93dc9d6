from __future__ import annotations

import json
from pathlib import Path

import pytest

from jax_assistant.risk import RiskConfigError, RiskConstraints, load_risk_constraints


def test_bundled_file_holds_the_contract_values() -> None:
    c = load_risk_constraints()
    pc, pl = c.portfolio_constraints, c.position_limits
    assert (pc.max_position_size, pc.max_positions, pc.max_sector_exposure) == (50_000, 10, 0.30)
    assert (pc.max_correlated_exposure, pc.max_portfolio_risk, pc.max_drawdown) == (0.40, 0.15, 0.20)
    assert pc.min_account_size == 10_000
    assert (pl.max_risk_per_trade, pl.min_risk_per_trade, pl.max_leverage) == (0.02, 0.005, 2.0)
    assert (pl.min_stop_distance, pl.max_stop_distance) == (0.01, 0.10)
    assert c.sizing_model == "fixed_fractional"
    assert (c.protections.cooldown_sessions_after_stop, c.protections.max_daily_loss) == (3, 0.03)
    assert (pc.correlation_threshold, pc.correlation_window) == (0.70, 60)
    assert c.protections.enabled == ["drawdown_halt", "daily_loss", "cooldown"]
    assert c == RiskConstraints()  # model defaults and the shipped file agree


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "risk-constraints.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_unknown_field_is_rejected_naming_file_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, {"position_limits": {"max_leverag": 3}})
    with pytest.raises(RiskConfigError) as info:
        load_risk_constraints(path)
    assert str(path) in str(info.value)
    assert "position_limits.max_leverag" in str(info.value)


def test_bad_value_names_the_field(tmp_path: Path) -> None:
    path = _write(tmp_path, {"portfolio_constraints": {"max_positions": "ten"}})
    with pytest.raises(RiskConfigError, match=r"portfolio_constraints\.max_positions"):
        load_risk_constraints(str(path))


def test_inconsistent_limits_are_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, {"position_limits": {"min_stop_distance": 0.2}})
    with pytest.raises(RiskConfigError, match="min_stop_distance must not exceed max_stop_distance"):
        load_risk_constraints(path)


def test_invalid_json_and_missing_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{\n  oops", encoding="utf-8")
    with pytest.raises(RiskConfigError, match=r"broken\.json: invalid JSON at line 2"):
        load_risk_constraints(path)
    with pytest.raises(RiskConfigError, match=r"absent\.json: cannot read file"):
        load_risk_constraints(tmp_path / "absent.json")


def test_partial_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    c = load_risk_constraints(_write(tmp_path, {"portfolio_constraints": {"max_positions": 3}}))
    assert c.portfolio_constraints.max_positions == 3
    assert c.portfolio_constraints.max_sector_exposure == 0.30
    assert c.position_limits.max_risk_per_trade == 0.02


def test_merged_overrides_deep_merge_and_validate() -> None:
    base = RiskConstraints()
    merged = base.merged({"position_limits": {"max_risk_per_trade": 0.01}})
    assert merged.position_limits.max_risk_per_trade == 0.01
    assert merged.position_limits.max_leverage == 2.0
    assert base.position_limits.max_risk_per_trade == 0.02
    with pytest.raises(ValueError, match="nonsense"):
        base.merged({"nonsense": 1})
