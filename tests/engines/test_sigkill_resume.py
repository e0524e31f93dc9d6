"""A real `jax run` killed with SIGKILL mid-run, then `jax run --resume RUN_ID`.

The pipeline includes a throwaway third-party stage (`slow`, a module plus a dist-info folder that
registers it in the `jax_assistant.stages` entry-point group, found through PYTHONPATH), so the run is
slow enough to be caught half-way. The resumed run must end with exactly the rows an uninterrupted
run over the same data produces: same trades (ids and sizes), no duplicated trades, audit records or
checkpoints, every symbol terminal, the run `completed`.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.engines.helpers import order_independent_constraints

PIPELINE = ["detect_events", "slow", "generate_trades", "calculate_risk", "persist"]
N_SYMBOLS = 20  # the sample market
PROCESS_TIMEOUT_S = 120.0

SLOW_STAGE = """
import asyncio
from typing import ClassVar

from jax_assistant.pipeline.base import BaseStage, StageContext, StageOutput, WorkItem
from jax_assistant.pipeline.policy import StagePolicy


class SlowStage(BaseStage):
    name = "slow"
    default_policy: ClassVar[StagePolicy] = StagePolicy(timeout_s=30.0, after=["detect_events"])

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        await asyncio.sleep(0.15)
        return StageOutput(item=item.model_copy(update={"extras": {**item.extras, "slow": ctx.attempt}}))
