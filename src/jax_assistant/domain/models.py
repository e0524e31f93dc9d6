"""Domain models shared by every layer.

They serialise to the camelCase JSON of the Jax contracts (``../shared/reference/jax-contracts.md``)
with ``model_dump(by_alias=True)``; snake_case is accepted on input too. Models whose contract
shape is snake_case (ResearchBundle, the portfolio-constraint result) say so explicitly.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    """Base for contract models: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        ser_json_inf_nan="null",
    )

    def to_contract(self) -> dict[str, Any]:
        """The contract's JSON shape (camelCase keys, JSON-native values)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=False)


def utc_now() -> datetime:
    return datetime.now(UTC)


def session_time(d: date) -> datetime:
    """The UTC instant used for a daily session (midnight UTC of the trading date)."""
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def unix_seconds(d: date) -> int:
    return int(session_time(d).timestamp())


# --------------------------------------------------------------------------- market data


class Bar(CamelModel):
    """One daily OHLCV bar. Validation enforces the sanity rules bad data is checked against."""

    model_config = ConfigDict(**{**CamelModel.model_config, "allow_inf_nan": False})

    symbol: str = Field(min_length=1)
    date: date
    open: float = Field(gt=0)
    high: float = Field(gt=0)
    low: float = Field(gt=0)
    close: float = Field(gt=0)
    volume: float = Field(ge=0)

    @model_validator(mode="after")
    def _check_ohlc(self) -> Bar:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self


# --------------------------------------------------------------------------- events


class EventType(StrEnum):
    GAP_OPEN = "gap_open"
    VOLUME_SPIKE = "volume_spike"
    VOLATILITY_SPIKE = "volatility_spike"
    EARNINGS_SURPRISE = "earnings_surprise"


class Event(CamelModel):
    """A market event. ``payload`` carries the metrics that triggered it (e.g. gapPct, prevClose, open)."""

    id: str
    symbol: str
    type: str
    time: datetime
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("time")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    @property
    def session(self) -> date:
        return self.time.date()


# --------------------------------------------------------------------------- research


class ResearchBundle(BaseModel):
    """Research output (snake_case in the contract, as Dexter returns it)."""

    model_config = ConfigDict(extra="forbid")

    ticker: str
    summary: str = ""
    key_points: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    raw_markdown: str = ""


class ResearchProvenance(CamelModel):
    """Where a setup's research came from, or why there is none (``status == "unavailable"``).

    Research is never fatal: a setup whose providers all failed (or whose budget was spent) carries
    ``status="unavailable"`` and the reason instead of a bundle.
    """

    status: Literal["ok", "unavailable"]
    provider: str | None = None
    source: Literal["cached", "fresh"] | None = None
    # Only for a fresh answer from a remote provider (Dexter, an LLM), whose answer is not reproducible
    # anyway. Built-in research and cache hits are computed from stored data, so the setup they are
    # stored on must be byte-identical on every rerun: their time is in the stage's duration and metrics.
    latency_ms: float | None = Field(default=None, ge=0)
    tokens: int = Field(default=0, ge=0)
    cost: float = Field(default=0.0, ge=0)
    questions: list[str] = Field(default_factory=list)
    reason: str | None = None
    # One note per provider tried before the one that answered (e.g. "dexter: HTTP 500").
    fallbacks: list[str] = Field(default_factory=list)

    def describe(self) -> str:
        """One line for reports: ``research: builtin (fresh)`` or ``research: unavailable (why)``."""
        if self.status == "unavailable":
            return f"research: unavailable ({self.reason})"
        return f"research: {self.provider} ({self.source})"


# --------------------------------------------------------------------------- trade setups & risk


class Direction(StrEnum):
    LONG = "long"
    SHORT = "short"


class TradeSetup(CamelModel):
    id: str
    symbol: str
    direction: Direction
    entry: float = Field(gt=0)
    stop: float = Field(gt=0)
    targets: list[float] = Field(default_factory=list)
    event_id: str | None = None
    strategy_id: str
    notes: str = ""
    research: ResearchBundle | None = None
    research_provenance: ResearchProvenance | None = None
    confidence: float = Field(default=0.5, ge=0, le=1)
    reason: str = ""
    time: datetime | None = None

    @model_validator(mode="after")
    def _stop_side(self) -> TradeSetup:
        if self.direction is Direction.LONG and self.stop >= self.entry:
            raise ValueError("stop must be below entry for a long setup")
        if self.direction is Direction.SHORT and self.stop <= self.entry:
            raise ValueError("stop must be above entry for a short setup")
        return self


class Violation(BaseModel):
    """A portfolio-constraint violation (snake_case, as risk-constraints.json callers expect)."""

    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    limit: float | None = None
    actual: float | None = None


class Adjustment(BaseModel):
    """A clamp applied to a setup's risk (recorded so every change of size is explainable)."""

    model_config = ConfigDict(extra="forbid")

    field: str
    requested: float
    applied: float
    rule: str


