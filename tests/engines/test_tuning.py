"""Process-wide GC tuning of the CLI: rarer collections during a run, none walking the heap at exit."""

from __future__ import annotations

import subprocess
import sys

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
