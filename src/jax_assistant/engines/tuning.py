"""Process-wide tuning for a process that runs the engine, importable without the engine itself.

`jax` calls it before every command; importing the engine (storage, SQLAlchemy, the pipeline) there
would cost every command ~0.5 s and keep `jax run` from overlapping its data read with those imports.
"""

from __future__ import annotations

import atexit
import gc


def tune_gc_for_runs() -> None:
    """Process-wide GC thresholds for a process that runs the engine (the CLI and `jax serve`).

    A run keeps every symbol's result alive, so the default thresholds trigger ever-longer full
    collections as it grows: measured as the engine's p99 stage overhead going 36 -> 83 µs and
    throughput dropping 40 % at 20 000 symbols (bench/engine.py --default-gc). Rarer collections fix it.
    """
    gc.set_threshold(20_000, 20, 20)


def skip_exit_collection() -> None:
    """Freeze the heap when the interpreter exits, before its final full collection.

    That collection walks every object a run left alive only to free memory the OS takes back anyway:
    ~0.3 s of a 505-symbol `jax run` (bench/run_command.py). Frozen objects are still freed by reference
    counting as modules are torn down; only garbage in reference cycles is left to the OS. atexit runs
    the last registered first: registered as a command starts, it runs after the handlers registered
    later (the log listener's flush, executors' joins).
    """
    atexit.register(gc.freeze)


__all__ = ["skip_exit_collection", "tune_gc_for_runs"]
