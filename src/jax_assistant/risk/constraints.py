"""Portfolio constraints (``risk-constraints.json``: snake_case keys, limits as fractions)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jax_assistant.domain.errors import ConfigError

BUNDLED_CONSTRAINTS = "risk-constraints.json"


class RiskConfigError(ConfigError, ValueError):
    """A constraints or portfolio file that cannot be read; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PortfolioConstraints(_Strict):
    max_position_size: float = Field(default=50_000, gt=0, description="max value of one position")
    max_positions: int = Field(default=10, ge=0, description="max open positions")
    max_sector_exposure: float = Field(default=0.30, gt=0, description="sector value / equity")
    max_correlated_exposure: float = Field(
        default=0.40,
        gt=0,
        description="(a position's value + booked positions correlated with it) / equity",
    )
    correlation_threshold: float = Field(
        default=0.70, gt=0, le=1, description="return correlation at which two positions count together"
    )
    correlation_window: int = Field(
        default=60, ge=5, le=2_000, description="daily close-to-close returns ending at the as-of date"
    )
    max_portfolio_risk: float = Field(default=0.15, gt=0, description="open risk / equity")
    max_drawdown: float = Field(default=0.20, gt=0, le=1, description="equity / peak - 1 that halts trading")
    min_account_size: float = Field(default=10_000, ge=0)


class PositionLimits(_Strict):
    max_risk_per_trade: float = Field(default=0.02, gt=0, le=1)
    min_risk_per_trade: float = Field(default=0.005, ge=0, le=1)
    max_leverage: float = Field(default=2.0, gt=0, description="position value / equity")
    min_stop_distance: float = Field(default=0.01, ge=0, description="|entry - stop| / entry")
    max_stop_distance: float = Field(default=0.10, gt=0)

    @model_validator(mode="after")
    def _ranges(self) -> PositionLimits:
        if self.min_risk_per_trade > self.max_risk_per_trade:
            raise ValueError("min_risk_per_trade must not exceed max_risk_per_trade")
        if self.min_stop_distance > self.max_stop_distance:
            raise ValueError("min_stop_distance must not exceed max_stop_distance")
        return self


class ProtectionSettings(_Strict):
    cooldown_sessions_after_stop: int = Field(
        default=3, ge=0, description="sessions a symbol is blocked after a stop-out (0 disables)"
    )
    max_daily_loss: float = Field(default=0.03, gt=0, le=1, description="realised loss today / account size")
    enabled: list[str] = Field(
        default_factory=lambda: ["drawdown_halt", "daily_loss", "cooldown"],
        description="protections the allocation applies, by name, in this order",
    )

    @field_validator("enabled")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from jax_assistant.risk.protections import PROTECTIONS  # protections import this module

        unknown = [name for name in v if name not in PROTECTIONS]
        if unknown:
            raise ValueError(f"unknown protection(s) {unknown}; known: {sorted(PROTECTIONS)}")
        return list(dict.fromkeys(v))


class RiskConstraints(_Strict):
    portfolio_constraints: PortfolioConstraints = Field(default_factory=PortfolioConstraints)
    position_limits: PositionLimits = Field(default_factory=PositionLimits)
    sizing_model: Literal["fixed_fractional"] = "fixed_fractional"
    protections: ProtectionSettings = Field(default_factory=ProtectionSettings)

    def merged(self, overrides: Mapping[str, Any] | None) -> RiskConstraints:
        """A copy with ``overrides`` (a partial constraints document, e.g. a run's ``constraints{}``)
        deep-merged in and validated (unknown fields are rejected)."""
        if not overrides:
            return self
        return RiskConstraints.model_validate(_deep_merge(self.model_dump(), overrides))


def _deep_merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        current = out.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            out[key] = _deep_merge(current, value)
        else:
            out[key] = value
    return out


M = TypeVar("M", bound=BaseModel)


def load_model_file(path: Path, model: type[M]) -> M:
    """Read a JSON file into ``model``; failures raise :class:`RiskConfigError` naming file and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RiskConfigError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RiskConfigError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise RiskConfigError(f"{path}: {problems}") from exc


def load_risk_constraints(path: str | Path | None = None) -> RiskConstraints:
    """Load ``risk-constraints.json``; ``None`` loads the bundled defaults (the contract values)."""
    if path is not None:
        return load_model_file(Path(path), RiskConstraints)
    bundled = resources.files("jax_assistant.defaults").joinpath(BUNDLED_CONSTRAINTS)
    with resources.as_file(bundled) as real_path:
        return load_model_file(real_path, RiskConstraints)
