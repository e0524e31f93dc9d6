"""Contained stages: nothing a stage raises or returns can end the run, lose its symbol or corrupt
what the engine records about it.

Any exception (``BaseException`` subclasses included) fails the stage; output that is not a valid
``StageOutput`` for the item, or not JSON-serialisable, fails it too; a stage mutating the item it was
handed cannot change checkpoints, dead letters or retries; each symbol is counted once whatever
bookkeeping write fails; a failing dependency opens its breaker; a bulkhead wait is not a slow call.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.engines.helpers import FnStage, make_engine, policy, run_symbols, stage_of, start

from jax_assistant.config import Settings
from jax_assistant.domain import Event, RunStatus, StageStatus, SymbolResult, SymbolStatus
from jax_assistant.observability.metrics import NullMetrics
from jax_assistant.orchestrator import Orchestrator
from jax_assistant.pipeline.base import StageContext, StageOutput, WorkItem
from jax_assistant.pipeline.policy import BreakerConfig, BulkheadConfig, ResilienceConfig
from jax_assistant.pipeline.resilience import BreakerState, FakeClock, ResilienceRegistry
from jax_assistant.storage import Repository
from jax_assistant.storage.repository import DeadLetterWrite, SymbolResultWrite, WriteOp

SYMBOLS = ["AAA", "BBB", "CCC", "DDD"]


class Custom(BaseException):
    """A BaseException subclass that is neither Exception nor one of the interpreter's own."""


RAISED: list[tuple[BaseException, str]] = [
    (SystemExit(3), "SystemExit: 3"),
    (KeyboardInterrupt("ctrl-c from stage code"), "KeyboardInterrupt: ctrl-c from stage code"),
    (GeneratorExit("gen"), "GeneratorExit: gen"),
    (Custom("odd"), "Custom: odd"),
]


def _raise_for_bbb(exc: BaseException) -> Any:
    async def body(ctx: StageContext, item: WorkItem) -> None:
        if item.symbol == "BBB":
            raise exc

    return body


@pytest.mark.parametrize(("exc", "expected"), RAISED, ids=[type(e).__name__ for e, _ in RAISED])
async def test_a_base_exception_fails_only_its_symbol(
    sqlite_repository: Repository, clock: FakeClock, exc: BaseException, expected: str
) -> None:
    engine = make_engine(
        [FnStage("first"), FnStage("bad", _raise_for_bbb(exc)), FnStage("last")],
        repository=sqlite_repository,
        clock=clock,
        concurrency=2,
    )
    run, results = await run_symbols(engine, SYMBOLS)

    assert run.status is RunStatus.COMPLETED
    assert results["BBB"].status is SymbolStatus.FAILED and results["BBB"].error == f"bad: {expected}"
    assert all(results[s].status is SymbolStatus.SUCCEEDED for s in SYMBOLS if s != "BBB")
    (letter,) = await sqlite_repository.list_dead_letters(run_id=run.id)
    assert (letter.symbol, letter.stage, letter.error) == ("BBB", "bad", f"bad: {expected}")
    stored = await sqlite_repository.get_run(run.id)
    assert stored is not None and stored.status is RunStatus.COMPLETED


@pytest.mark.parametrize(("exc", "expected"), RAISED, ids=[type(e).__name__ for e, _ in RAISED])
async def test_a_base_exception_in_an_optional_stage_degrades(
    clock: FakeClock, exc: BaseException, expected: str
) -> None:
    engine = make_engine(
        [FnStage("bad", _raise_for_bbb(exc), policy(required=False)), FnStage("last")], clock=clock
    )
    _, results = await run_symbols(engine, SYMBOLS)
    bbb = results["BBB"]
    assert bbb.status is SymbolStatus.DEGRADED and stage_of(bbb, "bad").error == expected
    assert bbb.extras == {"last": "BBB"}