class ConstraintResult(BaseModel):
    """Result of the portfolio constraints (``risk-constraints.json`` shape, snake_case)."""

    model_config = ConfigDict(extra="forbid")

    allowed: bool
    reason: str = ""
    violations: list[Violation] = Field(default_factory=list)
    adjustments: list[Adjustment] = Field(default_factory=list)
    risk_metrics: dict[str, float] = Field(default_factory=dict)


class RiskResult(CamelModel):
    """Sizing per the contract formulas plus the constraint decision for that size."""

    position_size: int = Field(ge=0)
    risk_per_unit: float = Field(ge=0)
    total_risk: float = Field(ge=0)
    r_multiple: float = Field(ge=0)
    risk_percent: float = Field(ge=0, description="risk percent applied to size, after the per-trade cap")
    account_size: float = Field(gt=0)
    constraints: ConstraintResult
    effective_risk_percent: float = Field(
        default=0.0, ge=0, description="total risk of the final position / account size x 100"
    )
    # A candidate passed the per-symbol checks but has no room in the portfolio yet; only the run's
    # allocation step turns it into a decision. Stored results default to "allocated" (they were
    # decided against the book before candidates existed).
    decision: Literal["candidate", "allocated"] = "allocated"
    score: float | None = Field(default=None, description="allocation score (see docs/risk.md)")
    rank: int | None = Field(default=None, ge=1, description="1 = first claim on portfolio room")

    @property
    def allowed(self) -> bool:
        """True only for an allocated decision the constraints allow (never for a mere candidate)."""
        return self.decision == "allocated" and self.constraints.allowed


class TradeRecord(CamelModel):
    setup: TradeSetup
    risk: RiskResult
    event: Event | None = None
    created_at: datetime = Field(default_factory=utc_now)


# --------------------------------------------------------------------------- audit


AuditOutcome = Literal["started", "success", "skipped", "rejected", "error"]


class AuditEvent(CamelModel):
    id: str
    correlation_id: str
    action: str
    outcome: AuditOutcome
    timestamp: datetime = Field(default_factory=utc_now)
    payload: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


# --------------------------------------------------------------------------- runs & stages


class StageStatus(StrEnum):
    OK = "ok"
    SKIPPED = "skipped"
    DEGRADED = "degraded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SHORT_CIRCUITED = "short_circuited"


class SymbolStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEGRADED = "degraded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (SymbolStatus.PENDING, SymbolStatus.RUNNING)


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Never stored: derived when a run is read whose row says `running` but whose lease expired (the
    # process executing it died). Such a run may be resumed.
    INTERRUPTED = "interrupted"


class StageResult(CamelModel):
    stage: str
    status: StageStatus
    started_at: datetime
    duration_ms: float = Field(ge=0)
    attempts: int = Field(default=1, ge=0)
    error: str | None = None
    reason: str | None = None


class SymbolResult(CamelModel):
    """Everything one symbol produced in one run."""

    run_id: str
    symbol: str
    status: SymbolStatus = SymbolStatus.PENDING
    stages: list[StageResult] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    trades: list[TradeRecord] = Field(default_factory=list)
    error: str | None = None
    data_issues: list[str] = Field(default_factory=list)
    extras: dict[str, Any] = Field(default_factory=dict, description="plugin stage outputs by stage name")


class Run(CamelModel):
    id: str
    status: RunStatus = RunStatus.RUNNING
    correlation_id: str
    started_at: datetime = Field(default_factory=utc_now)
    finished_at: datetime | None = None
    as_of: date | None = None
    provider: str
    simulated: bool = Field(description="True when the data is the bundled simulated market, never real")
    symbols: list[str] = Field(default_factory=list)
    pipeline: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict)
