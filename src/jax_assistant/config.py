"""Settings: embedded defaults, overridden by a TOML file, overridden by ``JAX_*`` environment variables.

Precedence (highest first): explicit CLI flags, environment (``JAX_*``, nested with ``__``, plus the
contract's plain ``DATABASE_URL``), the TOML file (``$JAX_CONFIG`` or ``./jax.toml``), built-in defaults.
A fresh install needs none of it: sample market, SQLite file, local engine.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from jax_assistant.analysis.detectors import DetectorConfig
from jax_assistant.domain.errors import ConfigError
from jax_assistant.ingest.models import IngestConfig
from jax_assistant.learning.settings import LearningConfig
from jax_assistant.marketdata.settings import MarketDataConfig
from jax_assistant.pipeline.policy import (
    BreakerConfig,
    BulkheadConfig,
    RateLimitConfig,
    ResilienceConfig,
    StagePolicy,
)
from jax_assistant.research.config import ResearchConfig

DEFAULT_PIPELINE = [
    "recall_memory",
    "detect_events",
    "generate_trades",
    "calculate_risk",
    "allocate",
    "research",
    "persist",
    "retain_memory",
]


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(default=8, ge=1, le=10_000, description="symbols in flight at once")
    queue_size: int = Field(default=64, ge=1, description="bounded work queue (backpressure on producers)")
    drain_timeout_s: float = Field(
        default=30.0, ge=0, description="how long a cancel waits for in-flight stages"
    )


class ApiConfig(BaseModel):
    """The HTTP service's protection: keys, trusted hosts, request limits, admission (docs/api.md)."""

    model_config = ConfigDict(extra="forbid")

    auth: Literal["required", "off"] = Field(
        default="required", description="required: every mutating route needs a write (or admin) key"
    )
    read_auth: bool = Field(default=False, description="reads need a read key too (default: reads open)")
    trusted_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "::1"],
        description="Host header values served (DNS-rebinding guard); '*' serves any",
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1, description="larger request bodies get a 413")
    max_json_depth: int = Field(default=32, ge=1, le=1000)
    max_list_length: int = Field(default=10_000, ge=1)
    max_string_length: int = Field(default=100_000, ge=1)
    body_timeout_s: float = Field(default=10.0, gt=0, description="a body slower than this gets a 408")
    header_timeout_s: float = Field(default=10.0, gt=0, description="request headers must arrive in this")
    max_symbols_in_flight: int = Field(default=64, ge=1, description="global cap across every run")
    max_queued_runs: int = Field(default=32, ge=0, description="runs waiting for capacity; then 429")
    access_log: bool = Field(default=False, description="one redacted line per request")
    executor: Literal["inline", "process"] = Field(
        default="inline",
        description="where runs execute: on the request loop (inline) or in an executor process at a "
        "lower CPU priority, so requests keep the core while runs execute (docs/api.md)",
    )
    executor_nice: int = Field(default=10, ge=0, le=19, description="the executor process's os.nice")
    executor_sched: Literal["nice", "idle"] = Field(
        default="nice",
        description="the executor's CPU policy: nice (SCHED_OTHER at executor_nice) or idle (Linux "
        "SCHED_IDLE: a request preempts the runs at once, but the runs get almost no CPU while other "
        "programs keep the cores busy; for a host that serves jax alone, docs/api.md)",
    )


class StorageConfig(BaseModel):
    """Run leases and retention (see docs/architecture.md, "Run leases" and "Bounded storage")."""

    model_config = ConfigDict(extra="forbid")

    lease_ttl_s: float = Field(
        default=30.0, gt=0, description="a run whose executor stops heartbeating is resumable after this"
    )
    heartbeat_s: float = Field(default=10.0, gt=0, description="how often the executor renews its lease")
    retention_days: float = Field(
        default=30.0, gt=0, description="`jax db prune` default: finished runs and audit older than this"
    )
    compact_completed: bool = Field(
        default=True, description="drop a completed run's per-stage item snapshots (not needed to resume)"
    )

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> StorageConfig:
        if self.heartbeat_s >= self.lease_ttl_s:
            raise ValueError(
                f"storage.heartbeat_s ({self.heartbeat_s}) must be below storage.lease_ttl_s"
                f" ({self.lease_ttl_s}), or a live run's lease would expire between heartbeats"
            )
        return self


