"""Per-run risk decisions and run leases.

Revision ID: 0003_decisions_leases
Revises: 0002_symbol_extras
Create Date: 2026-12-01

- ``decisions``: one row per (run, setup) with the whole RiskResult that run computed. Until now the
  trades table held the first run's sizing only, so a rerun at another account size showed the earlier
  run's sizes. Existing runs are backfilled from what is stored: each run gets, for every setup its
  symbol results reference, the risk decision the trades table holds (exactly what those runs displayed
  before the upgrade; a rerun's own sizes were never stored and cannot be recovered).
- ``runs.lease_owner`` / ``lease_expires_at`` / ``heartbeat_at``: the process executing a run holds
  its lease; a ``running`` run whose lease expired (or that never had one: every run from before this
  revision) is interrupted and may be resumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003_decisions_leases"
down_revision: str | Sequence[str] | None = "0002_symbol_extras"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
_BATCH = 500


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", TS, nullable=True))
        batch.add_column(sa.Column("heartbeat_at", TS, nullable=True))

    decisions = op.create_table(
        "decisions",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("setup_id", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("strategy_id", sa.String(), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("position_size", sa.Integer(), nullable=False),
        sa.Column("account_size", sa.Float(), nullable=False),
        sa.Column("risk_percent", sa.Float(), nullable=False),
        sa.Column("risk", sa.JSON(), nullable=False),
        sa.Column("decided_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_decisions_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "setup_id", name="pk_decisions"),
    )
    op.create_index("ix_decisions_symbol", "decisions", ["symbol"])
    _backfill(decisions)


def _backfill(decisions: sa.Table) -> None:
    # Lightweight table stubs as they stand at this revision (never the live models).
    results = sa.table("symbol_results", sa.column("run_id", sa.String()), sa.column("trade_ids", sa.JSON()))
    trades = sa.table(
        "trades",
        sa.column("id", sa.String()),
        sa.column("symbol", sa.String()),
        sa.column("strategy_id", sa.String()),
        sa.column("allowed", sa.Boolean()),
        sa.column("position_size", sa.Integer()),
        sa.column("risk", sa.JSON()),
        sa.column("created_at", TS),
    )
    conn = op.get_bind()
    wanted: list[tuple[str, str]] = []
    for run_id, trade_ids in conn.execute(sa.select(results.c.run_id, results.c.trade_ids)):
        wanted.extend((run_id, trade_id) for trade_id in trade_ids or [])
    if not wanted:
        return
    by_id: dict[str, Any] = {}
    ids = sorted({trade_id for _, trade_id in wanted})
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start : start + _BATCH]
        for row in conn.execute(sa.select(trades).where(trades.c.id.in_(chunk))):
            by_id[row.id] = row
    rows = []
    for run_id, trade_id in sorted(set(wanted)):
        trade = by_id.get(trade_id)
        if trade is None:
            continue
        risk = trade.risk or {}
        rows.append(
            {
                "run_id": run_id,
                "setup_id": trade_id,
                "symbol": trade.symbol,
                "strategy_id": trade.strategy_id,
                "allowed": trade.allowed,
                "position_size": trade.position_size,
                "account_size": float(risk.get("account_size") or 0.0),
                "risk_percent": float(risk.get("risk_percent") or 0.0),
                "risk": risk,
                "decided_at": trade.created_at,
            }
        )
    for start in range(0, len(rows), _BATCH):
        conn.execute(decisions.insert(), rows[start : start + _BATCH])


def downgrade() -> None:
    op.drop_index("ix_decisions_symbol", table_name="decisions")
    op.drop_table("decisions")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
