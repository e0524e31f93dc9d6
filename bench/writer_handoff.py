"""The SQLite writer thread's hand-off cost: CPU per write job, the database left out.

    python bench/writer_handoff.py                    # 20 000 jobs per figure, best of 5
    python bench/writer_handoff.py --jobs 5000 --repeats 3 --out bench/results/writer_handoff.json

Each job's transaction is a no-op (``_NoDatabase``: no connection, savepoints that do nothing), so what
is measured is what the event loop and the writer thread spend to hand a job over and its result back:
``_WriterThread.submit`` awaited one at a time (sequential) and 20 at once (a burst of accepts, which
the thread takes as one urgent group). Beside it, the same no-op run through ``loop.run_in_executor``
on a one-thread pool, the stock way to hand a call to one thread. Process CPU time (both threads) per
job, best of the repeats; on a shared machine CPU time moves less than wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import git_revision, write_results  # bench/ is sys.path[0] when run as a script
from rich.console import Console
from rich.table import Table

from jax_assistant.storage.db import _WriterThread

BURST = 20


class _Savepoint:
    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass


class _NoDatabase:
    """Stands in for the connection: the jobs never touch it; a group asks for savepoints."""

    def begin_nested(self) -> _Savepoint:
        return _Savepoint()


@contextmanager
def _no_transaction() -> Iterator[Any]:
    yield _NoDatabase()


def _job(conn: Any) -> int:
    return 1


async def _writer(jobs: int, burst: int) -> float:
    writer = _WriterThread(_no_transaction)
    try:
        start = time.process_time()
        for _ in range(jobs // burst):
            if burst == 1:
                await writer.submit(_job, urgent=False)
            else:
                await asyncio.gather(*(writer.submit(_job, urgent=True, group=True) for _ in range(burst)))
        return (time.process_time() - start) / jobs
    finally:
        writer.shutdown()


async def _executor(jobs: int, burst: int) -> float:
    loop = asyncio.get_running_loop()

    def call() -> int:
        with _no_transaction() as conn:
            return _job(conn)

    with ThreadPoolExecutor(max_workers=1) as pool:
        start = time.process_time()
        for _ in range(jobs // burst):
            await asyncio.gather(*(loop.run_in_executor(pool, call) for _ in range(burst)))
        return (time.process_time() - start) / jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per figure")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    console = Console()

    cases = {
        ("writer thread", 1): lambda: _writer(args.jobs, 1),
        ("writer thread", BURST): lambda: _writer(args.jobs, BURST),
        ("run_in_executor, 1 thread", 1): lambda: _executor(args.jobs, 1),
        ("run_in_executor, 1 thread", BURST): lambda: _executor(args.jobs, BURST),
    }
    best: dict[tuple[str, int], float] = {}
    for _ in range(args.repeats):  # interleaved, so a busy moment hits every case alike
        for key, case in cases.items():
            best[key] = min(best.get(key, float("inf")), asyncio.run(case()))

    table = Table(title=f"CPU µs per write job (best of {args.repeats}, {args.jobs} jobs each)")
    table.add_column("hand-off")
    table.add_column("one at a time", justify="right")
    table.add_column(f"{BURST} at once", justify="right")
    for name in ("writer thread", "run_in_executor, 1 thread"):
        table.add_row(name, f"{best[(name, 1)] * 1e6:.1f}", f"{best[(name, BURST)] * 1e6:.1f}")
    console.print(table)
    write_results(
        {
            "revision": git_revision(),
            "jobs": args.jobs,
            "repeats": args.repeats,
            "cpu_us_per_job": {
                f"{name} x{burst}": round(value * 1e6, 2) for (name, burst), value in best.items()
            },
        },
        args.out,
        console,
    )


if __name__ == "__main__":
    main()
