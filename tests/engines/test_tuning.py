"""Process-wide GC tuning of the CLI: rarer collections during a run, none walking the heap at exit."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from jax_assistant.engines import tuning
from jax_assistant.engines.tuning import ONE_RUN_GEN0_THRESHOLD, ONE_RUN_GEN1_THRESHOLD, one_run_gc

# atexit runs the last registered handler first: one registered before the CLI's set-up runs after
# the CLI's handler, one registered after it runs before.
_CHECK = """
import atexit, gc
from jax_assistant.cli import _process_setup
atexit.register(lambda: print("first registered", gc.get_freeze_count()))
_process_setup()
atexit.register(lambda: print("last registered", gc.get_freeze_count()))
print("threshold", gc.get_threshold()[0])
"""


def test_the_cli_freezes_the_heap_at_exit_after_the_later_handlers_ran() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CHECK], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out[0] == "threshold 20000"
    assert out[1] == "last registered 0"  # nothing frozen while other exit handlers still run
    label, frozen = out[2].rsplit(" ", 1)
    assert label == "first registered" and int(frozen) > 10_000  # the final collection has nothing to walk


def test_one_run_defers_young_and_middle_collections_and_restores_the_thresholds() -> None:
    before = gc.get_threshold()
    gc.set_threshold(1_000, 2, 10)
    try:
        kept: list[list[int]] = []
        young, middle = (gc.get_stats()[g]["collections"] for g in (0, 1))
        with one_run_gc():
            assert gc.get_threshold() == (ONE_RUN_GEN0_THRESHOLD, ONE_RUN_GEN1_THRESHOLD, 10)
            # At (1000, 2) these survivors would cost ~100 young and ~50 middle collections (a library
            # may still ask for one explicitly, hence not == 0).
            kept.extend([i] for i in range(100_000))
            assert gc.get_stats()[0]["collections"] - young < 5
            assert gc.get_stats()[1]["collections"] - middle < 5
        assert gc.get_threshold() == (1_000, 2, 10)
        # What the block left alive is in the oldest generation now: the overdue collections
        # (triggered by the next allocations) do not walk it.
        last = kept[-1]
        assert any(o is last for o in gc.get_objects(generation=2))
        assert not any(o is last for o in gc.get_objects(generation=1))
        assert len(kept) == 100_000
    finally:
        gc.set_threshold(*before)


def test_one_run_still_collects_cyclic_garbage_past_its_young_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deferred, not disabled: a plugin making reference cycles in a loop cannot grow the heap
    without bound (the bound is the young threshold)."""
    monkeypatch.setattr(tuning, "ONE_RUN_GEN0_THRESHOLD", 5_000)
    before = gc.get_threshold()
    gc.set_threshold(1_000, 2, 10)
    try:
        collected: list[int] = []

        def record(phase: str, info: dict[str, int]) -> None:
            if phase == "stop":
                collected.append(info["collected"])

        gc.callbacks.append(record)
        try:
            with one_run_gc():
                assert gc.get_threshold()[0] == 5_000
                for _ in range(20_000):
                    cycle: list[object] = []
                    cycle.append(cycle)  # garbage only a collection can free
                    del cycle
        finally:
            gc.callbacks.remove(record)
        assert sum(collected) >= 10_000  # the cycles were freed while the block ran
    finally:
        gc.set_threshold(*before)
