"""Research cache and spend ledger.

Revision ID: 0007_research
Revises: 0003_decisions_leases
Create Date: 2026-12-02

- ``research_cache``: research answers by (symbol, question set, provider) with an expiry and the
  symbol's newest event at fetch time (a newer event invalidates the row).
- ``research_spend``: tokens and cost of every paid research call, summed for the run and day budgets.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_research"
down_revision: str | Sequence[str] | None = "0006_bar_cache"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "research_cache",
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("question_key", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("questions", sa.JSON(), nullable=False),
        sa.Column("event_key", sa.String(), nullable=True),
        sa.Column("bundle", sa.JSON(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("symbol", "question_key", "provider", name="pk_research_cache"),
    )
    op.create_index("ix_research_cache_expires_at", "research_cache", ["expires_at"])
    op.create_table(
        "research_spend",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_research_spend"),
    )
    op.create_index("ix_research_spend_day", "research_spend", ["day"])
    op.create_index("ix_research_spend_run_id", "research_spend", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_research_spend_run_id", table_name="research_spend")
    op.drop_index("ix_research_spend_day", table_name="research_spend")
    op.drop_table("research_spend")
    op.drop_index("ix_research_cache_expires_at", table_name="research_cache")
    op.drop_table("research_cache")
