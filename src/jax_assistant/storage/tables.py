"""Table definitions (SQLAlchemy 2 declarative).

Only portable types are used (JSON rather than JSONB, plain String/Text) so the same schema serves
SQLite and PostgreSQL. Rows hold JSON-native data; converting to and from the domain models is the
repository's job, so nothing here imports the domain package.

``migrations/versions`` must describe the same schema: a test compares the two after upgrading.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names keep future migrations (and SQLite batch rebuilds) stable.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DEAD_LETTER_STATUSES = ("open", "retried", "resolved")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp that always comes back as an aware UTC ``datetime``.

    PostgreSQL stores ``timestamptz`` natively; SQLite has no timezone support and would silently
    drop the offset, so values are normalised to UTC before binding and tagged UTC when read.
    Naive inputs are taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        # SQLite's DATETIME renders the wall-clock time only, so hand it naive UTC explicitly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        date: Date(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
        str: String(),
    }


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    correlation_id: Mapped[str] = mapped_column(index=True)
    started_at: Mapped[datetime] = mapped_column(index=True)
    finished_at: Mapped[datetime | None]
    as_of: Mapped[date | None]
    provider: Mapped[str]
    simulated: Mapped[bool] = mapped_column(Boolean)
    symbols: Mapped[list[Any]]
    pipeline: Mapped[list[Any]]
    params: Mapped[dict[str, Any]]
    counts: Mapped[dict[str, Any]]
    # The lease of the process executing the run: a `running` run whose lease expired is interrupted
    # and may be resumed by whoever takes the lease next (an atomic compare-and-set on these columns).
    lease_owner: Mapped[str | None]
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]


class SymbolResultRow(Base):
    """One row per (run, symbol); events and trades are referenced by id, stored once elsewhere."""

    __tablename__ = "symbol_results"

    # The composite primary key is the (run_id, symbol) uniqueness the upsert targets.
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    symbol: Mapped[str] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    data_issues: Mapped[list[Any]]
    stages: Mapped[list[Any]]
    event_ids: Mapped[list[Any]]
    trade_ids: Mapped[list[Any]]
    extras: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'"))
    updated_at: Mapped[datetime]


class StageCheckpointRow(Base):
    """The WorkItem as it stood after one stage, so a resumed run can skip completed stages."""

    __tablename__ = "stage_checkpoints"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    symbol: Mapped[str] = mapped_column(primary_key=True)
    stage: Mapped[str] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    result: Mapped[dict[str, Any]]
    item: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (Index(None, "symbol", "time"),)

    id: Mapped[str] = mapped_column(primary_key=True)
    symbol: Mapped[str]
    type: Mapped[str]
    time: Mapped[datetime]
    payload: Mapped[dict[str, Any]]
    # Provenance only (no foreign key): events are shared across runs and may outlive them.
    first_run_id: Mapped[str | None]
    simulated: Mapped[bool] = mapped_column(Boolean)


class TradeRow(Base):
    __tablename__ = "trades"
    __table_args__ = (
        Index(None, "symbol", "strategy_id"),
        Index(None, "strategy_id"),
        Index(None, "created_at"),
    )

    id: Mapped[str] = mapped_column(primary_key=True)  # the setup id
    symbol: Mapped[str]
    strategy_id: Mapped[str]
    direction: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str | None]
    allowed: Mapped[bool] = mapped_column(Boolean)
    position_size: Mapped[int] = mapped_column(Integer)
    setup: Mapped[dict[str, Any]]
    risk: Mapped[dict[str, Any]]
    event: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    first_run_id: Mapped[str | None]
    simulated: Mapped[bool] = mapped_column(Boolean)


class DecisionRow(Base):
    """The risk decision one run made for one setup: sizes depend on the run's account and book.

    Setups (trades) and events are stored once by id; the decision is per (run, setup), so a rerun at
    another account size shows its own sizes. ``risk`` is the whole RiskResult JSON (no wall clock in
    it, so the same inputs store the same bytes); ``decided_at`` is kept apart for that reason.
    """

    __tablename__ = "decisions"
    __table_args__ = (Index(None, "symbol"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    setup_id: Mapped[str] = mapped_column(primary_key=True)
    symbol: Mapped[str]
    strategy_id: Mapped[str]
    allowed: Mapped[bool] = mapped_column(Boolean)
    position_size: Mapped[int] = mapped_column(Integer)
    account_size: Mapped[float] = mapped_column(Float)
    risk_percent: Mapped[float] = mapped_column(Float)
    risk: Mapped[dict[str, Any]]
    decided_at: Mapped[datetime]


class TradeOutcomeRow(Base):
    """How one stored setup played out once later bars existed (``learning.outcomes``).

    Keyed by setup id: the price path does not depend on which run sized it. ``position_size`` and
    ``pnl`` are the first run's sizing (the trades row), which is what the protections' equity reads.
    Only settled outcomes are stored; a trade still running is recomputed on each settle.
    """

    __tablename__ = "trade_outcomes"
    __table_args__ = (Index(None, "strategy_id"), Index(None, "symbol"), Index(None, "exit_on"))

    setup_id: Mapped[str] = mapped_column(primary_key=True)
    symbol: Mapped[str]
    strategy_id: Mapped[str]
    event_type: Mapped[str | None]
    direction: Mapped[str] = mapped_column(String(16))
    decided_on: Mapped[date]
    status: Mapped[str] = mapped_column(String(16))
    fill_on: Mapped[date | None]
    fill_price: Mapped[float | None] = mapped_column(Float)
    exit_on: Mapped[date | None]
    exit_price: Mapped[float | None] = mapped_column(Float)
    r_multiple: Mapped[float] = mapped_column(Float)
    mfe_r: Mapped[float] = mapped_column(Float)
    mae_r: Mapped[float] = mapped_column(Float)
    sessions_held: Mapped[int] = mapped_column(Integer)
    days_held: Mapped[int] = mapped_column(Integer)
    settled_through: Mapped[date]
    rule: Mapped[str]
    allowed: Mapped[bool] = mapped_column(Boolean)
    position_size: Mapped[int] = mapped_column(Integer)
    pnl: Mapped[float] = mapped_column(Float)
    settled_at: Mapped[datetime]


class AuditEventRow(Base):
    __tablename__ = "audit_events"

    id: Mapped[str] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(unique=True)
    correlation_id: Mapped[str] = mapped_column(index=True)
    # No foreign key: audit records can precede the run row or concern no run at all.
    run_id: Mapped[str | None] = mapped_column(index=True)
    symbol: Mapped[str | None]
    action: Mapped[str]
    outcome: Mapped[str] = mapped_column(String(32))
    timestamp: Mapped[datetime]
    payload: Mapped[dict[str, Any]]
    error: Mapped[str | None] = mapped_column(Text)


class DeadLetterRow(Base):
    __tablename__ = "dead_letters"
    __table_args__ = (
        UniqueConstraint("run_id", "symbol"),
        CheckConstraint("status IN ('open', 'retried', 'resolved')", name="status"),
        Index(None, "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    symbol: Mapped[str]
    stage: Mapped[str]
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    input: Mapped[dict[str, Any]]  # the WorkItem that failed, as JSON
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime]
    retried_by_run_id: Mapped[str | None]


class ApiKeyRow(Base):
    """An API key of the HTTP services: only its SHA-256 is stored (see ``service/auth.py``)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(primary_key=True)  # the public part of the key, shown by `keys list`
    name: Mapped[str]
    scopes: Mapped[list[Any]]
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class BarSeriesRow(Base):
    """One cached vendor series (marketdata/cache.py): its price basis and how far it was fetched."""

    __tablename__ = "bar_series"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    adjustment: Mapped[str] = mapped_column(String(16))
    fetched_through: Mapped[date]
    updated_at: Mapped[datetime]


