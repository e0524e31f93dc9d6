"""Request bodies of the HTTP API.

``POST /process`` is the new product's own endpoint: camelCase, strict (an unknown field is a 422, so a
typo such as ``lookBack`` never silently runs with defaults). ``POST /orchestrate`` keeps the snake_case
contract of the old Go service, whose JSON decoder ignored unknown fields; existing callers may send
more than we read, so that model ignores extras instead of rejecting them.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# Bounds keep one request from asking for unbounded work; the sample market has 20 symbols and a real
# universe (S&P 500) about 500, so 5 000 leaves room without allowing a multi-megabyte symbol list.
MAX_SYMBOLS = 5_000
MAX_SYMBOL_LENGTH = 32


class ProcessRequest(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    symbols: list[str] = Field(
        default_factory=list,
        max_length=MAX_SYMBOLS,
        description="symbols to scan; empty or absent = the configured watchlist (else every symbol)",
    )
    as_of: date | None = Field(default=None, description="replay date YYYY-MM-DD (default: latest session)")
    lookback: int | None = Field(default=None, ge=1, le=10_000, description="sessions to scan for events")
    stage_overrides: dict[str, dict[str, Any]] | None = Field(
        default=None, description="per-stage partial policy for this run, e.g. {persist: {timeout_s: 5}}"
    )

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        for sym in value:
            if not sym.strip():
                raise ValueError("symbols must not be blank")
            if len(sym) > MAX_SYMBOL_LENGTH:
                raise ValueError(f"symbol {sym[:40]!r}... is longer than {MAX_SYMBOL_LENGTH} characters")
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
    symbol: str = Field(min_length=1, max_length=MAX_SYMBOL_LENGTH)
    trigger_type: Literal["manual", "signal", "scheduled"]
    context: dict[str, Any] | None = None

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("symbol must not be blank")
        return value
