"""The Jax memory shapes (``reference/jax-contracts.md``, Memory section) and their validation.

The models are deliberately lenient on construction (a missing ``ts`` or ``source`` still parses) so that
:func:`validate_item` can apply the contract's rules in the contract's ORDER and with its exact MESSAGES:
a caller always gets the first rule the item breaks, the same line the old jax-memory service printed.
Tags are trimmed and lowercased before any rule runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from jax_assistant.domain.errors import InputError
from jax_assistant.observability.redaction import redact

MAX_TAGS: Final = 10
MAX_SUMMARY: Final = 500
BELIEF_TYPE: Final = "belief"
REFLECTION_SYSTEM: Final = "jax-reflection"
_BANK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class Bank(StrEnum):
    """The banks the product uses. Other well-formed names are accepted (a bank is made on first retain)."""

    TRADE_DECISIONS = "trade_decisions"
    TRADE_OUTCOMES = "trade_outcomes"
    STRATEGY_BELIEFS = "strategy_beliefs"
    MARKET_EVENTS = "market_events"
    SIGNALS = "signals"


DEFAULT_BANK: Final = Bank.TRADE_DECISIONS.value
BANKS: Final = tuple(b.value for b in Bank)


class MemoryValidationError(InputError):
    """A memory item, query, params or bank breaks a contract rule; ``str()`` is the contract's message."""


class MemoryNotFoundError(InputError):
    """No memory with that id in that bank."""

    def __init__(self, bank: str, memory_id: str) -> None:
        super().__init__(f"memory {memory_id!r} not found in bank {bank!r}", field="id", rule="exists")
        self.bank = bank
        self.memory_id = memory_id


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _upper_symbol(value: object) -> object:
    # Symbols are matched case-insensitively; stored upper-case as everywhere else in the project.
    if isinstance(value, str):
        return value.strip().upper() or None
    return value


# An item's and a query's symbol: trimmed, upper-case, blank = none.
Symbol = Annotated[str | None, BeforeValidator(_upper_symbol)]


def _normalise_tags(value: object) -> object:
    if isinstance(value, list | tuple):
        return [t.strip().lower() if isinstance(t, str) else t for t in value]
    return value


class MemorySource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: str | None = None
    ref: str | None = None


class MemoryScores(BaseModel):
    """Provenance of a recall hit: the fused score and what each arm contributed (None = arm not run)."""

    model_config = ConfigDict(extra="forbid")

    final: float
    keyword: float | None = None
    semantic: float | None = None
    recency: float | None = None


class MemoryItem(BaseModel):
    """A memory. On retain ``id`` is optional (the store assigns one); ``score``/``scores`` come from recall.

    ``document_id`` (Hindsight's) makes retain idempotent: the same id in the same bank is the same memory,
    updated in place.
    """

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    ts: datetime | None = None
    type: str = ""
    symbol: Symbol = None
    tags: list[str] = Field(default_factory=list)
    summary: str = ""
    data: dict[str, Any] | None = None
    source: MemorySource | None = None
    document_id: str | None = None
    score: float | None = None
    scores: MemoryScores | None = None

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: object) -> object:
        return _normalise_tags(value)

    @field_validator("ts", mode="after")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return _aware(value)


