"""Keep plugin stage outputs (WorkItem.extras) with each symbol result.

Revision ID: 0002_symbol_extras
Revises: 0001_initial
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_symbol_extras"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch mode: SQLite cannot ALTER a column's constraints in place; the server default keeps
    # existing rows valid under NOT NULL.
    with op.batch_alter_table("symbol_results") as batch:
        batch.add_column(sa.Column("extras", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))


def downgrade() -> None:
    with op.batch_alter_table("symbol_results") as batch:
        batch.drop_column("extras")
