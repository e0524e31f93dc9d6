"""A 1 000-symbol run with random failures on real storage, and retrying its dead letters.

The pipeline is provider-free (synthetic symbols, trivial stages), so what is measured is the engine
and the storage: every symbol must end in exactly one terminal state, the failed ones (and only those)
must be in the dead-letter table, and `jax dlq retry --run` (Orchestrator.retry_dead_letters) must
re-run them from the stage that failed and mark them resolved.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.engines.helpers import TERMINAL, FnStage, by_symbol, make_engine, policy, start

from jax_assistant.config import EngineConfig, Settings
from jax_assistant.domain import Run, RunStatus, StageStatus, SymbolStatus
from jax_assistant.orchestrator import Orchestrator, RunError
from jax_assistant.pipeline.base import StageContext, WorkItem

PIPELINE = ["compute", "flaky", "finalize"]


class FlakyPipeline:
    """compute -> flaky (fails for ``failing`` until healed) -> finalize, counting every call."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.healed = False
        self.calls: Counter[tuple[str, str]] = Counter()

    async def compute(self, ctx: StageContext, item: WorkItem) -> WorkItem:
        self.calls["compute", item.symbol] += 1
        value = sum(map(ord, item.symbol))
        return item.model_copy(update={"extras": {**item.extras, "value": value}})

    async def flaky(self, ctx: StageContext, item: WorkItem) -> None:
        self.calls["flaky", item.symbol] += 1
        if item.symbol in self.failing and not self.healed:
            raise RuntimeError(f"dependency refused {item.symbol}")

    async def finalize(self, ctx: StageContext, item: WorkItem) -> WorkItem:
        self.calls["finalize", item.symbol] += 1
        # Needs compute's output: a retried symbol must come back with the item it had when it failed.
        return item.model_copy(update={"extras": {**item.extras, "double": item.extras["value"] * 2}})

    def factories(self) -> dict[str, Callable[[], FnStage]]:
        return {
            "compute": lambda: FnStage("compute", self.compute),
            "flaky": lambda: FnStage("flaky", self.flaky, policy(after=["compute"])),
            "finalize": lambda: FnStage("finalize", self.finalize, policy(after=["flaky"])),
        }


def settings(database_url: str, concurrency: int = 16) -> Settings:
    return Settings(
        database_url=database_url,
        pipeline=PIPELINE,
        engine=EngineConfig(concurrency=concurrency, queue_size=64),
        metrics_enabled=False,
    )


