"""API keys of the HTTP services.

Revision ID: 0004_api_keys
Revises: 0003_decisions_leases
Create Date: 2026-12-02

- ``api_keys``: one row per key made by ``jax keys create``: its public id, a name, its scopes and the
  SHA-256 of the whole key (the key itself is shown once and never stored). Revoking sets
  ``revoked_at``; the row stays so ``jax keys list`` shows what existed.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_api_keys"
down_revision: str | Sequence[str] | None = "0003_decisions_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
