"""The memory outbox: retains that could not reach the memory backend, kept until it is back.

Revision ID: 0005b_memory_outbox
Revises: 0005_memory
Create Date: 2026-12-02

One row per (bank, document id): enqueueing the same document again replaces its item but keeps its
place (``seq``), so a retried run neither duplicates nor reorders what is waiting. Drained in ``seq``
order (see ``memory/outbox.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005b_memory_outbox"
# The brief's id chains on 0003; in this branch memcore's 0005_memory comes first (one head). The lead
# re-chains at merge.
down_revision: str | Sequence[str] | None = "0005_memory"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "memory_outbox",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("bank", sa.String(), nullable=False),
        sa.Column("document_id", sa.String(), nullable=False),
        sa.Column("item", sa.JSON(), nullable=False),
        sa.Column("correlation_id", sa.String(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_memory_outbox"),
        sa.UniqueConstraint("bank", "document_id", name="uq_memory_outbox_bank_document_id"),
    )


def downgrade() -> None:
    op.drop_table("memory_outbox")