async def test_a_system_exit_is_not_retried_and_counts_as_a_breaker_failure(clock: FakeClock) -> None:
    registry = ResilienceRegistry(
        ResilienceConfig(breakers={"dep": BreakerConfig(sliding_window_size=2, minimum_number_of_calls=2)}),
        clock,
    )

    async def exits(ctx: StageContext, item: WorkItem) -> None:
        raise SystemExit("bye")

    bad = FnStage("bad", exits, policy(breaker="dep", retry={"attempts": 3, "retry_on": ["TransientError"]}))
    engine = make_engine([bad], clock=clock, resilience=registry, concurrency=1)
    _, results = await run_symbols(engine, SYMBOLS)
    assert stage_of(results["AAA"], "bad").attempts == 1
    assert registry.breaker("dep").state is BreakerState.OPEN
    assert [stage_of(results[s], "bad").status for s in SYMBOLS] == [
        StageStatus.FAILED,
        StageStatus.FAILED,
        StageStatus.SHORT_CIRCUITED,
        StageStatus.SHORT_CIRCUITED,
    ]


# ----------------------------------------------------------------------------- bad output


async def _returns_none(ctx: StageContext, item: WorkItem) -> Any:
    return StageOutputLike(None)


class StageOutputLike:
    """Marks what FnStage should return verbatim (FnStage wraps plain values itself)."""

    def __init__(self, value: Any) -> None:
        self.value = value


class Verbatim(FnStage):
    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        self.calls.append(item.symbol)
        assert self.body is not None
        out = await self.body(ctx, item)
        return out.value if isinstance(out, StageOutputLike) else out  # type: ignore[no-any-return]


def _verbatim(value: Any) -> Any:
    async def body(ctx: StageContext, item: WorkItem) -> Any:
        return StageOutputLike(value(item) if callable(value) else value)

    return body


BAD_OUTPUTS: list[tuple[Any, str]] = [
    (None, "bad output: returned None, not a StageOutput"),
    ({"item": {}}, "bad output: returned a dict, not a StageOutput"),
    (lambda item: item, "bad output: returned a WorkItem, not a StageOutput"),
    (
        lambda item: StageOutput(item=item.model_copy(update={"symbol": "ZZZ"})),
        "bad output: returned the item of 'ZZZ'",
    ),
    (
        lambda item: StageOutput(item=item.model_copy(update={"run_id": "run_x"})),
        "in run 'run_x'",
    ),
    (lambda item: StageOutput.model_construct(item={"symbol": "AAA"}), "not a WorkItem"),
    (
        lambda item: StageOutput(item=item.model_copy(update={"events": "junk"})),
        "is not JSON-serialisable",
    ),
    (
        lambda item: StageOutput(item=item.model_copy(update={"extras": {"conn": object()}})),
        "is not JSON-serialisable: Unable to serialize unknown type",
    ),
]


@pytest.mark.parametrize(("value", "expected"), BAD_OUTPUTS)
async def test_bad_output_fails_the_stage_with_a_reason_and_a_dead_letter(
    sqlite_repository: Repository, clock: FakeClock, value: Any, expected: str
) -> None:
    engine = make_engine(
        [FnStage("first"), Verbatim("bad", _verbatim(value))], repository=sqlite_repository, clock=clock
    )
    run, results = await run_symbols(engine, SYMBOLS)
    assert run.status is RunStatus.COMPLETED and run.counts["failed"] == len(SYMBOLS)
    for sym in SYMBOLS:
        r = results[sym]
        assert r.status is SymbolStatus.FAILED and r.error is not None and expected in r.error
    letters = await sqlite_repository.list_dead_letters(run_id=run.id)
    assert sorted(d.symbol for d in letters) == SYMBOLS
    stored = {r.symbol: r.status for r in await sqlite_repository.get_symbol_results(run.id)}
    assert stored == {s: SymbolStatus.FAILED for s in SYMBOLS}


@pytest.mark.parametrize(("value", "expected"), BAD_OUTPUTS[:2] + BAD_OUTPUTS[-1:])
async def test_bad_output_of_an_optional_stage_degrades(clock: FakeClock, value: Any, expected: str) -> None:
    engine = make_engine(
        [FnStage("first"), Verbatim("bad", _verbatim(value), policy(required=False)), FnStage("last")],
        clock=clock,
    )
    run, results = await run_symbols(engine, SYMBOLS)
    assert run.counts["degraded"] == len(SYMBOLS)
    for sym in SYMBOLS:
        r = results[sym]
        assert r.status is SymbolStatus.DEGRADED and expected in (stage_of(r, "bad").error or "")
        assert r.extras == {"first": sym, "last": sym}


