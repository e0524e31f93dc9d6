"""Strategy configs: one JSON file per strategy, in the contract's camelCase shape.

Example (``defaults/strategies/earnings_gap_v1.json``)::

    {"id": "earnings_gap_v1", "name": "Earnings Gap V1", "eventTypes": ["earnings_surprise", "gap_open"],
     "minRR": 2.0, "maxRiskPercent": 3.0, "entryRule": "...", "stopRule": "...", "targetRule": "2R,3R"}

``entryRule`` and ``stopRule`` are descriptive text (as in the old system); the rule they describe
is implemented by :class:`jax_assistant.strategies.rules.ConfigStrategy`. ``targetRule`` is parsed.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jax_assistant.domain.errors import ConfigError

_TARGET_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*[rR]\s*$")


class StrategyConfigError(ConfigError, ValueError):
    """A strategy file that cannot be used; the message names the file and the problem."""


def parse_target_rule(rule: str) -> list[float]:
    """``"2R,3R"`` -> ``[2.0, 3.0]``: R multiples, each > 0, strictly increasing."""
    if not isinstance(rule, str) or not rule.strip():
        raise ValueError("targetRule must be a non-empty list of R multiples such as '2R,3R'")
    multiples: list[float] = []
    for part in rule.split(","):
        m = _TARGET_RE.match(part)
        if m is None:
            raise ValueError(
                f"targetRule {rule!r}: {part.strip()!r} is not an R multiple (expected e.g. '2R' or '1.5R')"
            )
        value = float(m.group(1))
        if value <= 0:
            raise ValueError(f"targetRule {rule!r}: R multiples must be > 0, got {part.strip()!r}")
        if multiples and value <= multiples[-1]:
            raise ValueError(f"targetRule {rule!r}: targets must be strictly increasing")
        multiples.append(value)
    return multiples


class StrategyConfig(BaseModel):
    """One rule-based strategy (contract ``StrategyConfig``). Unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="used in setup ids: no spaces")
    name: str = Field(min_length=1)
    event_types: list[str] = Field(alias="eventTypes", min_length=1)
    min_rr: float = Field(alias="minRR", ge=0, description="minimum R multiple of the first target")
    max_risk_percent: float = Field(alias="maxRiskPercent", gt=0, le=100)
    entry_rule: str = Field(alias="entryRule", min_length=1)
    stop_rule: str = Field(alias="stopRule", min_length=1)
    target_rule: str = Field(alias="targetRule")
    description: str | None = None
    enabled: bool = True

    @field_validator("event_types")
    @classmethod
    def _event_types(cls, v: list[str]) -> list[str]:
        if any(not t.strip() for t in v):
            raise ValueError("eventTypes entries must be non-empty")
        return list(dict.fromkeys(v))

    @field_validator("target_rule")
    @classmethod
    def _target_rule(cls, v: str) -> str:
        parse_target_rule(v)
        return v

    @model_validator(mode="after")
    def _first_target_meets_min_rr(self) -> StrategyConfig:
        # Such a strategy could never emit a setup (every one is below minRR): say so at load time
        # instead of producing nothing, silently, on every run.
        first = self.target_multiples[0]
        if first < self.min_rr:
            raise ValueError(
                f"the first target of targetRule {self.target_rule!r} is {first:g}R, below minRR "
                f"{self.min_rr:g}: the strategy could never produce a setup"
            )
        return self

    @property
    def target_multiples(self) -> list[float]:
        return parse_target_rule(self.target_rule)

    def to_contract(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True)


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(file)"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown field {field!r}")
        else:
            parts.append(f"field {field!r}: {e['msg']}")
    return "; ".join(parts)


def load_strategy_config(path: Path) -> StrategyConfig:
    """One strategy file; any problem raises :class:`StrategyConfigError` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StrategyConfigError(f"{path}: cannot read strategy file: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise StrategyConfigError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    if not isinstance(data, dict):
        raise StrategyConfigError(f"{path}: a strategy file must hold one JSON object")
    try:
        return StrategyConfig.model_validate(data)
    except ValidationError as exc:
        raise StrategyConfigError(f"{path}: invalid strategy config: {_describe(exc)}") from exc


def load_strategy_configs(folder: Path) -> list[StrategyConfig]:
    """Every ``*.json`` in ``folder`` (sorted by file name); duplicate ids are rejected."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StrategyConfigError(f"{folder}: strategy folder not found")
    configs: list[StrategyConfig] = []
    seen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.json")):
        cfg = load_strategy_config(path)
        if cfg.id in seen:
            raise StrategyConfigError(f"{path}: duplicate strategy id {cfg.id!r} (also in {seen[cfg.id]})")
        seen[cfg.id] = path
        configs.append(cfg)
    return configs


def default_strategies_dir() -> Path:
    """The strategy files bundled with the package (``jax_assistant/defaults/strategies``)."""
    root = resources.files("jax_assistant.defaults") / "strategies"
    # The package is installed as plain files (editable or wheel), so this is a real directory.
    return Path(str(root))
