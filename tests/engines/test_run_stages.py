"""Run-level stages (barriers) in the local engine.

A run stage runs once, after every live symbol finished the stages before it, with their items in
``run.symbols`` order; the stages after it start only then. It gets the engine's policies, its output
is validated, its checkpoints commit in one write, and resume/cancel respect it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.engines.helpers import BatchRecorder, FnStage, by_symbol, make_engine, policy, run_symbols, start

from jax_assistant.config import EngineConfig, Settings
from jax_assistant.domain import RunStatus, StageStatus, SymbolResult, SymbolStatus
from jax_assistant.orchestrator import Orchestrator, RunRequest
from jax_assistant.pipeline.base import BaseRunStage, RunStageOutput, StageContext, WorkItem
from jax_assistant.pipeline.plugins import build_pipeline, describe
from jax_assistant.pipeline.policy import StagePolicy
from jax_assistant.pipeline.resilience import FakeClock
from jax_assistant.storage import Repository
from jax_assistant.storage.repository import CheckpointWrite

SYMBOLS = ["DDD", "AAA", "CCC", "BBB", "EEE", "FFF"]  # run order is not alphabetical on purpose
HANG_GUARD_S = 20.0

RunBody = Callable[[StageContext, Sequence[WorkItem]], Awaitable[Any]]


class Barrier(BaseRunStage):
    """A run stage whose behaviour is ``body(ctx, items)``; by default it ranks the items it got."""

    def __init__(
        self, name: str = "rank", body: RunBody | None = None, policy: StagePolicy | None = None
    ) -> None:
        super().__init__(policy or StagePolicy())
        self.name = name  # type: ignore[misc]  # BaseRunStage declares it as a class variable
        self.body = body
        self.seen: list[list[str]] = []

    async def run_all(self, ctx: StageContext, items: Sequence[WorkItem]) -> RunStageOutput:
        self.seen.append([i.symbol for i in items])
        if self.body is not None:
            out = await self.body(ctx, items)
            if out is not None:
                return out  # type: ignore[no-any-return]
        ranked = [
            i.model_copy(update={"extras": {**i.extras, self.name: {"rank": n, "of": len(items)}}})
            for n, i in enumerate(items)
        ]
        return RunStageOutput(items=list(reversed(ranked)))  # any order back is fine


async def _uneven(ctx: StageContext, item: WorkItem) -> None:
    # Symbols finish the first stage in an order unrelated to the run order.
    for _ in range(sum(map(ord, item.symbol)) % 7):
        await asyncio.sleep(0)


def _comparable(results: Sequence[SymbolResult]) -> str:
    return json.dumps(
        [
            {
                "symbol": r.symbol,
                "status": r.status.value,
                "error": r.error,
                "extras": r.extras,
                "stages": [(s.stage, s.status.value, s.attempts, s.error, s.reason) for s in r.stages],
            }
            for r in results
        ],
        sort_keys=True,
    )


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_a_barrier_sees_every_symbol_in_run_order(clock: FakeClock, concurrency: int) -> None:
    log: list[str] = []

    async def pre(ctx: StageContext, item: WorkItem) -> None:
        await _uneven(ctx, item)
        log.append(f"pre:{item.symbol}")

    async def post(ctx: StageContext, item: WorkItem) -> None:
        log.append(f"post:{item.symbol}")
        assert item.extras["rank"]["of"] == len(SYMBOLS)

    barrier = Barrier()
    engine = make_engine(
        [FnStage("pre", pre), barrier, FnStage("post", post)], clock=clock, concurrency=concurrency
    )
    run, results = await run_symbols(engine, SYMBOLS)

    assert run.status is RunStatus.COMPLETED and run.counts["succeeded"] == len(SYMBOLS)
    assert barrier.seen == [SYMBOLS]  # once, in run order (never completion order)
    # Every symbol finished `pre` before any started `post`.
    assert all(e.startswith("pre:") for e in log[: len(SYMBOLS)])
    assert all(e.startswith("post:") for e in log[len(SYMBOLS) :])
    for n, sym in enumerate(SYMBOLS):
        r = results[sym]
        assert [(s.stage, s.status) for s in r.stages] == [
            ("pre", StageStatus.OK),
            ("rank", StageStatus.OK),
            ("post", StageStatus.OK),
        ]
        assert r.extras["rank"] == {"rank": n, "of": len(SYMBOLS)}


async def test_results_are_identical_at_concurrency_1_and_8() -> None:
    outputs = []
    for concurrency in (1, 8):
        engine = make_engine(
            [FnStage("pre", _uneven), Barrier(), FnStage("post")], clock=FakeClock(), concurrency=concurrency
        )
        run, starts = await start(engine, SYMBOLS)
        _, results = await engine.run(run, starts)
        outputs.append(_comparable(results))
    assert outputs[0] == outputs[1]


async def test_failed_symbols_do_not_reach_the_barrier(clock: FakeClock) -> None:
    async def fail_ccc(ctx: StageContext, item: WorkItem) -> None:
        if item.symbol == "CCC":
            raise RuntimeError("no data")

    barrier = Barrier()
    engine = make_engine([FnStage("pre", fail_ccc), barrier, FnStage("post")], clock=clock, concurrency=3)
    run, results = await run_symbols(engine, SYMBOLS)
    assert barrier.seen == [[s for s in SYMBOLS if s != "CCC"]]
    assert results["CCC"].status is SymbolStatus.FAILED
    assert results["BBB"].extras["rank"] == {"rank": 2, "of": 5}
    assert run.counts["failed"] == 1 and run.counts["succeeded"] == 5


# ----------------------------------------------------------------------------- failures of the barrier


async def _raises(ctx: StageContext, items: Sequence[WorkItem]) -> Any:
    raise RuntimeError("allocator exploded")


async def _hangs(ctx: StageContext, items: Sequence[WorkItem]) -> Any:
    await asyncio.sleep(3600)


async def _drops_one(ctx: StageContext, items: Sequence[WorkItem]) -> Any:
    return RunStageOutput(items=list(items[1:]))


async def _adds_one(ctx: StageContext, items: Sequence[WorkItem]) -> Any:
    extra = items[0].model_copy(update={"symbol": "ZZZ"})
    return RunStageOutput(items=[*items, extra])


async def _duplicates(ctx: StageContext, items: Sequence[WorkItem]) -> Any:
    return RunStageOutput(items=[*items, items[0]])


async def _other_run(ctx: StageContext, items: Sequence[WorkItem]) -> Any:
    return RunStageOutput(items=[i.model_copy(update={"run_id": "run_other"}) for i in items])


async def _garbage(ctx: StageContext, items: Sequence[WorkItem]) -> Any:
    return {"items": []}


async def _fails_unknown(ctx: StageContext, items: Sequence[WorkItem]) -> Any:
    return RunStageOutput(items=list(items), failed={"NOPE": "not mine"})


async def _unserialisable(ctx: StageContext, items: Sequence[WorkItem]) -> Any:
    return RunStageOutput(items=[i.model_copy(update={"extras": {"x": object()}}) for i in items])


FAILURES: list[tuple[RunBody, str]] = [
    (_raises, "RuntimeError: allocator exploded"),
    (_hangs, "exceeded its 5s timeout"),
    (_drops_one, "bad output: returned no item for DDD"),
    (_adds_one, "bad output: returned an item for 'ZZZ', which it was not given"),
    (_duplicates, "bad output: returned 'DDD' twice"),
    (_other_run, "bad output: returned 'DDD' of run 'run_other'"),
    (_garbage, "bad output: returned a dict, not a RunStageOutput"),
    (_fails_unknown, "bad output: failed symbol(s) it was not given: NOPE"),
    (_unserialisable, "bad output: item of 'DDD' is not JSON-serialisable"),
]


@pytest.mark.parametrize(("body", "expected"), FAILURES, ids=[f.__name__ for f, _ in FAILURES])
async def test_a_failing_required_barrier_fails_every_symbol_with_a_dead_letter(
    sqlite_repository: Repository, clock: FakeClock, body: RunBody, expected: str
) -> None:
    post = FnStage("post")
    engine = make_engine(
        [FnStage("pre"), Barrier(body=body, policy=policy(timeout_s=5)), post],
        repository=sqlite_repository,
        clock=clock,
        concurrency=4,
    )
    run, results = await run_symbols(engine, SYMBOLS)

    assert run.status is RunStatus.COMPLETED and run.counts["failed"] == len(SYMBOLS)
    assert post.calls == []
    for sym in SYMBOLS:
        r = results[sym]
        assert r.status is SymbolStatus.FAILED
        assert r.error is not None and r.error.startswith("rank: ") and expected in r.error
        assert [s.stage for s in r.stages] == ["pre", "rank"]
    letters = {d.symbol: d for d in await sqlite_repository.list_dead_letters(run_id=run.id)}
    assert sorted(letters) == sorted(SYMBOLS)
    for sym, letter in letters.items():
        assert letter.stage == "rank" and expected in letter.error
        before = WorkItem.model_validate(letter.item)  # the item as it was before the barrier
        assert before.completed_stages == ["pre"] and before.extras == {"pre": sym}
    stored = {r.symbol: r.status for r in await sqlite_repository.get_symbol_results(run.id)}
    assert stored == {s: SymbolStatus.FAILED for s in SYMBOLS}


@pytest.mark.parametrize(("body", "expected"), FAILURES[:3], ids=[f.__name__ for f, _ in FAILURES[:3]])
async def test_a_failing_optional_barrier_degrades_every_symbol_which_continues_unchanged(
    clock: FakeClock, body: RunBody, expected: str
) -> None:
    post = FnStage("post")
    engine = make_engine(
        [FnStage("pre"), Barrier(body=body, policy=policy(timeout_s=5, required=False)), post],
        clock=clock,
        concurrency=4,
    )
    run, results = await run_symbols(engine, SYMBOLS)
    assert run.counts["degraded"] == len(SYMBOLS) and sorted(post.calls) == sorted(SYMBOLS)
    for sym in SYMBOLS:
        r = results[sym]
        assert r.status is SymbolStatus.DEGRADED
        rank = next(s for s in r.stages if s.stage == "rank")
        assert rank.status in (StageStatus.FAILED, StageStatus.TIMED_OUT)
        assert rank.reason is not None and rank.reason.startswith("optional stage")
        assert expected in (rank.error or "")
        assert r.extras == {"pre": sym, "post": sym}  # the barrier's (absent) output did not leak in


async def test_the_barrier_is_retried_under_its_policy(clock: FakeClock) -> None:
    calls: list[int] = []

    async def flaky(ctx: StageContext, items: Sequence[WorkItem]) -> Any:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("allocator service hiccup")
        return None  # the default ranking

    engine = make_engine(
        [
            FnStage("pre"),
            Barrier(body=flaky, policy=policy(retry={"attempts": 3, "jitter": 0})),
            FnStage("post"),
        ],
        clock=clock,
    )
    run, results = await run_symbols(engine, SYMBOLS)
    assert calls == [1, 2, 3] and run.counts["succeeded"] == len(SYMBOLS)
    assert {next(s for s in r.stages if s.stage == "rank").attempts for r in results.values()} == {3}


@pytest.mark.parametrize("required", [True, False])
async def test_failed_per_symbol_fails_or_degrades_just_those(
    sqlite_repository: Repository, clock: FakeClock, required: bool
) -> None:
    async def refuse_two(ctx: StageContext, items: Sequence[WorkItem]) -> Any:
        kept = [i.model_copy(update={"extras": {**i.extras, "rank": "kept"}}) for i in items]
        return RunStageOutput(items=kept, failed={"AAA": "over budget", "EEE": "correlated"})

    post = FnStage("post")
    engine = make_engine(
        [FnStage("pre"), Barrier(body=refuse_two, policy=policy(required=required)), post],
        repository=sqlite_repository,
        clock=clock,
    )
    run, results = await run_symbols(engine, SYMBOLS)
    refused = {"AAA": "over budget", "EEE": "correlated"}
    for sym in SYMBOLS:
        r = results[sym]
        if sym not in refused:
            assert r.status is SymbolStatus.SUCCEEDED and r.extras["rank"] == "kept"
            continue
        rank = next(s for s in r.stages if s.stage == "rank")
        assert rank.status is StageStatus.FAILED and rank.error == refused[sym]
        assert "rank" not in r.extras
        assert r.status is (SymbolStatus.FAILED if required else SymbolStatus.DEGRADED)
    letters = {d.symbol: d.error for d in await sqlite_repository.list_dead_letters(run_id=run.id)}
    if required:
        assert letters == {s: f"rank: {why}" for s, why in refused.items()}
        assert sorted(post.calls) == sorted(set(SYMBOLS) - set(refused))
    else:
        assert letters == {} and sorted(post.calls) == sorted(SYMBOLS)


async def test_the_barrier_checkpoints_commit_in_one_write(repository: Repository, clock: FakeClock) -> None:
    recorder = BatchRecorder(repository)
    engine = make_engine([FnStage("pre"), Barrier(), FnStage("post")], repository=recorder, clock=clock)
    run, _ = await run_symbols(engine, SYMBOLS)
    with_rank = [
        b
        for b in recorder.batches
        if any(isinstance(op, CheckpointWrite) and op.result.stage == "rank" for op in b)
    ]
    assert len(with_rank) == 1
    ranked = [
        op.symbol for op in with_rank[0] if isinstance(op, CheckpointWrite) and op.result.stage == "rank"
    ]
    assert sorted(ranked) == sorted(SYMBOLS)
    # The segment's checkpoints (written behind) were flushed before the barrier ran, not with it.
    before = recorder.batches[: recorder.batches.index(with_rank[0])]
    pre = [
        op.symbol for b in before for op in b if isinstance(op, CheckpointWrite) and op.result.stage == "pre"
    ]
    assert sorted(pre) == sorted(SYMBOLS)
    checkpoints = await repository.load_checkpoints(run.id)
    assert {s: [c.stage for c in rows] for s, rows in checkpoints.items()} == {
        s: ["pre", "rank", "post"] for s in SYMBOLS
    }


# ----------------------------------------------------------------------------- plugins


def test_a_run_stage_is_accepted_by_the_pipeline_builder_and_described() -> None:
    stages = build_pipeline(
        ["pre", "rank"],
        factories={"pre": lambda: FnStage("pre"), "rank": Barrier},
        overrides={"rank": {"required": False}},
    )
    rows = describe(stages)
    assert [(r["name"], r["scope"], r["required"]) for r in rows] == [
        ("pre", "symbol", True),
        ("rank", "run", False),
    ]


def test_a_run_stage_without_run_all_is_rejected() -> None:
    class Half:
        name = "half"
        scope = "run"
        policy = StagePolicy()

    from jax_assistant.pipeline.plugins import PipelineConfigError

    with pytest.raises(PipelineConfigError, match="RunStage protocol"):
        build_pipeline(["half"], factories={"half": Half})


# ----------------------------------------------------------------------------- resume and cancel


PIPELINE = ["pre", "rank", "post"]
SIM = [
    "ROAM.SIM",
    "ACME.SIM",
    "ZEST.SIM",
    "FLUX.SIM",
    "BYTE.SIM",
]  # real sample symbols, for the Orchestrator


class Hold:
    """A per-symbol stage body that blocks ``symbol`` forever (until the test aborts the run)."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.reached = asyncio.Event()

    async def __call__(self, ctx: StageContext, item: WorkItem) -> None:
        if item.symbol == self.symbol:
            self.reached.set()
            await asyncio.Event().wait()