@pytest.mark.slow
async def test_thousand_symbols_with_random_failures(
    database_url: str, register_stages: Callable[..., None]
) -> None:
    rng = random.Random(1_000)
    symbols = [f"SYN{i:04d}" for i in range(1_000)]
    failing = {s for s in symbols if rng.random() < 0.10}
    assert 70 < len(failing) < 130
    flow = FlakyPipeline(failing)
    register_stages(**flow.factories())

    async with Orchestrator(settings(database_url)) as orch:
        repo = orch.repository
        assert repo is not None
        engine = make_engine(orch.stages(), repository=repo, concurrency=16, queue_size=64)
        run, starts = await start(engine, symbols)
        run, results = await engine.run(run, starts)

        # Every symbol terminal, exactly once; counts add up.
        assert run.status is RunStatus.COMPLETED
        got = by_symbol(results)
        assert sorted(got) == sorted(symbols)
        assert all(r.status in TERMINAL for r in results)
        assert {s for s, r in got.items() if r.status is SymbolStatus.FAILED} == failing
        assert {s for s, r in got.items() if r.status is SymbolStatus.SUCCEEDED} == set(symbols) - failing
        assert run.counts["succeeded"] + run.counts["failed"] == run.counts["symbols"] == 1_000
        assert run.counts["failed"] == len(failing) and run.counts["cancelled"] == run.counts["degraded"] == 0
        # No symbol processed twice: each stage saw each symbol at most once.
        assert max(flow.calls.values()) == 1
        assert sum(1 for (stage, _) in flow.calls if stage == "compute") == 1_000
        assert {s for (stage, s) in flow.calls if stage == "finalize"} == set(symbols) - failing

        # Storage: one result per symbol, the same statuses; the failed ones (only) dead-lettered.
        stored = await repo.get_symbol_results(run.id)
        assert len(stored) == 1_000
        assert {r.symbol: r.status for r in stored} == {s: r.status for s, r in got.items()}
        letters = await repo.list_dead_letters(run_id=run.id, status=None)
        assert sorted(d.symbol for d in letters) == sorted(failing)
        for d in letters:
            assert (d.run_id, d.stage, d.attempts, d.status) == (run.id, "flaky", 1, "open")
            assert d.error == f"flaky: RuntimeError: dependency refused {d.symbol}"
            item = WorkItem.model_validate(d.item)
            assert item.completed_stages == ["compute"] and "value" in item.extras
        checkpoints = await repo.load_checkpoints(run.id)
        assert len(checkpoints) == 1_000
        for sym, rows in checkpoints.items():
            expected = ["compute", "flaky"] if sym in failing else PIPELINE
            assert [r.stage for r in rows] == expected, sym
        audit = Counter(a.action for a in await repo.list_audit(run_id=run.id, limit=100_000))
        assert audit["symbol.finished"] == 1_000
        assert audit["stage.compute"] == audit["stage.flaky"] == 1_000
        assert audit["stage.finalize"] == 1_000 - len(failing)

        # `jax dlq retry --run RUN_ID`: the dependency is healthy again.
        flow.healed = True
        retry = await orch.retry_dead_letters(run_id=run.id)
        assert retry.run.status is RunStatus.COMPLETED and retry.run.id != run.id
        assert retry.run.params["retryOf"] == run.id
        retried = by_symbol(retry.results)
        assert set(retried) == failing
        for sym, r in retried.items():
            assert r.status is SymbolStatus.SUCCEEDED
            # Re-run from the stage that failed: compute is not repeated.
            assert [(s.stage, s.status) for s in r.stages] == [
                ("flaky", StageStatus.OK),
                ("finalize", StageStatus.OK),
            ]
            assert flow.calls["compute", sym] == 1 and flow.calls["flaky", sym] == 2
        # The retry run completed, so its checkpoints keep stage results but no item snapshots
        # (compacted); what the stages produced lives on in the stored results.
        retry_checkpoints = await repo.load_checkpoints(retry.run.id)
        stored_retry = {r.symbol: r for r in await repo.get_symbol_results(retry.run.id)}
        for sym in failing:
            assert [r.stage for r in retry_checkpoints[sym]] == ["flaky", "finalize"]
            assert all(r.item == {} for r in retry_checkpoints[sym])
            assert stored_retry[sym].extras["double"] == 2 * sum(map(ord, sym))

        letters = await repo.list_dead_letters(run_id=run.id, status=None)
        assert {d.status for d in letters} == {"resolved"}
        assert {d.retried_by_run_id for d in letters} == {retry.run.id}
        assert await repo.list_dead_letters(run_id=run.id) == []  # nothing left open
        with pytest.raises(RunError, match="no open dead letters"):
            await orch.retry_dead_letters(run_id=run.id)


async def test_retry_still_failing_marks_letters_retried_not_resolved(
    register_stages: Callable[..., None], tmp_path: Path
) -> None:
    flow = FlakyPipeline({"B1", "B2"})
    register_stages(**flow.factories())
    url = f"sqlite+aiosqlite:///{tmp_path / 'retry.db'}"
    async with Orchestrator(settings(url, concurrency=2)) as orch:
        assert orch.repository is not None
        engine = make_engine(orch.stages(), repository=orch.repository, concurrency=2)
        run, starts = await start(engine, ["A1", "B1", "B2"])
        await engine.run(run, starts)

        still_broken = await orch.retry_dead_letters(run_id=run.id)
        assert {r.symbol: r.status for r in still_broken.results} == {
            "B1": SymbolStatus.FAILED,
            "B2": SymbolStatus.FAILED,
        }
        letters = await orch.repository.list_dead_letters(run_id=run.id, status=None)
        assert {d.status for d in letters} == {"retried"}
        # The retry run dead-letters its own failures, so they can be retried again later.
        again = await orch.repository.list_dead_letters(run_id=still_broken.run.id)
        assert sorted(d.symbol for d in again) == ["B1", "B2"]


