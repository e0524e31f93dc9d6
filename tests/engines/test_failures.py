"""Stage failures through the real engine and real storage: exceptions, hangs, retries, degraded output.

Each symbol is isolated: whatever one symbol's stage does ends up in that symbol's StageResult (and,
for a required stage, in the dead-letter table); the other symbols carry on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from tests.engines.helpers import BatchRecorder, FnStage, make_engine, policy, run_symbols, stage_of

from jax_assistant.domain import RunStatus, StageStatus, SymbolStatus
from jax_assistant.pipeline.base import StageContext, StageOutput, TransientError, WorkItem
from jax_assistant.pipeline.resilience import FakeClock
from jax_assistant.storage import Repository
from jax_assistant.storage.repository import CheckpointWrite, DeadLetterWrite, SymbolResultWrite, WriteOp

SYMBOLS = ["AAA", "BBB", "CCC", "DDD"]


async def _boom_for_bbb(ctx: StageContext, item: WorkItem) -> None:
    if item.symbol == "BBB":
        raise RuntimeError(f"kaboom on attempt {ctx.attempt}")


# ----------------------------------------------------------------------------- 1. a stage that raises


async def test_raising_required_stage_fails_only_its_symbol_and_dead_letters_it(
    repository: Repository, clock: FakeClock
) -> None:
    first = FnStage("first")
    boom = FnStage(
        "boom",
        _boom_for_bbb,
        policy(retry={"attempts": 2, "retry_on": ["RuntimeError"], "initial_backoff_s": 0.5, "jitter": 0}),
    )
    last = FnStage("last")
    engine = make_engine([first, boom, last], repository=repository, clock=clock, concurrency=2)

    run, results = await run_symbols(engine, SYMBOLS)

    assert run.status is RunStatus.COMPLETED
    assert run.counts["failed"] == 1 and run.counts["succeeded"] == 3 and run.counts["symbols"] == 4
    failed = results["BBB"]
    assert failed.status is SymbolStatus.FAILED
    assert failed.error is not None and "boom" in failed.error and "kaboom on attempt 2" in failed.error
    assert [s.stage for s in failed.stages] == ["first", "boom"]  # `last` never ran for it
    boom_result = stage_of(failed, "boom")
    assert boom_result.status is StageStatus.FAILED and boom_result.attempts == 2
    assert boom_result.error == "RuntimeError: kaboom on attempt 2"
    assert "BBB" not in last.calls and boom.calls.count("BBB") == 2
    assert clock.sleeps == [0.5]  # the one backoff, in virtual time
    for sym in ("AAA", "CCC", "DDD"):
        assert results[sym].status is SymbolStatus.SUCCEEDED, results[sym]
        assert [s.status for s in results[sym].stages] == [StageStatus.OK] * 3

    # The dead letter: run id, stage, error, attempts and the work item as it was before the stage.
    (letter,) = await repository.list_dead_letters(run_id=run.id)
    assert (letter.run_id, letter.symbol, letter.stage, letter.attempts) == (run.id, "BBB", "boom", 2)
    assert "kaboom on attempt 2" in letter.error and letter.status == "open"
    item = WorkItem.model_validate(letter.item)
    assert item.symbol == "BBB" and item.run_id == run.id
    assert item.completed_stages == ["first"] and item.extras == {"first": "BBB"}

    # Storage agrees with what the engine returned.
    stored = {r.symbol: r for r in await repository.get_symbol_results(run.id)}
    assert {s: r.status for s, r in stored.items()} == {s: r.status for s, r in results.items()}
    assert stored["BBB"].error == failed.error
    assert (await repository.get_run(run.id)).counts == run.counts  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- 2. a stage that hangs


async def _hang(ctx: StageContext, item: WorkItem) -> None:
    if item.symbol in ("BBB", "DDD"):
        await asyncio.sleep(3600)


@pytest.mark.parametrize("required", [False, True], ids=["optional", "required"])
async def test_hanging_stage_times_out(repository: Repository, clock: FakeClock, required: bool) -> None:
    hang = FnStage("hang", _hang, policy(timeout_s=0.05, required=required))
    after = FnStage("after")
    engine = make_engine([FnStage("first"), hang, after], repository=repository, clock=clock, concurrency=4)

    run, results = await run_symbols(engine, SYMBOLS)

    assert run.status is RunStatus.COMPLETED
    for sym in ("BBB", "DDD"):
        r = results[sym]
        timed_out = stage_of(r, "hang")
        assert timed_out.status is StageStatus.TIMED_OUT
        assert timed_out.error == "exceeded its 0.05s timeout"
        assert timed_out.reason is not None and "0.05s" in timed_out.reason
        if required:
            assert r.status is SymbolStatus.FAILED
            assert r.error is not None and "hang" in r.error and "0.05s timeout" in r.error
            assert sym not in after.calls
        else:
            assert r.status is SymbolStatus.DEGRADED and r.error is None
            assert timed_out.reason.startswith("optional stage timed_out")
            # Later stages still ran, on the item as it was before the failed stage.
            assert stage_of(r, "after").status is StageStatus.OK and sym in after.calls
    for sym in ("AAA", "CCC"):
        assert results[sym].status is SymbolStatus.SUCCEEDED
    letters = {d.symbol: d for d in await repository.list_dead_letters(run_id=run.id)}
    if required:
        assert set(letters) == {"BBB", "DDD"}
        assert all(d.stage == "hang" and "timeout" in d.error for d in letters.values())
    else:
        assert letters == {}
    # The degraded/failed outcome and the timeout reason survive in storage.
    stored = {r.symbol: r for r in await repository.get_symbol_results(run.id)}
    assert stored["BBB"].status is results["BBB"].status
    assert stage_of(stored["BBB"], "hang").status is StageStatus.TIMED_OUT


# ----------------------------------------------------------------------------- 3. retries


async def test_transient_errors_are_retried_with_backoff_until_success(clock: FakeClock) -> None:
    seen: list[tuple[int, float]] = []

    async def flaky(ctx: StageContext, item: WorkItem) -> None:
        seen.append((ctx.attempt, clock.monotonic()))
        if ctx.attempt < 3:
            raise TransientError("upstream hiccup")

    stage = FnStage(
        "flaky", flaky, policy(retry={"attempts": 5, "initial_backoff_s": 1.0, "multiplier": 2, "jitter": 0})
    )
    engine = make_engine([stage], clock=clock)

    _, results = await run_symbols(engine, ["AAA"])

    result = stage_of(results["AAA"], "flaky")
    assert result.status is StageStatus.OK and result.attempts == 3 and result.error is None
    assert results["AAA"].status is SymbolStatus.SUCCEEDED
    assert clock.sleeps == [1.0, 2.0]  # exponential backoff between the three attempts
    assert seen == [(1, 1000.0), (2, 1001.0), (3, 1003.0)]


async def test_transient_errors_exhaust_the_attempts(clock: FakeClock) -> None:
    async def always(ctx: StageContext, item: WorkItem) -> None:
        raise TransientError("still down")

    stage = FnStage("flaky", always, policy(retry={"attempts": 3, "initial_backoff_s": 0.1, "jitter": 0}))
    _, results = await run_symbols(make_engine([stage], clock=clock), ["AAA"])

    result = stage_of(results["AAA"], "flaky")
    assert result.status is StageStatus.FAILED and result.attempts == 3
    assert result.error == "TransientError: still down"
    assert len(stage.calls) == 3 and len(clock.sleeps) == 2


async def test_a_value_error_is_not_retried(clock: FakeClock) -> None:
    async def bad(ctx: StageContext, item: WorkItem) -> None:
        raise ValueError("bad input")

    stage = FnStage("strict", bad, policy(retry={"attempts": 5, "initial_backoff_s": 0.1}))
    _, results = await run_symbols(make_engine([stage], clock=clock), ["AAA"])

    result = stage_of(results["AAA"], "strict")
    assert result.status is StageStatus.FAILED and result.attempts == 1
    assert result.error == "ValueError: bad input"
    assert stage.calls == ["AAA"] and clock.sleeps == []
    assert results["AAA"].status is SymbolStatus.FAILED


async def test_retry_after_is_honoured_in_virtual_time(clock: FakeClock) -> None:
    calls: list[float] = []

    async def throttled(ctx: StageContext, item: WorkItem) -> None:
        calls.append(clock.monotonic())
        if ctx.attempt == 1:
            raise TransientError("429 slow down", retry_after=7.5)

    stage = FnStage(
        "throttled", throttled, policy(retry={"attempts": 2, "initial_backoff_s": 0.1, "jitter": 0})
    )
    _, results = await run_symbols(make_engine([stage], clock=clock), ["AAA"])

    assert stage_of(results["AAA"], "throttled").attempts == 2
    assert clock.sleeps == [7.5]  # the server's Retry-After beats the 0.1 s backoff
    assert calls == [1000.0, 1007.5]


async def test_retry_after_longer_than_max_elapsed_gives_up_without_sleeping(clock: FakeClock) -> None:
    async def throttled(ctx: StageContext, item: WorkItem) -> None:
        raise TransientError("429", retry_after=120)

    stage = FnStage("throttled", throttled, policy(retry={"attempts": 5, "max_elapsed_s": 60}))
    _, results = await run_symbols(make_engine([stage], clock=clock), ["AAA"])

    result = stage_of(results["AAA"], "throttled")
    assert result.status is StageStatus.FAILED and result.attempts == 1
    assert clock.sleeps == []


# ----------------------------------------------------------------------------- degraded output


async def _degrade(ctx: StageContext, item: WorkItem) -> StageOutput:
    extras = {**item.extras, "enrich": "partial"}
    return StageOutput(
        item=item.model_copy(update={"extras": extras}), status="degraded", reason="stale feed"
    )


@pytest.mark.parametrize("required", [True, False], ids=["required", "optional"])
async def test_a_stage_returning_degraded_continues_and_keeps_its_output(
    sqlite_repository: Repository, clock: FakeClock, required: bool
) -> None:
    """docs/stages.md: `return status="degraded"` -> stage `degraded`, symbol continues, ends `degraded`.
    It is not a failure: no dead letter, and the stage's output item is kept."""
    enrich = FnStage("enrich", _degrade, policy(required=required))
    last = FnStage("last")
    engine = make_engine([FnStage("first"), enrich, last], repository=sqlite_repository, clock=clock)

    run, results = await run_symbols(engine, ["AAA"])

    r = results["AAA"]
    assert r.status is SymbolStatus.DEGRADED and r.error is None
    assert stage_of(r, "enrich").status is StageStatus.DEGRADED
    assert stage_of(r, "enrich").reason == "stale feed"
    assert stage_of(r, "last").status is StageStatus.OK
    assert await sqlite_repository.list_dead_letters(run_id=run.id) == []
    checkpoints = (await sqlite_repository.load_checkpoints(run.id))["AAA"]
    assert [c.stage for c in checkpoints] == ["first", "enrich", "last"]
    final = WorkItem.model_validate(checkpoints[-1].item)
    assert final.extras["enrich"] == "partial"  # the degraded stage's output was kept
    assert final.completed_stages == ["first", "enrich", "last"]


