"""Process-wide tuning for a process that runs the engine, importable without the engine itself.

`jax` calls it before every command; importing the engine (storage, SQLAlchemy, the pipeline) there
would cost every command ~0.5 s and keep `jax run` from overlapping its data read with those imports.
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager


def tune_gc_for_runs() -> None:
    """Process-wide GC thresholds for a process that runs the engine (the CLI and `jax serve`).

    A run keeps every symbol's result alive, so the default thresholds trigger ever-longer full
    collections as it grows: measured as the engine's p99 stage overhead going 36 -> 83 µs and
    throughput dropping 40 % at 20 000 symbols (bench/engine.py --default-gc). Rarer collections fix it.
    """
    gc.set_threshold(20_000, 20, 20)


# Young-generation threshold during a one-shot run (see one_run_gc): tracked objects allocated (net of
# those freed) between two young collections. A 505-symbol run at lookback 60 keeps ~2.8 million
# alive to the end, so at this value it makes no young collection at all; it is also the bound on
# cyclic garbage (a plugin's) that can pile up before one runs.
ONE_RUN_GEN0_THRESHOLD = 5_000_000
# Middle-generation threshold during a one-shot run: young collections per middle one.
ONE_RUN_GEN1_THRESHOLD = 1_000


@contextmanager
def one_run_gc() -> Iterator[None]:
    """Around the one run of a process that then exits (`jax run`, `jax dlq retry`): young and middle
    collections deferred until the block ends (the previous thresholds come back then).

    What a run allocates and keeps is the run itself (items, setups, decisions, results), alive until
    the process exits, and it leaves almost no cyclic garbage (the same peak RSS with collections off).
    Every young collection walks what was allocated since the last one only to find it alive: ~140
    collections, ~0.27 s of a 505-symbol run at lookback 60 (gc.callbacks timing); every middle one
    walks all of it again: 9 collections, ~0.9 s. Deferred, not disabled: past
    ``ONE_RUN_GEN0_THRESHOLD`` net new objects a young collection still runs, so cyclic garbage a
    plugin makes stays bounded. The exit freeze (``skip_exit_collection``) spares the process the final
    full one. Not for `jax serve`: there the deferred work would come due as one long pause of the
    event loop.
    """
    before = gc.get_threshold()
    gc.set_threshold(
        max(before[0], ONE_RUN_GEN0_THRESHOLD), max(before[1], ONE_RUN_GEN1_THRESHOLD), *before[2:]
    )
    try:
        yield
    finally:
        # Freezing and unfreezing moves every tracked object to the oldest generation in O(1): the
        # middle collection now overdue then finds only what is allocated from here on, instead of
        # walking the whole run at once.
        gc.freeze()
        gc.unfreeze()
        gc.set_threshold(*before)


def skip_exit_collection() -> None:
    """Freeze the heap when the interpreter exits, before its final full collection.

    That collection walks every object a run left alive only to free memory the OS takes back anyway:
    ~0.3 s of a 505-symbol `jax run` (bench/run_command.py). Frozen objects are still freed by reference
    counting as modules are torn down; only garbage in reference cycles is left to the OS. atexit runs
    the last registered first: registered as a command starts, it runs after the handlers registered
    later (the log listener's flush, executors' joins).
    """
    atexit.register(gc.freeze)


__all__ = ["one_run_gc", "skip_exit_collection", "tune_gc_for_runs"]
