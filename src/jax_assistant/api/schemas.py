"""Request bodies of the HTTP API.

``POST /process`` is the new product's own endpoint: camelCase, strict (an unknown field is a 422, so a
typo such as ``lookBack`` never silently runs with defaults). ``POST /orchestrate`` keeps the snake_case
contract of the old Go service, whose JSON decoder ignored unknown fields; existing callers may send
more than we read, so that model ignores extras instead of rejecting them.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from jax_assistant.domain import Run, SymbolResult, TradeRecord

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# "Not blank", checked by Python's re in the validators and published as the schema's pattern, so the
# OpenAPI says exactly what is accepted (a schema-valid symbol is never refused as blank).
_NON_BLANK = re.compile(r"\S")

# Bounds keep one request from asking for unbounded work; the sample market has 20 symbols and a real
# universe (S&P 500) about 500, so 5 000 leaves room without allowing a multi-megabyte symbol list.
MAX_SYMBOLS = 5_000
MAX_SYMBOL_LENGTH = 32

SymbolName = Annotated[
    str, Field(min_length=1, max_length=MAX_SYMBOL_LENGTH, json_schema_extra={"pattern": _NON_BLANK.pattern})
]


def _not_blank(value: str, what: str) -> str:
    if not _NON_BLANK.search(value):
        raise ValueError(f"{what} must not be blank")
    return value


class ProcessRequest(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    symbols: list[SymbolName] = Field(
        default_factory=list,
        max_length=MAX_SYMBOLS,
        description="symbols to scan; empty or absent = the configured watchlist (else every symbol)",
    )
    as_of: date | None = Field(default=None, description="replay date YYYY-MM-DD (default: latest session)")
    lookback: int | None = Field(default=None, ge=1, le=10_000, description="sessions to scan for events")
    stage_overrides: dict[str, dict[str, Any]] | None = Field(
        default=None, description="per-stage partial policy for this run, e.g. {persist: {timeout_s: 5}}"
    )
    # The same inputs as `jax run --account-size/--risk-percent` (None = the configured value).
    account_size: float | None = Field(default=None, gt=0, le=1e13, allow_inf_nan=False)
    risk_percent: float | None = Field(default=None, gt=0, le=100, allow_inf_nan=False)
    data_source: str | None = Field(
        default=None,
        max_length=64,
        description="name of a configured data source (settings data_sources); never a server path",
    )

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        for sym in value:
            _not_blank(sym, "symbols")
        return value

    @field_validator("as_of", mode="before")
    @classmethod
    def _as_of_format(cls, value: object) -> object:
        # Pydantic would also take a unix timestamp or a full datetime string; the contract says
        # YYYY-MM-DD, and accepting more only hides client bugs (a timestamp in ms is a valid "date").
        if value is None or isinstance(value, date):
            return value
        if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
            raise ValueError("must be a date in the form YYYY-MM-DD, e.g. 2025-06-27")
        return value


class OrchestrateRequest(BaseModel):
    """The old ``POST /orchestrate`` body: run one symbol, triggered by a signal, a schedule or a person."""

    model_config = ConfigDict(extra="ignore")

    signal_id: str | None = Field(default=None, max_length=256)
    symbol: SymbolName
    # The old service defaulted a missing trigger to a manual run; callers rely on it.
    trigger_type: Literal["manual", "signal", "scheduled"] = "manual"
    # Old callers send either free text or an object; both are kept (audited, redacted) as given.
    context: str | dict[str, Any] | None = None

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str) -> str:
        return _not_blank(value, "symbol")


class V1OrchestrateRequest(BaseModel):
    """The front end's ``POST /api/v1/orchestrate`` body (camelCase; extra fields ignored, as before)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    bank: str = Field(default="trade_decisions", max_length=128)
    symbol: SymbolName
    strategy: str | None = Field(default=None, max_length=128)
    constraints: dict[str, Any] = Field(default_factory=dict)
    user_context: str | dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list, max_length=50)
    research_queries: list[str] | None = Field(default=None, max_length=20)

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str) -> str:
        return _not_blank(value, "symbol")