# ----------------------------------------------------------------------------- odd failures


async def _leaks_cancellation(ctx: StageContext, item: WorkItem) -> None:
    if item.symbol == "BBB":
        # Awaiting something another task cancelled (a shared in-flight request, a closed client...)
        # raises CancelledError inside the stage although nobody is cancelling the run.
        cancelled = asyncio.get_running_loop().create_future()
        cancelled.cancel()
        await cancelled


async def test_a_cancellation_raised_inside_a_stage_fails_only_its_symbol(
    sqlite_repository: Repository, clock: FakeClock
) -> None:
    leak = FnStage("leak", _leaks_cancellation)
    engine = make_engine([leak, FnStage("last")], repository=sqlite_repository, clock=clock, concurrency=2)

    async with asyncio.timeout(30):
        run, results = await run_symbols(engine, SYMBOLS)

    assert run.status is RunStatus.COMPLETED
    assert results["BBB"].status is SymbolStatus.FAILED
    assert stage_of(results["BBB"], "leak").error == "CancelledError: cancelled inside the stage"
    assert all(results[s].status is SymbolStatus.SUCCEEDED for s in ("AAA", "CCC", "DDD"))
    assert [d.symbol for d in await sqlite_repository.list_dead_letters(run_id=run.id)] == ["BBB"]


