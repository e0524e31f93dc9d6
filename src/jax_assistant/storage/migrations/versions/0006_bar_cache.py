"""Bar cache and ingested observations.

Revision ID: 0006_bar_cache
Revises: 0005_memory
Create Date: 2026-12-02

- ``bar_series`` / ``cached_bars``: vendor history cached per (source, symbol), tagged with its price
  basis (``adjustment``) and how far it was fetched, so repeated runs fetch only the missing tail
  (marketdata/cache.py).
- ``ingested_observations``: observations accepted by jax-ingest, keyed by the hash of their
  normalised content, so a re-sent batch stores nothing twice (ingest/).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_bar_cache"
# Brief: 0003_decisions_leases; chained after memcore's 0005_memory once that branch was merged in, so the
# branch has one head (the lead re-chains at merge).
down_revision: str | Sequence[str] | None = "0005b_memory_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "bar_series",
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("adjustment", sa.String(16), nullable=False),
        sa.Column("fetched_through", sa.Date(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("source", "symbol", name="pk_bar_series"),
    )
    op.create_table(
        "cached_bars",
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("open", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("close", sa.Float(), nullable=False),
        sa.Column("volume", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("source", "symbol", "day", name="pk_cached_bars"),
    )
    op.create_table(
        "ingested_observations",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=True),
        sa.Column("timestamp", TS, nullable=False),
        sa.Column("significant", sa.Boolean(), nullable=False),
        sa.Column("correlation_id", sa.String(), nullable=False),
        sa.Column("observation", sa.JSON(), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_ingested_observations"),
    )
    op.create_index(
        "ix_ingested_observations_symbol_timestamp", "ingested_observations", ["symbol", "timestamp"]
    )


def downgrade() -> None:
    op.drop_index("ix_ingested_observations_symbol_timestamp", table_name="ingested_observations")
    op.drop_table("ingested_observations")
    op.drop_table("cached_bars")
    op.drop_table("bar_series")