async def test_json_like_extras_are_normalised_as_documented(
    sqlite_repository: Repository, clock: FakeClock
) -> None:
    """A set becomes a list and NaN becomes null, in the result and in storage alike."""

    async def odd(ctx: StageContext, item: WorkItem) -> StageOutput:
        return StageOutput(
            item=item.model_copy(update={"extras": {"tags": {"b"}, "score": math.nan, "n": 1}})
        )

    engine = make_engine([FnStage("odd", odd)], repository=sqlite_repository, clock=clock)
    run, results = await run_symbols(engine, ["AAA"])
    assert results["AAA"].status is SymbolStatus.SUCCEEDED
    assert results["AAA"].extras == {"tags": ["b"], "score": None, "n": 1}
    (stored,) = await sqlite_repository.get_symbol_results(run.id)
    assert stored.extras == {"tags": ["b"], "score": None, "n": 1}


# ----------------------------------------------------------------------------- mutation of the input


def _event(symbol: str) -> Event:
    return Event(id=f"ev_{symbol}", symbol=symbol, type="gap_open", time=datetime(2024, 1, 2, tzinfo=UTC))


async def _seed(ctx: StageContext, item: WorkItem) -> StageOutput:
    return StageOutput(item=item.model_copy(update={"extras": {"seed": {"n": 1, "tags": ["a"]}}}))


async def _mutate_then_fail(ctx: StageContext, item: WorkItem) -> None:
    item.extras["seed"]["n"] = 999
    item.extras["seed"]["tags"].append("mutated")
    item.extras["junk"] = True
    item.completed_stages.clear()
    raise RuntimeError(f"broke on attempt {ctx.attempt}")


async def test_a_stage_mutating_its_input_cannot_corrupt_the_dead_letter(
    sqlite_repository: Repository, clock: FakeClock
) -> None:
    engine = make_engine(
        [FnStage("seed", _seed), FnStage("bad", _mutate_then_fail)], repository=sqlite_repository, clock=clock
    )
    run, results = await run_symbols(engine, ["AAA"])
    assert results["AAA"].status is SymbolStatus.FAILED
    (letter,) = await sqlite_repository.list_dead_letters(run_id=run.id)
    before = WorkItem.model_validate(letter.item)
    assert before.extras == {"seed": {"n": 1, "tags": ["a"]}} and before.completed_stages == ["seed"]
    # The failed stage's checkpoint holds the same untouched item.
    rows = (await sqlite_repository.load_checkpoints(run.id))["AAA"]
    assert [r.item["extras"] for r in rows] == [{"seed": {"n": 1, "tags": ["a"]}}] * 2


async def test_an_optional_stage_mutating_its_input_leaves_the_symbol_unchanged(clock: FakeClock) -> None:
    seen: list[dict[str, Any]] = []

    async def last(ctx: StageContext, item: WorkItem) -> None:
        seen.append(item.extras)

    engine = make_engine(
        [
            FnStage("seed", _seed),
            FnStage("bad", _mutate_then_fail, policy(required=False)),
            FnStage("last", last),
        ],
        clock=clock,
    )
    _, results = await run_symbols(engine, ["AAA"])
    assert results["AAA"].status is SymbolStatus.DEGRADED
    assert seen == [{"seed": {"n": 1, "tags": ["a"]}}]
    assert [s.stage for s in results["AAA"].stages] == ["seed", "bad", "last"]


async def test_each_retry_gets_the_item_as_it_was_before_the_stage(clock: FakeClock) -> None:
    seen: list[dict[str, Any]] = []

    async def flaky(ctx: StageContext, item: WorkItem) -> None:
        seen.append({k: (dict(v) if isinstance(v, dict) else v) for k, v in item.extras.items()})
        item.extras["seed"]["n"] += 1
        if ctx.attempt < 3:
            raise ConnectionError("again")

    engine = make_engine(
        [FnStage("seed", _seed), FnStage("flaky", flaky, policy(retry={"attempts": 3, "jitter": 0}))],
        clock=clock,
    )
    _, results = await run_symbols(engine, ["AAA"])
    assert results["AAA"].status is SymbolStatus.SUCCEEDED
    assert [s["seed"]["n"] for s in seen] == [1, 1, 1]