class CheckpointFails(Repository):
    """Real storage whose checkpoint write fails for one symbol (a storage fault mid-run)."""

    def __init__(self, inner: Repository, symbol: str) -> None:
        super().__init__(inner._db)
        self.symbol = symbol

    async def write_batch(self, ops: Sequence[WriteOp]) -> None:
        # Fails any batch holding this symbol's checkpoint: the engine's group commit must then
        # isolate the fault so only this symbol fails, not the neighbours sharing its batch.
        if any(isinstance(op, CheckpointWrite) and op.symbol == self.symbol for op in ops):
            raise OSError("disk I/O error")
        await super().write_batch(ops)


async def test_a_storage_fault_fails_only_the_symbol_it_hit(repository: Repository, clock: FakeClock) -> None:
    faulty = CheckpointFails(repository, "CCC")
    engine = make_engine([FnStage("first"), FnStage("second")], repository=faulty, clock=clock, concurrency=2)

    run, results = await run_symbols(engine, SYMBOLS)

    assert run.status is RunStatus.COMPLETED and run.counts["failed"] == 1
    failed = results["CCC"]
    assert failed.status is SymbolStatus.FAILED
    assert failed.error == "engine: OSError: disk I/O error"
    assert all(results[s].status is SymbolStatus.SUCCEEDED for s in ("AAA", "BBB", "DDD"))
    (letter,) = await repository.list_dead_letters(run_id=run.id)
    assert (letter.symbol, letter.stage) == ("CCC", "engine")
    # Checkpoints are written behind: the fault surfaces at the symbol's final write, so the item in the
    # dead letter is the one both stages finished (a retry continues after them, not from scratch).
    assert WorkItem.model_validate(letter.item).completed_stages == ["first", "second"]
    # The failed symbol's result was not stored as if it had succeeded.
    assert "CCC" not in {r.symbol for r in await repository.get_symbol_results(run.id)}