class TimeWindow(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    from_: datetime = Field(alias="from")
    to: datetime


class BeliefData(BaseModel):
    """``data`` of a belief: the contract's fields plus whatever the belief type adds (extra allowed)."""

    model_config = ConfigDict(extra="allow")

    belief_type: str
    time_window: TimeWindow
    evidence_ids: list[str]
    confidence: float = Field(ge=0.0, le=1.0)


class MemoryQuery(BaseModel):
    """Recall filters. ``tags`` match strictly: every query tag must be on the item (untagged never match)."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    q: str | None = None
    symbol: Symbol = None
    types: list[str] | None = None
    from_: datetime | None = Field(default=None, alias="from")
    to: datetime | None = None
    tags: list[str] = Field(default_factory=list)
    limit: int = Field(default=10, ge=1, le=1000)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: object) -> object:
        return _normalise_tags(value)

    @field_validator("from_", "to", mode="after")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return _aware(value)


class ReflectionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str | None = None
    window_days: int = Field(default=30, ge=1, le=3650)
    prompt_hint: str | None = None


# --------------------------------------------------------------------------- validation


def validate_item(item: MemoryItem) -> MemoryItem:
    """``item`` checked against the contract's rules in order; returns it with its data redacted.

    Raises :class:`MemoryValidationError` with the contract's message for the first rule broken.
    """
    if item.ts is None:
        raise MemoryValidationError("memory item timestamp required", field="ts", rule="required")
    if not item.type.strip():
        raise MemoryValidationError("memory item type required", field="type", rule="required")
    if not 1 <= len(item.summary) <= MAX_SUMMARY:
        raise MemoryValidationError(
            "memory item summary length invalid", field="summary", rule=f"length 1..{MAX_SUMMARY}"
        )
    if item.data is None:
        raise MemoryValidationError("memory item data required", field="data", rule="required")
    if item.source is None or not (item.source.system or "").strip():
        raise MemoryValidationError("memory item source required", field="source.system", rule="required")
    if len(item.tags) > MAX_TAGS:
        raise MemoryValidationError("memory item has too many tags", field="tags", rule=f"at most {MAX_TAGS}")
    if any(not tag or tag != tag.lower() for tag in item.tags):
        raise MemoryValidationError(
            "memory item tags must be lowercase and non-empty", field="tags", rule="lowercase, non-empty"
        )
    # Redaction before anything is stored: the backend only ever sees the redacted data.
    return item.model_copy(update={"type": item.type.strip(), "data": redact(item.data)})


def validate_bank(bank: str | None) -> str:
    if bank is None or not bank.strip():
        raise MemoryValidationError("bank is required", field="bank", rule="required")
    name = bank.strip()
    if not _BANK_NAME.match(name):
        raise MemoryValidationError(
            f"bank name {name!r} invalid (lowercase letters, digits and _, starting with a letter)",
            field="bank",
            rule="pattern ^[a-z][a-z0-9_]{0,63}$",
        )
    return name


def validate_params(params: ReflectionParams) -> ReflectionParams:
    if params.query is None or not params.query.strip():
        raise MemoryValidationError("params.query is required", field="params.query", rule="required")
    return params


def validate_query(query: MemoryQuery) -> MemoryQuery:
    if query.from_ is not None and query.to is not None and query.from_ > query.to:
        raise MemoryValidationError("query from must not be after to", field="from", rule="from <= to")
    return query


def _first_error(exc: ValidationError, prefix: str) -> MemoryValidationError:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    field = f"{prefix}.{loc}" if loc else prefix
    return MemoryValidationError(f"{field}: {first['msg']}", field=field, rule=str(first["type"]))


def parse_item(raw: MemoryItem | Mapping[str, Any]) -> MemoryItem:
    """A wire item (a dict from JSON) as a validated, redacted :class:`MemoryItem`."""
    if isinstance(raw, MemoryItem):
        return validate_item(raw)
    if not isinstance(raw, Mapping):
        raise MemoryValidationError("item must be an object", field="item", rule="type object")
    try:
        item = MemoryItem.model_validate(dict(raw))
    except ValidationError as exc:
        raise _first_error(exc, "item") from None
    return validate_item(item)


def parse_query(raw: MemoryQuery | Mapping[str, Any] | None) -> MemoryQuery:
    if raw is None:
        return MemoryQuery()
    if isinstance(raw, MemoryQuery):
        return validate_query(raw)
    if not isinstance(raw, Mapping):
        raise MemoryValidationError("query must be an object", field="query", rule="type object")
    try:
        return validate_query(MemoryQuery.model_validate(dict(raw)))
    except ValidationError as exc:
        raise _first_error(exc, "query") from None


def parse_params(raw: ReflectionParams | Mapping[str, Any] | None) -> ReflectionParams:
    if raw is None:
        raise MemoryValidationError("params.query is required", field="params.query", rule="required")
    if isinstance(raw, ReflectionParams):
        return validate_params(raw)
    if not isinstance(raw, Mapping):
        raise MemoryValidationError("params must be an object", field="params", rule="type object")
    try:
        return validate_params(ReflectionParams.model_validate(dict(raw)))
    except ValidationError as exc:
        raise _first_error(exc, "params") from None


def make_belief(
    *,
    belief_type: str,
    summary: str,
    window: tuple[datetime, datetime],
    evidence_ids: list[str],
    confidence: float,
    ts: datetime,
    symbol: str | None = None,
    tags: list[str] | None = None,
    ref: str | None = None,
    **extra: Any,
) -> MemoryItem:
    """A belief in the contract's shape (type ``belief``, source.system ``jax-reflection``)."""
    data = BeliefData.model_validate(
        {
            "belief_type": belief_type,
            "time_window": {"from": window[0], "to": window[1]},
            "evidence_ids": evidence_ids,
            "confidence": confidence,
            **extra,
        }
    )
    return MemoryItem(
        ts=ts,
        type=BELIEF_TYPE,
        symbol=symbol,
        tags=["belief", f"belief:{belief_type}", *(tags or [])][:MAX_TAGS],
        summary=summary[:MAX_SUMMARY],
        data=data.model_dump(mode="json", by_alias=True),
        source=MemorySource(system=REFLECTION_SYSTEM, ref=ref),
    )
