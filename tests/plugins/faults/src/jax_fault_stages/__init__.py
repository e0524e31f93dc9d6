"""Fault-injection stages for jax-assistant's tests.

Each per-symbol stage misbehaves for the symbols listed in ``JAX_FAULT_SYMBOLS_<STAGE>`` (e.g.
``JAX_FAULT_SYMBOLS_FAULT_EXIT``), else in ``JAX_FAULT_SYMBOLS`` (comma-separated; unset = every
symbol), and passes the others through untouched, so one run shows both the contained failure and its
neighbours carrying on. ``fault_slow`` sleeps ``JAX_FAULT_SLOW_S`` seconds and touches
``JAX_FAULT_STARTED`` (a file path) when it starts, so a test knows a stage is in flight.
``fault_rank`` is a well-behaved run stage (a barrier); ``fault_barrier_exit`` is one that raises
``SystemExit``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from jax_assistant.pipeline.base import (
    BaseRunStage,
    BaseStage,
    RunStageOutput,
    StageContext,
    StageOutput,
    WorkItem,
)
from jax_assistant.pipeline.policy import StagePolicy


class CustomFault(BaseException):
    """Neither an Exception nor one of the interpreter's own BaseExceptions."""


def _targeted(stage: str, item: WorkItem) -> bool:
    raw = os.environ.get(f"JAX_FAULT_SYMBOLS_{stage.upper()}", os.environ.get("JAX_FAULT_SYMBOLS", ""))
    return not raw or item.symbol in {s.strip() for s in raw.split(",")}


class _Fault(BaseStage):
    default_policy: ClassVar[StagePolicy] = StagePolicy(timeout_s=10.0)

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        if _targeted(self.name, item):
            return self.misbehave(item)  # type: ignore[no-any-return]
        return StageOutput(item=item)

    def misbehave(self, item: WorkItem) -> Any:
        raise NotImplementedError


class SystemExitStage(_Fault):
    name = "fault_exit"

    def misbehave(self, item: WorkItem) -> Any:
        raise SystemExit(f"fault_exit for {item.symbol}")


class KeyboardInterruptStage(_Fault):
    name = "fault_interrupt"

    def misbehave(self, item: WorkItem) -> Any:
        raise KeyboardInterrupt(f"fault_interrupt for {item.symbol}")


class GeneratorExitStage(_Fault):
    name = "fault_genexit"

    def misbehave(self, item: WorkItem) -> Any:
        raise GeneratorExit(f"fault_genexit for {item.symbol}")


class CustomBaseExceptionStage(_Fault):
    name = "fault_base"

    def misbehave(self, item: WorkItem) -> Any:
        raise CustomFault(f"fault_base for {item.symbol}")


class GarbageStage(_Fault):
    name = "fault_garbage"

    def misbehave(self, item: WorkItem) -> Any:
        return {"status": "ok", "item": "not really"}


class UnserialisableStage(_Fault):
    name = "fault_unserialisable"

    def misbehave(self, item: WorkItem) -> Any:
        return StageOutput(item=item.model_copy(update={"extras": {**item.extras, "handle": object()}}))


class MutateStage(_Fault):
    name = "fault_mutate"

    def misbehave(self, item: WorkItem) -> Any:
        item.extras["fault_mutate"] = "scribbled"
        item.events.clear()
        item.completed_stages.clear()
        raise RuntimeError(f"fault_mutate broke {item.symbol} after scribbling on it")


class SlowStage(BaseStage):
    name = "fault_slow"
    default_policy: ClassVar[StagePolicy] = StagePolicy(timeout_s=60.0)

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        started = os.environ.get("JAX_FAULT_STARTED")
        if started:
            await asyncio.to_thread(Path(started).touch)
        await asyncio.sleep(float(os.environ.get("JAX_FAULT_SLOW_S", "0.2")))
        return StageOutput(item=item.model_copy(update={"extras": {**item.extras, "fault_slow": True}}))


class RankStage(BaseRunStage):
    """A run stage: ranks the watchlist by number of events (ties keep the run order)."""

    name = "fault_rank"

    async def run_all(self, ctx: StageContext, items: Sequence[WorkItem]) -> RunStageOutput:
        order = sorted(range(len(items)), key=lambda i: -len(items[i].events))
        rank = {items[i].symbol: n for n, i in enumerate(order)}
        return RunStageOutput(
            items=[
                i.model_copy(
                    update={"extras": {**i.extras, "fault_rank": {"rank": rank[i.symbol], "of": len(items)}}}
                )
                for i in items
            ]
        )


class BarrierExitStage(BaseRunStage):
    name = "fault_barrier_exit"

    async def run_all(self, ctx: StageContext, items: Sequence[WorkItem]) -> RunStageOutput:
        raise SystemExit("fault_barrier_exit")