async def test_a_required_failure_is_stored_in_one_commit(repository: Repository, clock: FakeClock) -> None:
    """Checkpoint, dead letter and final result of a failed symbol commit together, so a crash can never
    keep the dead letter of a symbol whose failure was not recorded (a resume would then complete it)."""

    async def boom(ctx: StageContext, item: WorkItem) -> None:
        if item.symbol == "BBB":
            raise RuntimeError("boom")

    recorder = BatchRecorder(repository)
    engine = make_engine([FnStage("first"), FnStage("second", boom)], repository=recorder, clock=clock)
    run, results = await run_symbols(engine, SYMBOLS)
    assert results["BBB"].status is SymbolStatus.FAILED
    with_letter = [b for b in recorder.batches if any(isinstance(op, DeadLetterWrite) for op in b)]
    assert len(with_letter) == 1

    def symbol_of(op: WriteOp) -> str | None:
        return op.result.symbol if isinstance(op, SymbolResultWrite) else getattr(op, "symbol", None)

    kinds = {type(op) for op in with_letter[0] if symbol_of(op) == "BBB"}
    assert {CheckpointWrite, DeadLetterWrite, SymbolResultWrite} <= kinds
    (letter,) = await repository.list_dead_letters(run_id=run.id)
    assert (letter.symbol, letter.stage) == ("BBB", "second")