"""


def make_plugin(root: Path) -> Path:
    """An "installed" plugin without pip: the module and its dist-info side by side on PYTHONPATH."""
    root.mkdir()
    (root / "slowstage.py").write_text(SLOW_STAGE, encoding="utf-8")
    info = root / "slowstage-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: slowstage\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[jax_assistant.stages]\nslow = slowstage:SlowStage\n", "utf-8")
    return root


LEASE_TTL_S = 1.0


def jax_env(tmp_path: Path, plugin: Path, db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "DATABASE_URL"}
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(plugin), os.environ.get("PYTHONPATH", "")) if p),
        JAX_DATA_DIR=str(db.parent),
        JAX_DATABASE_URL=f"sqlite+aiosqlite:///{db}",
        JAX_PIPELINE=json.dumps(PIPELINE),
        JAX_ENGINE__CONCURRENCY="2",
        # Short leases: the killed run's lease must expire before `jax run --resume` may take it.
        JAX_STORAGE__LEASE_TTL_S=str(LEASE_TTL_S),
        JAX_STORAGE__HEARTBEAT_S="0.2",
        # Portfolio limits are first come, first served: with two symbols in flight, two uninterrupted
        # runs of the same data can book the last slot differently. Lift them so runs compare exactly
        # (test_cancel_resume checks the resumed book under the bundled limits, one symbol at a time).
        JAX_RISK_CONSTRAINTS_PATH=str(order_independent_constraints(tmp_path / "constraints.json")),
    )
    return env


def jax(*args: str) -> list[str]:
    return [sys.executable, "-m", "jax_assistant.cli", *args]


def rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def count_or_zero(db: Path, sql: str) -> int:
    try:
        return int(rows(db, sql)[0][0])
    except sqlite3.OperationalError:  # the file or the tables are not there yet
        return 0


def stored_trades(db: Path) -> set[tuple[str, int, bool]]:
    return {
        (i, int(size), bool(ok)) for i, size, ok in rows(db, "select id, position_size, allowed from trades")
    }


def finished_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload: dict[str, Any] = json.loads(proc.stdout)
    return payload


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    plugin = make_plugin(tmp_path / "plugin")
    ref_db = tmp_path / "ref" / "jax.db"
    db = tmp_path / "killed" / "jax.db"
    ref_db.parent.mkdir()
    db.parent.mkdir()

    # The reference run and the run to be killed start together (independent databases).
    with (tmp_path / "ref.out").open("w") as ref_out, (tmp_path / "killed.out").open("w") as killed_out:
        reference = subprocess.Popen(
            jax("run", "--json"),
            env=jax_env(tmp_path, plugin, ref_db),
            cwd=tmp_path,
            stdout=ref_out,
            stderr=subprocess.STDOUT,
        )
        victim = subprocess.Popen(
            jax("run", "--json"),
            env=jax_env(tmp_path, plugin, db),
            cwd=tmp_path,
            stdout=killed_out,
            stderr=subprocess.STDOUT,
        )
        try:
            # Kill it once some (not all) stage checkpoints are stored.
            deadline = time.monotonic() + PROCESS_TIMEOUT_S
            while count_or_zero(db, "select count(*) from stage_checkpoints") < 15:
                assert victim.poll() is None, "the run finished before it could be killed"
                assert time.monotonic() < deadline, "no checkpoints appeared"
                time.sleep(0.02)
            os.kill(victim.pid, signal.SIGKILL)
            assert victim.wait(timeout=PROCESS_TIMEOUT_S) == -signal.SIGKILL
            assert reference.wait(timeout=PROCESS_TIMEOUT_S) == 0, (tmp_path / "ref.out").read_text()[-2000:]
        finally:
            for proc in (victim, reference):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)

    (run_id, status), *others = rows(db, "select id, status from runs")
    assert others == [] and status == "running"  # killed: nobody marked it finished
    time.sleep(LEASE_TTL_S)  # until the dead process's lease expires: then the run is interrupted
    checkpoints = count_or_zero(db, "select count(*) from stage_checkpoints")
    assert 15 <= checkpoints < N_SYMBOLS * len(PIPELINE)
    assert count_or_zero(db, "select count(*) from symbol_results") < N_SYMBOLS

    resumed = finished_json(
        subprocess.run(
            jax("run", "--resume", run_id, "--json"),
            env=jax_env(tmp_path, plugin, db),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT_S,
        )
    )
    ((ref_run_id,),) = rows(ref_db, "select id from runs")
    ref = finished_json(
        subprocess.run(
            jax("runs", "show", ref_run_id, "--json"),
            env=jax_env(tmp_path, plugin, ref_db),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT_S,
        )
    )

    # The run completed, every symbol is terminal, with the same outcome as without the kill.
    assert resumed["run"]["id"] == run_id and resumed["run"]["status"] == "completed"
    assert rows(db, "select status from runs where id = ?", run_id) == [("completed",)]
    statuses = {s["symbol"]: s["status"] for s in resumed["symbols"]}
    assert len(statuses) == len(resumed["symbols"]) == N_SYMBOLS
    assert set(statuses.values()) <= {"succeeded", "degraded", "failed", "cancelled"}
    assert statuses == {s["symbol"]: s["status"] for s in ref["symbols"]}
    assert resumed["run"]["counts"] == ref["run"]["counts"]
    assert rows(db, "select count(*) from symbol_results where run_id = ?", run_id) == [(N_SYMBOLS,)]

    # The same trades (setup ids and sizes) as the uninterrupted run, each stored once.
    trades = stored_trades(db)
    assert trades and trades == stored_trades(ref_db)
    assert rows(db, "select id from trades group by id having count(*) > 1") == []
    result_trade_ids = sorted(t["setup"]["id"] for s in resumed["symbols"] for t in s["trades"])
    assert result_trade_ids == sorted(t[0] for t in trades)

    # No duplicated audit records or checkpoints; every symbol checkpointed once per stage.
    assert rows(db, "select idempotency_key from audit_events group by 1 having count(*) > 1") == []
    assert rows(db, "select id from audit_events group by 1 having count(*) > 1") == []
    per_stage = rows(
        db,
        "select symbol, action, count(*) from audit_events where run_id = ? and action like 'stage.%'"
        " group by symbol, action",
        run_id,
    )
    assert {n for *_, n in per_stage} == {1}
    # At most the two in-flight symbols can have lost a stage's audit record to the kill (it is written
    # right after the checkpoint, and a resumed run does not repeat a checkpointed stage).
    assert len(per_stage) >= N_SYMBOLS * len(PIPELINE) - 2
    assert (
        rows(
            db,
            "select symbol, stage from stage_checkpoints where run_id = ? group by 1, 2 having count(*) > 1",
            run_id,
        )
        == []
    )
    per_symbol = rows(
        db, "select symbol, count(*) from stage_checkpoints where run_id = ? group by 1", run_id
    )
    assert sorted(per_symbol) == sorted((s, len(PIPELINE)) for s in statuses)
    finished = rows(
        db, "select symbol, count(*) from audit_events where action = 'symbol.finished' group by symbol"
    )
    assert sorted(finished) == sorted((s, 1) for s in statuses)