class CachedBarRow(Base):
    """One cached daily bar of a vendor series (same source and symbol as its ``bar_series`` row)."""

    __tablename__ = "cached_bars"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[date] = mapped_column(primary_key=True)  # the session
    open: Mapped[float] = mapped_column(Float)
    high: Mapped[float] = mapped_column(Float)
    low: Mapped[float] = mapped_column(Float)
    close: Mapped[float] = mapped_column(Float)
    volume: Mapped[float] = mapped_column(Float)


class IngestedObservationRow(Base):
    """One observation accepted by jax-ingest, keyed by the hash of its normalised content (idempotency)."""

    __tablename__ = "ingested_observations"
    __table_args__ = (Index(None, "symbol", "timestamp"),)

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str | None] = mapped_column(String(32))
    timestamp: Mapped[datetime]
    significant: Mapped[bool] = mapped_column(Boolean)
    correlation_id: Mapped[str]
    observation: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]


class MemoryBankRow(Base):
    """A memory bank and the embedding model its vectors were made with (None until one is used).

    Recording the model per bank is what keeps a bank from mixing vector spaces (docs/memory.md).
    """

    __tablename__ = "memory_banks"

    name: Mapped[str] = mapped_column(primary_key=True)
    embedding_model: Mapped[str | None]
    embedding_dim: Mapped[int | None] = mapped_column(Integer)
    # Bumped by every write that adds, removes, invalidates or restores memories: vector indexes follow it.
    revision: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime]


