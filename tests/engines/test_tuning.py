"""Process-wide GC tuning of the CLI: rarer collections during a run, none walking the heap at exit."""

from __future__ import annotations

import gc
import subprocess
import sys

from jax_assistant.engines.tuning import ONE_RUN_GEN1_THRESHOLD, one_run_gc

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


def test_one_run_defers_middle_collections_and_restores_the_thresholds() -> None:
    before = gc.get_threshold()
    gc.set_threshold(1_000, 2, 10)
    try:
        kept: list[list[int]] = []
        middle = gc.get_stats()[1]["collections"]
        with one_run_gc():
            assert gc.get_threshold() == (1_000, ONE_RUN_GEN1_THRESHOLD, 10)
            # Survivors of ~100 young collections: at (1000, 2) that would be ~50 middle ones (a
            # library may still ask for one explicitly, hence not == 0).
            kept.extend([i] for i in range(100_000))
            assert gc.get_stats()[1]["collections"] - middle < 5
        assert gc.get_threshold() == (1_000, 2, 10)
        # What the block left alive is in the oldest generation now: the overdue middle collection
        # (triggered by the next young one) does not walk it.
        last = kept[-1]
        assert any(o is last for o in gc.get_objects(generation=2))
        assert not any(o is last for o in gc.get_objects(generation=1))
        assert len(kept) == 100_000
    finally:
        gc.set_threshold(*before)