def _settings(url: str) -> Settings:
    return Settings(
        database_url=url,
        pipeline=PIPELINE,
        watchlist=SIM,
        provider="sample",
        engine=EngineConfig(concurrency=3, queue_size=2, drain_timeout_s=3600),
        metrics_enabled=False,
    )


async def _crash_then_resume(
    url: str, register_stages: Callable[..., Any], hold_at: str
) -> tuple[Barrier, FnStage, list[SymbolResult], str]:
    """Start a run whose ``hold_at`` stage blocks the last symbol, abort it (a crash: no cleanup
    writes, the run stays `running`), then resume it with the same stage objects."""
    hold = Hold(SIM[-1])
    barrier = Barrier()
    pre = FnStage("pre", hold if hold_at == "pre" else None)
    post = FnStage("post", hold if hold_at == "post" else None)
    register_stages(pre=lambda: pre, rank=lambda: barrier, post=lambda: post)
    async with Orchestrator(_settings(url)) as orch:
        task = asyncio.create_task(orch.start_run(RunRequest(symbols=SIM)))
        async with asyncio.timeout(HANG_GUARD_S):
            await hold.reached.wait()
            for _ in range(50):
                await asyncio.sleep(0)
            run_id = next(iter(orch.active))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    post.body = pre.body = None  # the "restarted process" no longer blocks
    async with Orchestrator(_settings(url)) as orch:
        assert orch.repository is not None
        stored = await orch.repository.get_run(run_id)
        # The killed process released its lease on the way out, so the run reads `interrupted`.
        assert stored is not None and stored.status is RunStatus.INTERRUPTED
        async with asyncio.timeout(HANG_GUARD_S):
            resumed = await orch.resume_run(run_id)
    assert resumed.run.status is RunStatus.COMPLETED
    return barrier, post, resumed.results, run_id