class SlowWrites(Repository):
    """Real storage whose commits happen a few loop turns after they are queued."""

    def __init__(self, inner: Repository) -> None:
        super().__init__(inner._db)

    async def write_batch(self, ops: Sequence[WriteOp]) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        await super().write_batch(ops)


async def test_a_later_mutation_cannot_change_a_queued_checkpoint(
    sqlite_repository: Repository, clock: FakeClock
) -> None:
    tasks: set[asyncio.Task[None]] = set()

    async def leaky(ctx: StageContext, item: WorkItem) -> StageOutput:
        out = item.model_copy(update={"extras": {"leaky": {"n": 1}}, "events": [_event(item.symbol)]})

        async def later() -> None:  # e.g. a cache the stage keeps, updated after it returned
            out.extras["leaky"]["n"] = 999
            out.events.clear()

        tasks.add(asyncio.get_running_loop().create_task(later()))
        return StageOutput(item=out)

    engine = make_engine([FnStage("leaky", leaky)], repository=SlowWrites(sqlite_repository), clock=clock)
    run, _ = await run_symbols(engine, ["AAA"])
    (row,) = (await sqlite_repository.load_checkpoints(run.id))["AAA"]
    assert row.item["extras"] == {"leaky": {"n": 1}}
    assert [e["id"] for e in row.item["events"]] == ["ev_AAA"]


# ----------------------------------------------------------------------------- counted exactly once


class CountingMetrics(NullMetrics):
    def __init__(self) -> None:
        self.finished: Counter[str] = Counter()

    def symbol_finished(self, status: str) -> None:
        self.finished[status] += 1


class FailingWrites(Repository):
    """Real storage where every batch holding one of ``kinds`` for ``symbol`` fails."""

    def __init__(self, inner: Repository, symbol: str, kinds: tuple[type, ...]) -> None:
        super().__init__(inner._db)
        self.symbol, self.kinds = symbol, kinds

    async def write_batch(self, ops: Sequence[WriteOp]) -> None:
        for op in ops:
            sym = op.result.symbol if isinstance(op, SymbolResultWrite) else getattr(op, "symbol", None)
            if isinstance(op, self.kinds) and sym == self.symbol:
                raise OSError("disk full")
        await super().write_batch(ops)


class Progress:
    def __init__(self) -> None:
        self.done: list[str] = []

    def started(self, total: int) -> None:
        pass

    def symbol_done(self, result: SymbolResult) -> None:
        self.done.append(result.symbol)


@pytest.mark.parametrize("kinds", [(DeadLetterWrite,), (SymbolResultWrite,)], ids=["dead-letter", "result"])
async def test_a_failing_bookkeeping_write_counts_the_symbol_once(
    sqlite_repository: Repository, clock: FakeClock, kinds: tuple[type, ...]
) -> None:
    metrics = CountingMetrics()
    engine = make_engine(
        [FnStage("first"), FnStage("bad", _raise_for_bbb(RuntimeError("boom")))],
        repository=FailingWrites(sqlite_repository, "BBB", kinds),
        clock=clock,
        metrics=metrics,
    )
    run, starts = await start(engine, SYMBOLS)
    progress = Progress()
    run, _ = await engine.run(run, starts, progress=progress)
    assert sorted(progress.done) == SYMBOLS
    assert sum(engine.status.done.values()) == len(SYMBOLS)
    assert sum(metrics.finished.values()) == len(SYMBOLS) and metrics.finished["failed"] == 1
    assert run.counts["failed"] == 1 and run.counts["symbols"] == len(SYMBOLS)


# ----------------------------------------------------------------------------- breakers


