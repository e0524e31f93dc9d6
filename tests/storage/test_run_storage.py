"""What whole runs leave in storage: per-run decisions, leases held and released, compaction, pruning."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

import pytest
from sqlalchemy import text, update
from tests.engines.helpers import order_independent_constraints
from tests.storage.factories import make_item, make_run, make_symbol_result

from jax_assistant.config import DEFAULT_PIPELINE, Settings, StorageConfig
from jax_assistant.domain import RunStatus, utc_now
from jax_assistant.orchestrator import Orchestrator, RunLeasedError, RunRequest
from jax_assistant.pipeline import plugins
from jax_assistant.pipeline.base import BaseStage, StageContext, StageOutput, WorkItem
from jax_assistant.pipeline.policy import StagePolicy
from jax_assistant.pipeline.stages import BUILTIN_STAGES
from jax_assistant.storage import Database, Repository
from jax_assistant.storage.tables import RunRow

SYMBOLS = ["ACME.SIM", "BOLT.SIM", "BREW.SIM", "BYTE.SIM"]


def run_settings(database_url: str, **kw: object) -> Settings:
    return Settings(database_url=database_url, provider="sample", **kw)  # type: ignore[arg-type]


async def decision_payloads(orch: Orchestrator, run_id: str) -> dict[str, str]:
    assert orch.db is not None
    stmt = text("select setup_id, cast(risk as text) from decisions where run_id = :r")
    async with orch.db.engine.connect() as conn:
        return {row[0]: row[1] for row in (await conn.execute(stmt, {"r": run_id})).all()}


async def test_a_rerun_at_another_account_size_keeps_both_runs_sizes(database_url: str) -> None:
    async with Orchestrator(run_settings(database_url)) as small:
        first = await small.start_run(RunRequest(symbols=SYMBOLS))
    async with Orchestrator(run_settings(database_url, account_size=100_000.0)) as big:
        second = await big.start_run(RunRequest(symbols=SYMBOLS))
        assert big.repository is not None
        stored_first = await big.repository.get_symbol_results(first.run.id)
        stored_second = await big.repository.get_symbol_results(second.run.id)
    sizes_first = {t.setup.id: t.risk.account_size for r in stored_first for t in r.trades}
    sizes_second = {t.setup.id: t.risk.account_size for r in stored_second for t in r.trades}
    assert sizes_first and sizes_first.keys() == sizes_second.keys()  # the same setups...
    assert set(sizes_first.values()) == {10_000.0}
    assert set(sizes_second.values()) == {100_000.0}  # ...each run with its own sizing
    assert stored_second == second.results


async def test_decisions_are_byte_identical_on_rerun(database_url: str, tmp_path: Path) -> None:
    """Nothing of the wall clock gets into the stored decision payloads: reruns store the same bytes.

    One symbol at a time: the portfolio book is first come, first served, and its running totals
    (``risk_metrics.portfolio_risk``/``sector_exposure``) follow the booking order, which is the risk
    stage's business (the allocation stage), not storage's.
    """
    constraints = order_independent_constraints(tmp_path / "constraints.json")
    payloads = []
    for concurrency in (1, 1, 1):
        settings = run_settings(database_url, risk_constraints_path=constraints)
        settings.engine.concurrency = concurrency
        async with Orchestrator(settings) as orch:
            outcome = await orch.start_run(RunRequest(symbols=SYMBOLS))
            payloads.append(await decision_payloads(orch, outcome.run.id))
    assert payloads[0] and payloads[0] == payloads[1] == payloads[2]


async def test_the_run_holds_its_lease_while_executing_and_releases_it(database_url: str) -> None:
    async with Orchestrator(run_settings(database_url)) as orch:
        assert orch.repository is not None
        prepared = orch.prepare_run(RunRequest(symbols=SYMBOLS))
        await orch.record_run(prepared)
        owner, expires = await orch.repository.lease_of(prepared.run.id)
        assert owner == orch.owner_id and expires is not None and expires > utc_now()
        async with Orchestrator(run_settings(database_url)) as other:
            with pytest.raises(RunLeasedError, match="another process"):
                await other.resume_run(prepared.run.id)
            assert await other.interrupted_runs() == []
        outcome = await orch.execute(prepared, record=False)
        assert outcome.run.status is RunStatus.COMPLETED
        assert await orch.repository.lease_of(prepared.run.id) == (None, None)


class SlowStage(BaseStage):
    name = "slow"
    default_policy: ClassVar[StagePolicy] = StagePolicy(timeout_s=30.0, after=["persist"])

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        await asyncio.sleep(1.5)
        return StageOutput(item=item)


async def test_heartbeats_keep_a_long_run_owned(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run lasting several lease periods never reads interrupted: its heartbeat keeps renewing."""
    monkeypatch.setattr(plugins, "discover_stage_factories", lambda: {**BUILTIN_STAGES, "slow": SlowStage})
    settings = run_settings(
        database_url,
        pipeline=[*DEFAULT_PIPELINE, "slow"],
        storage=StorageConfig(lease_ttl_s=0.5, heartbeat_s=0.1),
    )
    async with Orchestrator(settings) as orch, Orchestrator(settings) as watcher:
        assert watcher.repository is not None
        request = RunRequest(symbols=SYMBOLS, run_id="run-slow")
        task = asyncio.create_task(orch.start_run(request))
        seen: set[RunStatus] = set()
        while not task.done():
            run = await watcher.repository.get_run("run-slow")
            if run is not None:
                seen.add(run.status)
                assert await watcher.claim_run("run-slow") is False
            await asyncio.sleep(0.05)
        assert (await task).run.status is RunStatus.COMPLETED
    assert RunStatus.RUNNING in seen and RunStatus.INTERRUPTED not in seen


