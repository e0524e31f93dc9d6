"""A resumed run decides with what its start took from learning, not with what was learned since.

A reflection between the start and the resume (new weights, a suspended strategy) must not change a
single stored decision of the resumed run: it ends byte-identical to the same run left uninterrupted.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from tests.engines.helpers import FnStage, policy
from tests.engines.test_cancel_resume import Gate
from typer.testing import CliRunner

from jax_assistant.cli import app
from jax_assistant.config import Settings
from jax_assistant.domain import AuditEvent, RunStatus, utc_now
from jax_assistant.learning.service import REFLECTION_CORRELATION, latest_weights
from jax_assistant.orchestrator import Orchestrator, RunOutcome, RunRequest
from jax_assistant.storage import Repository, open_database

pytestmark = [pytest.mark.realdata]

SYMBOLS = ["AAPL", "MSFT", "XOM", "JPM", "GE", "KO", "PFE", "WMT"]
PIPELINE = ["detect_events", "gate", "generate_trades", "calculate_risk", "allocate", "persist"]


def _decisions(outcome: RunOutcome) -> list[tuple[str, str, int, bool, float]]:
    return sorted(
        (t.setup.id, t.setup.notes, t.risk.position_size, t.risk.allowed, t.setup.confidence)
        for r in outcome.results
        for t in r.trades
    )


def _learned_db(shared_data: Path, tmp_path: Path) -> Path:
    """A database with stored setups and one reflection over their settled outcomes (real bars)."""
    db = tmp_path / "learned.db"
    common = [
        "--data",
        str(shared_data / "daily_ohlcv_stooq_sp500.csv.gz"),
        "--db",
        f"sqlite+aiosqlite:///{db}",
    ]
    runner = CliRunner()
    env = {"JAX_DATA_DIR": str(tmp_path), "COLUMNS": "250"}
    for args in (
        ["run", "--as-of", "2015-06-30", "--lookback", "120", "--json", *common, *SYMBOLS],
        ["reflect", "--as-of", "2015-09-30", "--json", *common],
    ):
        out = runner.invoke(app, args, env=env)
        assert out.exit_code == 0, out.output
    return db


async def _relearn(url: str) -> None:
    """A newer reflection that suspends every strategy: any run reading it decides differently."""
    db = await open_database(url)
    try:
        repo = Repository(db)
        _, weights = await latest_weights(repo)
        assert weights
        changed = {
            sid: w.model_copy(update={"weight": 0.25, "suspended": True}).model_dump(mode="json")
            for sid, w in weights.items()
        }
        now = utc_now()
        await repo.record_audit(
            AuditEvent(
                id=f"reflect:test:{now.isoformat()}",
                correlation_id=REFLECTION_CORRELATION,
                action="learning.reflect",
                outcome="success",
                timestamp=now,
                payload={"asOf": "2015-12-31", "beliefs": [], "weights": changed},
            ),
            idempotency_key=f"reflect:test:{now.isoformat()}",
        )
    finally:
        await db.close()


def _settings(url: str, shared_data: Path) -> Settings:
    return Settings(
        database_url=url,
        provider="csv",
        data_path=shared_data / "daily_ohlcv_stooq_sp500.csv.gz",
        pipeline=PIPELINE,
        metrics_enabled=False,
    )


async def test_resume_after_a_new_reflection_decides_as_the_uninterrupted_run(
    shared_data: Path, tmp_path: Path, register_stages: Callable[..., Any]
) -> None:
    learned = await asyncio.to_thread(_learned_db, shared_data, tmp_path)  # the CLI runs its own loop
    copies = {name: tmp_path / f"{name}.db" for name in ("reference", "resumed", "fresh")}
    for path in copies.values():
        shutil.copy(learned, path)
    request = RunRequest(symbols=SYMBOLS, as_of=date(2015, 10, 1), lookback=5)

    always_open = Gate()
    always_open.open.set()
    register_stages(gate=lambda: FnStage("gate", always_open, policy(after=["detect_events"])))
    async with Orchestrator(_settings(f"sqlite+aiosqlite:///{copies['reference']}", shared_data)) as orch:
        reference = await orch.start_run(request)
    assert reference.run.status is RunStatus.COMPLETED
    assert reference.run.params["learning"]["reflection"], "the run pins the reflection it applied"
    assert any("beliefs: belief" in d[1] for d in _decisions(reference)), "the beliefs shape its setups"

    # Start, cancel with some symbols done, learn something new, then resume.
    gate = Gate(hold=set(SYMBOLS[3:]))
    register_stages(gate=lambda: FnStage("gate", gate, policy(after=["detect_events"])))
    url = f"sqlite+aiosqlite:///{copies['resumed']}"
    orch = Orchestrator(_settings(url, shared_data))
    await orch.open()
    try:
        task = asyncio.create_task(orch.start_run(request))
        await gate.wait_for(len(SYMBOLS))  # three passed the gate, five wait at it
        assert orch.engine is not None
        orch.engine.cancel()
        gate.open.set()
        async with asyncio.timeout(60):
            cancelled = await task
        assert cancelled.run.status is RunStatus.CANCELLED
        await _relearn(url)
        resumed = await orch.resume_run(cancelled.run.id)
    finally:
        await orch.close()
    assert resumed.run.status is RunStatus.COMPLETED
    assert _decisions(resumed) == _decisions(reference)
    assert json.dumps(resumed.run.params["learning"]) == json.dumps(reference.run.params["learning"])

    # The control: a run started after the new reflection does read it (so the check above can fail).
    await _relearn(f"sqlite+aiosqlite:///{copies['fresh']}")
    async with Orchestrator(_settings(f"sqlite+aiosqlite:///{copies['fresh']}", shared_data)) as orch:
        fresh = await orch.start_run(request)
    assert _decisions(fresh) != _decisions(reference)