async def test_a_failing_dependency_opens_its_breaker(clock: FakeClock) -> None:
    registry = ResilienceRegistry(
        ResilienceConfig(
            breakers={
                "quotes": BreakerConfig(
                    sliding_window_size=3, minimum_number_of_calls=3, failure_rate_threshold=50
                )
            }
        ),
        clock,
    )

    async def down(ctx: StageContext, item: WorkItem) -> None:
        raise ConnectionError("quotes service refused the connection")  # fails at once: not slow

    stage = FnStage("quotes", down, policy(breaker="quotes", required=False))
    engine = make_engine([stage, FnStage("last")], clock=clock, resilience=registry, concurrency=1)
    symbols = [f"S{i}" for i in range(6)]
    _, results = await run_symbols(engine, symbols)

    statuses = [stage_of(results[s], "quotes").status for s in symbols]
    assert statuses == [StageStatus.FAILED] * 3 + [StageStatus.SHORT_CIRCUITED] * 3
    assert stage.calls == symbols[:3]  # short-circuited calls never reach the dependency
    assert registry.breaker("quotes").state is BreakerState.OPEN
    assert all(r.status is SymbolStatus.DEGRADED for r in results.values())


async def test_the_slow_call_timer_excludes_the_bulkhead_wait(clock: FakeClock) -> None:
    registry = ResilienceRegistry(
        ResilienceConfig(
            breakers={
                "db": BreakerConfig(
                    sliding_window_size=2,
                    minimum_number_of_calls=2,
                    slow_call_duration_threshold_s=2.0,
                    slow_call_rate_threshold=100,
                )
            },
            bulkheads={"db": BulkheadConfig(max_concurrent=1)},
        ),
        clock,
    )

    async def query(ctx: StageContext, item: WorkItem) -> None:
        if item.symbol == "AAA":
            for _ in range(20):  # let BBB start its call and queue for the only slot, which AAA holds
                await asyncio.sleep(0)
            clock.advance(5.0)  # AAA is slow; BBB spends those 5 s waiting for the slot

    stage = FnStage("db", query, policy(breaker="db", bulkhead="db"))
    engine = make_engine([stage], clock=clock, resilience=registry, concurrency=2)
    _, results = await run_symbols(engine, ["AAA", "BBB", "CCC"])
    # AAA was slow; BBB waited 5 s for the slot but its own call was instant. Counting the wait would
    # make 2/2 calls slow and open the breaker, short-circuiting CCC.
    assert registry.breaker("db").state is BreakerState.CLOSED
    assert all(r.status is SymbolStatus.SUCCEEDED for r in results.values())


async def test_a_retried_letter_of_a_scribbling_stage_succeeds_with_the_real_item(
    register_stages: Callable[..., None], tmp_path: Path
) -> None:
    """The stage clears the item it is handed and fails; the retry must start from the item as it was."""
    healed = {"on": False}

    async def compute(ctx: StageContext, item: WorkItem) -> StageOutput:
        return StageOutput(item=item.model_copy(update={"extras": {"value": sum(map(ord, item.symbol))}}))

    async def scribble(ctx: StageContext, item: WorkItem) -> None:
        if not healed["on"]:
            item.extras.clear()
            item.completed_stages.clear()
            raise RuntimeError("dependency refused")

    async def finalize(ctx: StageContext, item: WorkItem) -> StageOutput:
        return StageOutput(
            item=item.model_copy(update={"extras": {**item.extras, "double": 2 * item.extras["value"]}})
        )

    register_stages(
        compute=lambda: FnStage("compute", compute),
        scribble=lambda: FnStage("scribble", scribble),
        finalize=lambda: FnStage("finalize", finalize),
    )
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'retry.db'}",
        pipeline=["compute", "scribble", "finalize"],
        metrics_enabled=False,
    )
    async with Orchestrator(settings) as orch:
        assert orch.repository is not None
        engine = make_engine(orch.stages(), repository=orch.repository)
        run, results = await run_symbols(engine, ["AAA", "BBB"])
        assert {r.status for r in results.values()} == {SymbolStatus.FAILED}
        healed["on"] = True
        retry = await orch.retry_dead_letters(run_id=run.id)
    got = {r.symbol: r for r in retry.results}
    for sym in ("AAA", "BBB"):
        assert got[sym].status is SymbolStatus.SUCCEEDED, got[sym].error
        assert got[sym].extras["double"] == 2 * sum(map(ord, sym))
        assert [s.stage for s in got[sym].stages] == ["scribble", "finalize"]
