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
)