class DataSourceConfig(BaseModel):
    """A market-data source an API caller may pick by name (``dataSource``), never by server path."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["sample", "csv"] = "csv"
    path: Path | None = Field(default=None, description="csv file or folder (csv provider)")


class MemoryConfig(BaseModel):
    """``[memory]``: which backend remembers, and how recall ranks (see docs/memory.md)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["embedded", "remote", "hindsight"] = Field(
        default="embedded", description="embedded = the project database; remote = jax-memory; hindsight"
    )
    url: str | None = Field(default=None, description="base URL of the remote service or Hindsight server")
    # memauth: the jax-memory service checks API keys like the orchestrator (jax keys create --db ...).
    api_key: SecretStr | None = Field(
        default=None, description="remote: a jax-memory API key (write scope), sent as Bearer; never logged"
    )
    bank: str = Field(default="trade_decisions", description="bank used when a call names none")
    semantic: bool = Field(
        default=False, description="embedded: add the embedding arm (needs the `semantic` extra)"
    )
    recency_half_life_days: float = Field(
        default=30.0, gt=0, allow_inf_nan=False, description="age at which the recency boost halves"
    )
    recency_weight: float = Field(
        default=0.1, ge=0, le=1, description="largest recency boost: score x (1 + weight) for a new memory"
    )
    candidates: int = Field(default=100, ge=1, le=10_000, description="candidates per retrieval arm")
    timeout_s: float = Field(default=2.0, gt=0, description="per-call timeout of remote backends")
    connect_timeout_s: float = Field(default=1.0, gt=0, description="connect timeout of remote backends")
    # memsvc: how often `jax serve` retries the retains waiting in the outbox.
    outbox_drain_s: float = Field(default=30.0, gt=0, description="jax serve: seconds between outbox drains")


