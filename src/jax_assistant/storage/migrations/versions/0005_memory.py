"""Embedded memory backend: banks, memories, their tags and full-text search.

Revision ID: 0005_memory
Revises: 0003_decisions_leases
Create Date: 2026-12-02

- ``memory_banks``: one row per bank with the embedding model its vectors come from (never mixed).
- ``memories``: the items (``seq`` integer key, ``id``/``document_id`` unique per bank, content hash).
- ``memory_tags``: (seq, tag) for strict tag matching.
- Full text, dialect-specific (not expressible in the portable models):
  SQLite: an FTS5 table over ``memories.body`` (external content, porter stemming) kept in step by triggers;
  PostgreSQL: a generated ``tsvector`` column ``search`` (english) with a GIN index.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_memory"
down_revision: str | Sequence[str] | None = "0003_decisions_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)

_SQLITE_FTS = [
    "CREATE VIRTUAL TABLE memories_fts USING fts5("
    "body, content='memories', content_rowid='seq', tokenize='porter unicode61')",
    "CREATE TRIGGER memories_fts_ai AFTER INSERT ON memories BEGIN "
    "INSERT INTO memories_fts(rowid, body) VALUES (new.seq, new.body); END",
    "CREATE TRIGGER memories_fts_ad AFTER DELETE ON memories BEGIN "
    "INSERT INTO memories_fts(memories_fts, rowid, body) VALUES ('delete', old.seq, old.body); END",
    "CREATE TRIGGER memories_fts_au AFTER UPDATE OF body ON memories BEGIN "
    "INSERT INTO memories_fts(memories_fts, rowid, body) VALUES ('delete', old.seq, old.body); "
    "INSERT INTO memories_fts(rowid, body) VALUES (new.seq, new.body); END",
]
_POSTGRES_FTS = [
    "ALTER TABLE memories ADD COLUMN search tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english', body)) STORED",
    "CREATE INDEX ix_memories_search ON memories USING gin (search)",
]


def upgrade() -> None:
    op.create_table(
        "memory_banks",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("embedding_model", sa.String(), nullable=True),
        sa.Column("embedding_dim", sa.Integer(), nullable=True),
        sa.Column("revision", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_memory_banks"),
    )
    op.create_table(
        "memories",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("bank", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=True),
        sa.Column("ts", TS, nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("source_system", sa.String(), nullable=False),
        sa.Column("source_ref", sa.String(), nullable=True),
        sa.Column("document_id", sa.String(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("invalidated_at", TS, nullable=True),
        sa.Column("invalidation_reason", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["bank"], ["memory_banks.name"], name="fk_memories_bank_memory_banks"),
        sa.PrimaryKeyConstraint("seq", name="pk_memories"),
        sa.UniqueConstraint("bank", "id", name="uq_memories_bank_id"),
        sa.UniqueConstraint("bank", "document_id", name="uq_memories_bank_document_id"),
    )
    op.create_index("ix_memories_bank_content_hash", "memories", ["bank", "content_hash"])
    op.create_index("ix_memories_bank_ts", "memories", ["bank", "ts"])
    op.create_index("ix_memories_bank_symbol_ts", "memories", ["bank", "symbol", "ts"])
    op.create_table(
        "memory_tags",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["seq"], ["memories.seq"], name="fk_memory_tags_seq_memories", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("seq", "tag", name="pk_memory_tags"),
    )
    op.create_index("ix_memory_tags_tag_seq", "memory_tags", ["tag", "seq"])
    dialect = op.get_bind().dialect.name
    for statement in _SQLITE_FTS if dialect == "sqlite" else _POSTGRES_FTS if dialect == "postgresql" else []:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("memories_fts_ai", "memories_fts_ad", "memories_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS memories_fts")
    op.drop_table("memory_tags")
    op.drop_table("memories")
    op.drop_table("memory_banks")
