"""Settings: embedded defaults, overridden by a TOML file, overridden by ``JAX_*`` environment variables.

Precedence (highest first): explicit CLI flags, environment (``JAX_*``, nested with ``__``, plus the
contract's plain ``DATABASE_URL``), the TOML file (``$JAX_CONFIG`` or ``./jax.toml``), built-in defaults.
A fresh install needs none of it: sample market, SQLite file, local engine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from jax_assistant.analysis.detectors import DetectorConfig
from jax_assistant.pipeline.policy import (
    BreakerConfig,
    BulkheadConfig,
    RateLimitConfig,
    ResilienceConfig,
    StagePolicy,
)

DEFAULT_PIPELINE = ["detect_events", "generate_trades", "calculate_risk", "allocate", "persist"]


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(default=8, ge=1, le=10_000, description="symbols in flight at once")
    queue_size: int = Field(default=64, ge=1, description="bounded work queue (backpressure on producers)")
    drain_timeout_s: float = Field(
        default=30.0, ge=0, description="how long a cancel waits for in-flight stages"
    )


def default_resilience() -> ResilienceConfig:
    """Dependency settings shipped by default (the research and memory stages of later issues use them)."""
    return ResilienceConfig(
        breakers={
            "research.dexter": BreakerConfig(slow_call_duration_threshold_s=60.0),
            "memory": BreakerConfig(slow_call_duration_threshold_s=2.0),
        },
        rate_limits={"research.dexter": RateLimitConfig(limit=60, period_s=60.0)},
        bulkheads={"research.dexter": BulkheadConfig(max_concurrent=4)},
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="JAX_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    # --- storage
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("database_url", "JAX_DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy URL; default a SQLite file under data_dir",
    )
    data_dir: Path | None = Field(default=None, description="where the SQLite file lives")

    # --- market data
    provider: Literal["sample", "csv"] = "sample"
    data_path: Path | None = Field(default=None, description="csv file or folder for the csv provider")
    earnings_path: Path | None = None
    sectors_path: Path | None = None
    watchlist: list[str] = Field(default_factory=list, description="default symbols; empty = all")

    # --- analysis, strategies, risk
    lookback: int = Field(default=1, ge=1, le=10_000)
    detectors: DetectorConfig = Field(default_factory=DetectorConfig)
    strategies_dir: Path | None = None
    strategies: list[str] | None = Field(default=None, description="enabled strategy ids; None = all")
    account_size: float = Field(default=10_000.0, gt=0)
    risk_percent: float = Field(default=3.0, gt=0, le=100)
    risk_constraints_path: Path | None = None
    portfolio_path: Path | None = Field(default=None, description="JSON portfolio state (open positions...)")

    # --- pipeline & engine
    pipeline: list[str] = Field(default_factory=lambda: list(DEFAULT_PIPELINE))
    stages: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per-stage partial policy overrides, merged onto the stage's default",
    )
    resilience: ResilienceConfig = Field(default_factory=default_resilience)
    engine: EngineConfig = Field(default_factory=EngineConfig)

    # --- observability
    log_level: str = "WARNING"
    log_json: bool = False
    metrics_enabled: bool = True
    tracing_enabled: bool = False
    otlp_endpoint: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = config_file_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    def stage_policy(
        self, name: str, default: StagePolicy, override: dict[str, Any] | None = None
    ) -> StagePolicy:
        """The policy of stage ``name``: its own default, then this config's override, then a run's."""
        return default.merged(self.stages.get(name)).merged(override)


def config_file_path() -> Path | None:
    explicit = os.environ.get("JAX_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"JAX_CONFIG points at {path}, which is not a file")
        return path
    local = Path("jax.toml")
    return local if local.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Settings with explicit overrides (e.g. from CLI flags) taking precedence over everything."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