class MemoryRow(Base):
    """One memory of the embedded backend (``memory/embedded.py``).

    ``seq`` is the integer row key the full-text index is keyed on (SQLite FTS5 ``rowid``); a re-retain that
    changes a document gets a new row and ``seq`` under the same ``id``. ``body`` is the text the full-text
    arm searches; ``embedding`` the float32 vector (semantic extra). Full-text structures made by raw DDL
    in migration 0005 (FTS5 table and triggers on SQLite, a generated tsvector column and GIN index on
    PostgreSQL) are listed in ``UNMODELLED_NAMES``.
    """

    __tablename__ = "memories"
    __table_args__ = (
        UniqueConstraint("bank", "id"),
        UniqueConstraint("bank", "document_id"),
        Index(None, "bank", "content_hash"),
        Index(None, "bank", "ts"),
        Index(None, "bank", "symbol", "ts"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str]
    bank: Mapped[str] = mapped_column(ForeignKey("memory_banks.name"))
    type: Mapped[str]
    symbol: Mapped[str | None]
    ts: Mapped[datetime]
    tags: Mapped[list[Any]]
    summary: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]]
    source_system: Mapped[str]
    source_ref: Mapped[str | None]
    document_id: Mapped[str | None]
    content_hash: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    invalidated_at: Mapped[datetime | None]
    invalidation_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class MemoryTagRow(Base):
    """One row per (memory, tag): strict tag matching is a grouped lookup on ``tag``."""

    __tablename__ = "memory_tags"
    __table_args__ = (Index(None, "tag", "seq"),)

    seq: Mapped[int] = mapped_column(ForeignKey("memories.seq", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(primary_key=True)


# Made by raw DDL in migration 0005_memory (dialect-specific full text), so absent from the models above.
UNMODELLED_NAMES = frozenset(
    {
        "memories_fts",
        "memories_fts_data",
        "memories_fts_idx",
        "memories_fts_content",
        "memories_fts_docsize",
        "memories_fts_config",
        "search",
        "ix_memories_search",
    }
)


class MemoryOutboxRow(Base):
    """A retain that failed to reach memory, waiting to be drained in ``seq`` order (memory/outbox.py)."""

    __tablename__ = "memory_outbox"
    __table_args__ = (UniqueConstraint("bank", "document_id"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bank: Mapped[str]
    document_id: Mapped[str]
    item: Mapped[dict[str, Any]]  # the MemoryItem as JSON, already validated and redacted
    correlation_id: Mapped[str | None]
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ResearchCacheRow(Base):
    """A research answer kept for reuse: one row per (symbol, question set, provider).

    ``event_key`` is the newest event of the symbol when the answer was fetched: a lookup made after
    a newer event arrived misses (and the stale rows are dropped), so research never predates news.
    """

    __tablename__ = "research_cache"

    symbol: Mapped[str] = mapped_column(primary_key=True)
    question_key: Mapped[str] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(primary_key=True)
    questions: Mapped[list[Any]]
    event_key: Mapped[str | None]
    bundle: Mapped[dict[str, Any]]
    tokens: Mapped[int] = mapped_column(Integer)
    cost: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class ResearchSpendRow(Base):
    """The spend ledger: one row per paid research call (tokens and cost), for run and day budgets."""

    __tablename__ = "research_spend"
    __table_args__ = (Index(None, "day"), Index(None, "run_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None]
    symbol: Mapped[str]
    provider: Mapped[str]
    day: Mapped[date]
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cost: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime]


ALL_TABLES = (
    RunRow.__tablename__,
    SymbolResultRow.__tablename__,
    StageCheckpointRow.__tablename__,
    EventRow.__tablename__,
    TradeRow.__tablename__,
    DecisionRow.__tablename__,
    TradeOutcomeRow.__tablename__,
    AuditEventRow.__tablename__,
    DeadLetterRow.__tablename__,
    ApiKeyRow.__tablename__,
    BarSeriesRow.__tablename__,
    CachedBarRow.__tablename__,
    IngestedObservationRow.__tablename__,
    MemoryBankRow.__tablename__,
    MemoryRow.__tablename__,
    MemoryTagRow.__tablename__,
    MemoryOutboxRow.__tablename__,
    ResearchCacheRow.__tablename__,
    ResearchSpendRow.__tablename__,
)