class SymbolProcessRequest(BaseModel):
    """Old V1 ``POST /symbols/{symbol}/process`` body: every field optional."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    account_size: float | None = Field(default=None, gt=0, le=1e13, allow_inf_nan=False)
    risk_percent: float | None = Field(default=None, gt=0, le=100, allow_inf_nan=False)
    gap_threshold_pct: float | None = Field(default=None, gt=0, le=100, allow_inf_nan=False)


class RiskCalcRequest(BaseModel):
    """Old V1 ``POST /risk/calc`` body. The ranges are in the schema; risk.sizing checks them again
    (and entry != stop, which no schema can say)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", allow_inf_nan=False
    )

    account_size: float = Field(default=10_000.0, gt=0)
    risk_percent: float = Field(default=3.0, gt=0, le=100)
    entry: float = Field(gt=0)
    stop: float = Field(gt=0)
    target: float | None = Field(default=None, gt=0)


# --------------------------------------------------------------------------- responses


class _Out(BaseModel):
    """Response bodies: snake_case in Python, camelCase on the wire (FastAPI serialises by alias)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ErrorOut(_Out):
    error: str = Field(description="one line saying what is wrong")
    field: str | None = None
    details: list[dict[str, Any]] | None = None


class HealthOut(_Out):
    status: Literal["healthy", "degraded"]
    service: str
    version: str
    uptime: float
    reason: str | None = Field(default=None, description="why degraded (absent when healthy)")


class CheckOut(_Out):
    ok: bool
    detail: str


class ReadyOut(_Out):
    status: Literal["ready", "not_ready"]
    checks: dict[str, CheckOut]


class StatusOut(_Out):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    service: str
    version: str
    uptime: float
    pipeline: list[str]
    engine: dict[str, Any]
    runs: dict[str, Any]
    active_runs: dict[str, Any]
    queue_depth: int
    in_flight: int
    resilience: dict[str, Any]
    admission: dict[str, Any] | None = None
    memory_outbox: dict[str, Any] | None = None
    research: dict[str, Any] | None = None
    learning: dict[str, Any] | None = None


class AcceptedOut(_Out):
    run_id: str
    status: Literal["running"]
    correlation_id: str


class RunOut(Run):
    """A run as stored, plus ``error`` (why it failed; null otherwise)."""

    error: str | None = None


class RunDetailOut(_Out):
    run: RunOut
    symbols: list[SymbolResult]


class CancelOut(_Out):
    run_id: str
    status: Literal["cancelling"]


class DeadLetterOut(_Out):
    id: int
    run_id: str
    symbol: str
    stage: str
    error: str
    attempts: int
    status: Literal["open", "retried", "resolved"]
    created_at: datetime
    retried_by_run_id: str | None


class OrchestrateOut(BaseModel):
    """The old service's snake_case answer."""

    run_id: str
    status: Literal["running"]


class V1RunSummaryOut(_Out):
    run_id: str
    symbol: str
    timestamp: str
    success: bool


class V1PlanOut(_Out):
    summary: str
    steps: list[str]
    action: str
    confidence: float
    reasoning_notes: str


class V1ToolOut(_Out):
    name: str
    success: bool


class V1RunOut(_Out):
    plan: V1PlanOut
    tools: list[V1ToolOut]
    run_id: str
    duration: float = Field(description="seconds from start to finish (so far, while running)")
    status: Literal["running", "completed", "failed"]


class V1TradeOut(_Out):
    setup: dict[str, Any]
    risk: dict[str, Any]


class V1ProcessOut(_Out):
    events: list[dict[str, Any]]
    trades: list[V1TradeOut]


class RiskCalcOut(_Out):
    position_size: int
    risk_per_unit: float
    total_risk: float
    r_multiple: float


class TradeOutcomeOut(_Out):
    """A setup's settled outcome (``learning/outcomes.py``): absent until later bars settle it."""

    status: Literal["target", "stop", "expired", "unfilled", "open"]
    fill_on: date | None = None
    fill_price: float | None = None
    exit_on: date | None = None
    exit_price: float | None = None
    r_multiple: float
    mfe_r: float
    mae_r: float
    sessions_held: int
    days_held: int
    pnl: float | None = None
    rule: str


class TradeOut(TradeRecord):
    """A TradeRecord as the API serves it: plus ``outcome`` once the setup is settled."""

    # Absent (not null) until settled: old callers see the TradeRecord shape they know.
    outcome: TradeOutcomeOut | None = Field(default=None, exclude_if=lambda v: v is None)