def default_resilience() -> ResilienceConfig:
    """Dependency settings shipped by default (the research and memory stages of later issues use them)."""
    return ResilienceConfig(
        breakers={
            "research.dexter": BreakerConfig(slow_call_duration_threshold_s=60.0),
            "research.llm": BreakerConfig(slow_call_duration_threshold_s=30.0),
            "memory": BreakerConfig(slow_call_duration_threshold_s=2.0),
        },
        rate_limits={"research.dexter": RateLimitConfig(limit=60, period_s=60.0)},
        bulkheads={
            "research.dexter": BulkheadConfig(max_concurrent=4),
            "research.llm": BulkheadConfig(max_concurrent=4),
        },
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
    storage: StorageConfig = Field(default_factory=StorageConfig)

    # --- market data
    provider: Literal[
        "sample", "csv", "polygon", "alpaca", "financialdatasets", "ibbridge", "yfinance", "chain"
    ] = "sample"  # the live vendors are configured in [marketdata] (docs/marketdata.md)
    marketdata: MarketDataConfig = Field(default_factory=MarketDataConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)  # jax-ingest (docs/ingest.md)
    data_path: Path | None = Field(default=None, description="csv file or folder for the csv provider")
    earnings_path: Path | None = None
    sectors_path: Path | None = None
    # NoDecode: JAX_WATCHLIST=AAPL,MSFT is the natural way to write it; a JSON list still works.
    watchlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="default symbols; empty = all"
    )
    data_sources: dict[str, DataSourceConfig] = Field(
        default_factory=dict, description="named sources `POST /process` may select with dataSource"
    )

    # --- analysis, strategies, risk
    lookback: int = Field(default=1, ge=1, le=10_000)
    detectors: DetectorConfig = Field(default_factory=DetectorConfig)
    strategies_dir: Path | None = None
    strategies: list[str] | None = Field(default=None, description="enabled strategy ids; None = all")
    # allow_inf_nan=False: `--account-size inf` (or nan) would size every trade to infinity.
    account_size: float = Field(default=10_000.0, gt=0, le=1e13, allow_inf_nan=False)
    risk_percent: float = Field(default=3.0, gt=0, le=100, allow_inf_nan=False)
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
    api: ApiConfig = Field(default_factory=ApiConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    research: ResearchConfig = Field(default_factory=ResearchConfig)
    learning: LearningConfig = Field(default_factory=LearningConfig)

    # --- observability
    log_level: str = "WARNING"
    log_json: bool = False
    metrics_enabled: bool = True
    tracing_enabled: bool = False
    otlp_endpoint: str | None = None

    @field_validator("watchlist", mode="before")
    @classmethod
    def _split_watchlist(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list of symbols ({exc.msg})") from None
        return [tok for tok in re.split(r"[\s,]+", text) if tok]

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
            raise ConfigError(
                f"JAX_CONFIG points at {path}, which is not a file", file=str(path), key="JAX_CONFIG"
            )
        return path
    local = Path("jax.toml")
    return local if local.is_file() else None


def load_settings(*, labels: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings with explicit overrides (e.g. from CLI flags) taking precedence over everything.

    Raises ConfigError naming the setting and where it came from (the option, the ``JAX_*`` variable or
    the TOML file), so every front end can report a bad setting in one line. ``labels`` names the
    overrides as the caller's user knows them, e.g. ``{"database_url": "--db"}``.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    named = {k: (labels or {}).get(k, k) for k in given}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise _validation_config_error(exc, named) from None
    except SettingsError as exc:
        # pydantic-settings could not decode a variable (e.g. JAX_ENGINE='{bad json').
        match = re.search(r'field "([^"]+)"', str(exc))
        key = match.group(1) if match else None
        where, file = setting_source((key,) if key else (), named)
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError(f"{where}: cannot parse the value{cause}", file=file, key=key) from None
    except tomllib.TOMLDecodeError as exc:
        path = config_file_path()
        raise ConfigError(f"{path}: not valid TOML: {exc}", file=str(path)) from None


def setting_source(
    loc: Sequence[int | str], given: Mapping[str, str] | None = None
) -> tuple[str, str | None]:
    """Where the setting at ``loc`` came from: (a label for messages, the config file if it is one).

    Follows the precedence: an explicit override (``given`` maps it to its label), else a ``JAX_*``
    variable, else the TOML file.
    """
    parts = [str(p) for p in loc]
    dotted = ".".join(parts) or "settings"
    if parts and parts[0] in (given or {}):
        return (given or {})[parts[0]], None
    env = {k.upper(): k for k in os.environ}
    for depth in range(len(parts), 0, -1):
        name = "JAX_" + "__".join(parts[:depth]).upper()
        candidates = [name] + (["DATABASE_URL"] if parts[0] == "database_url" and depth == 1 else [])
        for candidate in candidates:
            if candidate in env:
                return f"{dotted} (environment variable {env[candidate]})", None
    path = config_file_path()
    if path is not None:
        return f"{path}: {dotted}", str(path)
    return dotted, None


def _validation_config_error(exc: ValidationError, given: Mapping[str, str]) -> ConfigError:
    errors = exc.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    where, file = setting_source(loc, given)
    value = first.get("input")
    shown = "" if isinstance(value, dict | list) or first["type"] == "missing" else f" (got {value!r:.60})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown setting (see docs/configuration.md)"
        shown = ""
    return ConfigError(f"{where}: {message}{shown}{more}", file=file, key=".".join(map(str, loc)))