async def test_a_completed_run_keeps_results_but_not_item_snapshots(database_url: str) -> None:
    async with Orchestrator(run_settings(database_url)) as orch:
        outcome = await orch.start_run(RunRequest(symbols=SYMBOLS))
        assert orch.repository is not None
        checkpoints = await orch.repository.load_checkpoints(outcome.run.id)
        assert sorted(checkpoints) == sorted(SYMBOLS)
        rows = [row for per_symbol in checkpoints.values() for row in per_symbol]
        assert len(rows) == len(SYMBOLS) * len(DEFAULT_PIPELINE)
        assert all(row.item == {} for row in rows)
        assert all(row.result.stage == row.stage for row in rows)  # stage results stay
        assert await orch.repository.get_symbol_results(outcome.run.id) == outcome.results
        assert len(await orch.repository.list_audit(run_id=outcome.run.id)) > len(rows)


async def test_without_compaction_the_snapshots_stay(database_url: str) -> None:
    settings = run_settings(database_url, storage=StorageConfig(compact_completed=False))
    async with Orchestrator(settings) as orch:
        outcome = await orch.start_run(RunRequest(symbols=SYMBOLS))
        assert orch.repository is not None
        checkpoints = await orch.repository.load_checkpoints(outcome.run.id)
        assert all(row.item["symbol"] == symbol for symbol, rows in checkpoints.items() for row in rows)


async def test_compaction_spares_runs_that_did_not_complete(db: Database, repo: Repository) -> None:
    await repo.create_run(make_run(status=RunStatus.CANCELLED))
    await repo.save_checkpoint("run-1", "AAPL", 0, make_symbol_result().stages[0], make_item())
    assert await repo.compact_run("run-1") == 0
    [row] = (await repo.load_checkpoints("run-1"))["AAPL"]
    assert row.item["symbol"] == "AAPL"


async def test_prune_removes_old_finished_runs_and_never_a_live_one(db: Database, repo: Repository) -> None:
    now = utc_now()
    old = now - timedelta(days=40)
    await repo.create_run(make_run("old-done", started_at=old, status=RunStatus.COMPLETED, finished_at=old))
    await repo.create_run(make_run("old-live", started_at=old), lease_owner="someone", lease_ttl_s=600)
    await repo.create_run(make_run("old-dead", started_at=old), lease_owner="gone", lease_ttl_s=600)
    async with db.transaction() as conn:  # its owner died long ago
        await conn.execute(
            update(RunRow).where(RunRow.id == "old-dead").values(lease_expires_at=old + timedelta(minutes=1))
        )
    await repo.create_run(make_run("new-done", started_at=now, status=RunStatus.COMPLETED, finished_at=now))
    for run_id in ("old-done", "old-live", "old-dead", "new-done"):
        result = make_symbol_result("AAPL", run_id=run_id)
        await repo.save_symbol_result(result)
        await repo.save_checkpoint(run_id, "AAPL", 0, result.stages[0], make_item(run_id))
    await repo.add_dead_letter("old-done", "AAPL", "persist", "boom", 1, make_item("old-done"))

    report = await repo.prune(now - timedelta(days=30))

    assert report.runs == 2 and report.symbol_results == 2 and report.stage_checkpoints == 2
    assert report.decisions == 4 and report.dead_letters == 1
    assert {r.id for r in await repo.list_runs()} == {"old-live", "new-done"}
    assert len((await repo.get_symbol_results("old-live"))[0].trades) == 2
    assert await repo.get_symbol_results("old-done") == []
    # Setups shared with runs that stay are kept.
    assert report.trades == 0
    assert await repo.get_trade("setup-AAPL-0") is not None


async def test_background_compaction_runs_after_the_run_returns_and_close_waits_for_it(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`jax run` prints its report while the completed run is compacted: the outcome comes back with
    the compaction still going, the lease already released, and closing the orchestrator waits for it."""
    gate = asyncio.Event()
    compact = Repository.compact_run

    async def gated(self: Repository, run_id: str) -> int:
        await gate.wait()
        return await compact(self, run_id)

    monkeypatch.setattr(Repository, "compact_run", gated)
    orch = Orchestrator(run_settings(database_url))
    orch.background_compaction = True
    async with orch:
        # Bounded: were the compaction awaited inside the run, it would wait for the gate forever.
        outcome = await asyncio.wait_for(orch.start_run(RunRequest(symbols=SYMBOLS)), 60)
        assert orch.repository is not None
        checkpoints = await orch.repository.load_checkpoints(outcome.run.id)
        assert all(row.item != {} for rows in checkpoints.values() for row in rows)  # not yet
        stored = await orch.repository.get_run(outcome.run.id)
        assert stored is not None and stored.status is RunStatus.COMPLETED  # lease released already
        gate.set()
    async with Orchestrator(run_settings(database_url)) as reader:
        assert reader.repository is not None
        checkpoints = await reader.repository.load_checkpoints(outcome.run.id)
        assert checkpoints and all(row.item == {} for rows in checkpoints.values() for row in rows)
