"""Settled trade outcomes.

Revision ID: 0008_outcomes
Revises: 0003_decisions_leases
Create Date: 2026-12-02

- ``trade_outcomes``: one row per settled setup (target / stop / expired / unfilled), written by
  ``learning.outcomes.settle`` (idempotent upsert by setup id). New table only: nothing to backfill,
  since earlier setups are settled by the next settle pass from the bars.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_outcomes"
down_revision: str | Sequence[str] | None = "0007_research"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "trade_outcomes",
        sa.Column("setup_id", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("strategy_id", sa.String(), nullable=False),
        sa.Column("event_type", sa.String(), nullable=True),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("decided_on", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("fill_on", sa.Date(), nullable=True),
        sa.Column("fill_price", sa.Float(), nullable=True),
        sa.Column("exit_on", sa.Date(), nullable=True),
        sa.Column("exit_price", sa.Float(), nullable=True),
        sa.Column("r_multiple", sa.Float(), nullable=False),
        sa.Column("mfe_r", sa.Float(), nullable=False),
        sa.Column("mae_r", sa.Float(), nullable=False),
        sa.Column("sessions_held", sa.Integer(), nullable=False),
        sa.Column("days_held", sa.Integer(), nullable=False),
        sa.Column("settled_through", sa.Date(), nullable=False),
        sa.Column("rule", sa.String(), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("position_size", sa.Integer(), nullable=False),
        sa.Column("pnl", sa.Float(), nullable=False),
        sa.Column("settled_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("setup_id", name="pk_trade_outcomes"),
    )
    op.create_index("ix_trade_outcomes_strategy_id", "trade_outcomes", ["strategy_id"])
    op.create_index("ix_trade_outcomes_symbol", "trade_outcomes", ["symbol"])
    op.create_index("ix_trade_outcomes_exit_on", "trade_outcomes", ["exit_on"])


def downgrade() -> None:
    op.drop_index("ix_trade_outcomes_exit_on", table_name="trade_outcomes")
    op.drop_index("ix_trade_outcomes_symbol", table_name="trade_outcomes")
    op.drop_index("ix_trade_outcomes_strategy_id", table_name="trade_outcomes")
    op.drop_table("trade_outcomes")