async def test_resume_after_a_crash_before_the_barrier_runs_it_once_with_everyone(
    database_url: str, register_stages: Callable[..., Any]
) -> None:
    barrier, _, results, _ = await _crash_then_resume(database_url, register_stages, "pre")
    assert barrier.seen == [SIM]  # never ran before the crash; after it, with every symbol
    got = by_symbol(results)
    assert [got[s].extras["rank"]["rank"] for s in SIM] == list(range(len(SIM)))
    assert all(r.status is SymbolStatus.SUCCEEDED for r in results)


async def test_resume_after_a_crash_past_the_barrier_does_not_rerun_it(
    database_url: str, register_stages: Callable[..., Any]
) -> None:
    barrier, post, results, _ = await _crash_then_resume(database_url, register_stages, "post")
    assert barrier.seen == [SIM]  # the run before the crash; the resume continued after it
    assert SIM[-1] in post.calls
    got = by_symbol(results)
    assert [got[s].extras["rank"]["rank"] for s in SIM] == list(range(len(SIM)))
    assert all([s.stage for s in r.stages] == PIPELINE for r in results)


async def test_cancel_at_the_barrier_lets_it_finish_then_cancels_the_rest(
    sqlite_repository: Repository, clock: FakeClock
) -> None:
    engine_ref: list[Any] = []

    async def cancel_inside(ctx: StageContext, items: Sequence[WorkItem]) -> Any:
        engine_ref[0].cancel()  # a Ctrl-C while the barrier is running
        await asyncio.sleep(0)
        return None

    post = FnStage("post")
    engine = make_engine(
        [FnStage("pre"), Barrier(body=cancel_inside), post], repository=sqlite_repository, clock=clock
    )
    engine_ref.append(engine)
    run, starts = await start(engine, SIM)
    async with asyncio.timeout(HANG_GUARD_S):
        run, results = await engine.run(run, starts)
    assert run.status is RunStatus.CANCELLED and post.calls == []
    assert all(r.status is SymbolStatus.CANCELLED for r in results)
    assert all([s.stage for s in r.stages] == ["pre", "rank"] for r in results)
    # The barrier's work is checkpointed: a resume continues after it.
    checkpoints = await sqlite_repository.load_checkpoints(run.id)
    assert all([c.stage for c in rows] == ["pre", "rank"] for rows in checkpoints.values())