async def test_retry_by_id_and_run_processes_each_letter_once(
    register_stages: Callable[..., None], tmp_path: Path
) -> None:
    """`jax dlq retry 1 --run RUN` names letter 1 twice (explicitly and through its run): it must still
    be re-run once, or the symbol goes through the pipeline twice at the same time."""
    flow = FlakyPipeline({"B1", "B2"})
    register_stages(**flow.factories())
    url = f"sqlite+aiosqlite:///{tmp_path / 'retry.db'}"
    async with Orchestrator(settings(url, concurrency=4)) as orch:
        assert orch.repository is not None
        engine = make_engine(orch.stages(), repository=orch.repository, concurrency=4)
        run, starts = await start(engine, ["A1", "B1", "B2"])
        await engine.run(run, starts)
        first = (await orch.repository.list_dead_letters(run_id=run.id))[0]

        flow.healed = True
        outcome = await orch.retry_dead_letters([first.id], run_id=run.id)

        assert sorted(r.symbol for r in outcome.results) == ["B1", "B2"]
        assert sorted(outcome.run.symbols) == ["B1", "B2"]
        assert flow.calls["flaky", "B1"] == 2 and flow.calls["flaky", "B2"] == 2
        assert flow.calls["finalize", "B1"] == 1 and flow.calls["finalize", "B2"] == 1


# ----------------------------------------------------------------------------- retry shares the portfolio


async def test_dead_letter_retry_respects_the_original_runs_portfolio(
    tmp_path: Path, register_stages: Callable[..., None]
) -> None:
    """With room for one position, a symbol retried from the DLQ must see the position the original
    run already took, not a fresh book."""
    import json
    from importlib import resources

    from jax_assistant.config import EngineConfig, Settings
    from jax_assistant.orchestrator import Orchestrator, RunRequest

    data = json.loads(resources.files("jax_assistant.defaults").joinpath("risk-constraints.json").read_text())
    data["portfolio_constraints"]["max_positions"] = 1
    constraints = tmp_path / "one-position.json"
    constraints.write_text(json.dumps(data))
    broken = {"on": True}

    async def flaky(ctx: StageContext, item: WorkItem) -> None:
        # FLUX.SIM: its setups pass every check that needs no portfolio, so only the book can refuse them.
        if broken["on"] and item.symbol == "FLUX.SIM":
            raise RuntimeError("feed down")

    register_stages(feed=lambda: FnStage("feed", flaky))
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}",
        pipeline=["feed", "detect_events", "generate_trades", "calculate_risk", "allocate", "persist"],
        risk_constraints_path=constraints,
        engine=EngineConfig(concurrency=1),
        metrics_enabled=False,
    )
    async with Orchestrator(settings) as orch:
        first = await orch.start_run(RunRequest(symbols=["FLUX.SIM", "BOLT.SIM"]))
        by = {r.symbol: r for r in first.results}
        assert by["FLUX.SIM"].status.value == "failed"
        assert sum(t.risk.allowed for t in by["BOLT.SIM"].trades) == 1  # BOLT took the only slot
        broken["on"] = False
        retry = await orch.retry_dead_letters(run_id=first.run.id)
        (flux,) = retry.results
        assert flux.status.value == "succeeded" and flux.trades
        assert not any(t.risk.allowed for t in flux.trades)
        codes = {v.code for t in flux.trades for v in t.risk.constraints.violations}
        assert "TOO_MANY_OPEN_POSITIONS" in codes


async def test_a_retry_run_is_stored_as_ended_only_once_its_letters_are_settled(
    register_stages: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client polling the retry run (the API's wait for it) must find its dead letters resolved the
    moment the run reads `completed`, not a little later."""
    flow = FlakyPipeline({"B1"})
    register_stages(**flow.factories())
    url = f"sqlite+aiosqlite:///{tmp_path / 'retry.db'}"
    async with Orchestrator(settings(url, concurrency=2)) as orch:
        repo = orch.repository
        assert repo is not None
        engine = make_engine(orch.stages(), repository=repo, concurrency=2)
        run, starts = await start(engine, ["A1", "B1"])
        await engine.run(run, starts)
        flow.healed = True

        seen_at_end: list[set[str]] = []
        store_run = repo.update_run

        async def update_run(stored: Run) -> None:
            if stored.id != run.id and stored.status is RunStatus.COMPLETED:
                letters = await repo.list_dead_letters(run_id=run.id, status=None)
                seen_at_end.append({d.status for d in letters})
            await store_run(stored)

        monkeypatch.setattr(repo, "update_run", update_run)
        outcome = await orch.retry_dead_letters(run_id=run.id)

        assert outcome.run.status is RunStatus.COMPLETED
        assert seen_at_end == [{"resolved"}]
