"""jax-ingest wire models: the observation batch, its normalisation rules and each item's outcome.

A batch is ``{generated_at, observations: [...]}``. The batch envelope must be valid (else the whole
request is refused, naming the field); each observation is then validated on its own, so one malformed
item is rejected with its reasons while the others are accepted.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jax_assistant.domain import Event

# The alias table, verbatim: producer spellings -> the one type we store.
TYPE_ALIASES: dict[str, str] = {
    "earnings_detected": "earnings",
    "earnings_event": "earnings",
    "news": "news_headline",
    "headline": "news_headline",
    "volume_spike": "unusual_volume",
    "volume": "unusual_volume",
    "gap": "price_gap",
    "gap_up": "price_gap",
    "gap_down": "price_gap",
}
# Price/volume signals go to the `signals` bank; everything else (earnings, news, ...) to `market_events`.
SIGNAL_TYPES = frozenset({"unusual_volume", "price_gap"})
NEEDS_SYMBOL = frozenset({"earnings", "unusual_volume", "price_gap"})
MAX_OBSERVATIONS = 1000
MAX_DATA_BYTES = 64 * 1024
_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TICKER_RE = re.compile(r"^[A-Z0-9][A-Z0-9.\-^=_/]{0,19}$")

ItemStatus = Literal["accepted", "duplicate", "rejected", "failed"]
# What became of a significant observation's processing: a run started with it as an event, deferred
# (the service's admission cap is full: re-send the batch after Retry-After), or skipped (why: the
# batch's ``processing.skipped``).
ProcessingStatus = Literal["started", "deferred", "skipped"]


def normalise_type(value: str) -> str:
    key = value.strip().lower().replace("-", "_").replace(" ", "_")
    return TYPE_ALIASES.get(key, key)


def bank_for(obs_type: str) -> str:
    return "signals" if obs_type in SIGNAL_TYPES else "market_events"


class IngestConfig(BaseModel):
    """``[ingest]``: when an observation is significant, and whether significant ones start a run."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(default=0.7, ge=0, le=1, description="|impact_estimate| or confidence at/above")
    process: bool = Field(default=True, description="start a run of the significant symbols (POST /ingest)")


class Observation(BaseModel):
    """One pushed observation, normalised: canonical type, upper-case symbol, UTC timestamp."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    type: str = Field(min_length=1, max_length=64)
    timestamp: datetime
    symbol: str | None = Field(default=None, max_length=20)
    price: float | None = Field(default=None, gt=0)
    volume: float | None = Field(default=None, ge=0)
    impact_estimate: float | None = Field(default=None, ge=-1, le=1)
    confidence: float | None = Field(default=None, ge=0, le=1)
    bookmarked: bool = False
    headline: str | None = Field(default=None, max_length=1000)
    data: dict[str, Any] | None = None

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        canonical = normalise_type(value)
        if not _TYPE_RE.match(canonical):
            raise ValueError("must be a word of letters, digits and underscores (e.g. news_headline)")
        return canonical

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str | None) -> str | None:
        if value is None:
            return None
        sym = value.strip().upper()
        if not sym:
            return None
        if not _TICKER_RE.match(sym):
            raise ValueError("not a ticker (letters, digits and . - ^ = _ /, at most 20)")
        return sym

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @field_validator("headline")
    @classmethod
    def _headline(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("data")
    @classmethod
    def _data(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value, default=str)) > MAX_DATA_BYTES:
            raise ValueError(f"larger than {MAX_DATA_BYTES} bytes as JSON")
        return value

    @model_validator(mode="after")
    def _needs_symbol(self) -> Observation:
        if self.symbol is None and self.type in NEEDS_SYMBOL:
            raise ValueError(f"symbol: required for type {self.type}")
        return self

    def is_significant(self, threshold: float) -> bool:
        """|impact| or confidence at or above ``threshold``, or bookmarked."""
        impact = abs(self.impact_estimate) if self.impact_estimate is not None else 0.0
        confidence = self.confidence or 0.0
        return self.bookmarked or impact >= threshold or confidence >= threshold

    def idempotency_key(self) -> str:
        """SHA-256 of the normalised content: the same observation re-sent (in any batch) has the same key."""
        body = self.model_dump(mode="json")
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def to_event(self, key: str) -> Event:
        """The observation as a pushed event of its symbol (detect_events merges it with detected ones):
        the id is derived from the content key, so a re-send is the same event."""
        assert self.symbol is not None
        payload: dict[str, Any] = {"source": "ingest", "key": key}
        for name, value in (
            ("price", self.price),
            ("volume", self.volume),
            ("impactEstimate", self.impact_estimate),
            ("confidence", self.confidence),
            ("headline", self.headline),
            ("bookmarked", self.bookmarked or None),
        ):
            if value is not None:
                payload[name] = value
        return Event(
            id=f"ingest-{key[:24]}", symbol=self.symbol, type=self.type, time=self.timestamp, payload=payload
        )

    def summary(self) -> str:
        what = self.headline or self.type.replace("_", " ")
        return f"{self.symbol}: {what}" if self.symbol else what


class ObservationBatch(BaseModel):
    """The envelope. ``observations`` items stay raw here: each is validated on its own."""

    model_config = ConfigDict(extra="ignore")

    generated_at: datetime
    observations: list[Any] = Field(min_length=1, max_length=MAX_OBSERVATIONS)


class ItemError(BaseModel):
    field: str
    rule: str
    message: str


class ItemOutcome(BaseModel):
    index: int
    status: ItemStatus
    key: str | None = None
    type: str | None = None
    symbol: str | None = None
    significant: bool = False
    bank: str | None = None
    memory_id: str | None = None
    processing: ProcessingStatus | None = Field(
        default=None, description="significant observations with a symbol: what processing did with it"
    )
    errors: list[ItemError] = Field(default_factory=list)


class Processing(BaseModel):
    """What the batch triggered: a run of its significant symbols, or why not."""

    symbols: list[str]
    status: ProcessingStatus = "started"
    run_id: str | None = None
    events: int = Field(default=0, description="pushed events the run carries")
    retry_after_s: int | None = Field(default=None, description="deferred: re-send the batch after this")
    skipped: str | None = None


class IngestResult(BaseModel):
    correlation_id: str
    received: int
    accepted: int
    duplicates: int
    rejected: int
    failed: int
    items: list[ItemOutcome]
    processing: Processing | None = None


def item_errors(exc: ValidationError) -> list[ItemError]:
    """Pydantic's errors as (field, rule, message), the field dotted and the rule pydantic's type."""
    out = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        message = str(e["msg"]).removeprefix("Value error, ")
        if not loc and message.startswith("symbol: "):  # the cross-field rule names its field itself
            loc, message = "symbol", message.removeprefix("symbol: ")
        out.append(ItemError(field=loc or "observation", rule=e["type"], message=message))
    return out


def raw_key(raw: object) -> str:
    """A stable key for a rejected item (audit idempotency), whatever shape it has."""
    try:
        text = json.dumps(raw, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(raw)
    return hashlib.sha256(text.encode()).hexdigest()