async def test_resume_of_a_run_cancelled_at_the_barrier_continues_after_it(
    database_url: str, register_stages: Callable[..., Any], tmp_path: Path
) -> None:
    orch_ref: list[Orchestrator] = []
    calls = {"n": 0}

    async def cancel_first_time(ctx: StageContext, items: Sequence[WorkItem]) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            engine = orch_ref[0].engine
            assert engine is not None
            engine.cancel()
        return None

    barrier = Barrier(body=cancel_first_time)
    post = FnStage("post")
    register_stages(pre=lambda: FnStage("pre"), rank=lambda: barrier, post=lambda: post)
    async with Orchestrator(_settings(database_url)) as orch:
        orch_ref.append(orch)
        cancelled = await orch.start_run(RunRequest(symbols=SIM))
        assert cancelled.run.status is RunStatus.CANCELLED and post.calls == []
        resumed = await orch.resume_run(cancelled.run.id)
    assert resumed.run.status is RunStatus.COMPLETED and calls["n"] == 1
    assert sorted(post.calls) == sorted(SIM)
    assert all(r.status is SymbolStatus.SUCCEEDED for r in resumed.results)


async def test_resume_finishes_a_symbol_whose_every_stage_was_checkpointed_but_not_its_result() -> None:
    # A kill between a symbol's last checkpoint and its result write leaves no stage to run; the resumed
    # run must still finish it (it once ended such a symbol `cancelled` in a `completed` run).
    engine = make_engine([FnStage("pre"), Barrier(), FnStage("post")], clock=FakeClock())
    run, starts = await start(engine, SYMBOLS)
    done = starts[0]
    done.next_stage = len(engine.stages)
    _, results = await engine.run(run, starts)
    assert {r.symbol: r.status for r in results} == dict.fromkeys(SYMBOLS, SymbolStatus.SUCCEEDED)
