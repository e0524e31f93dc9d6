"""What the memory stages cost on a 505-symbol run, in CPU seconds (the machine is shared: wall is noise).

    python bench/recall_batch.py                 # fresh SQLite files, best of 5
    python bench/recall_batch.py --repeats 1 --url postgresql+asyncpg://postgres@127.0.0.1:5432/DB  # EMPTY db

On the embedded backend it measures, for 505 symbols with --per-symbol decisions each (the shape of a rerun
of `jax run` over the S&P 500 file): the recall_memory work done one recall per symbol (the stage before
batching) and as one ``recall_many`` (the stage now), checking both return the same items; the same on an
empty bank; and retain_memory's ``retain_many`` of one decision per symbol, first time and rerun (same
document ids, new content: replaced).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from _common import git_revision, write_results  # bench/ is sys.path[0] when run as a script
from rich.console import Console

from jax_assistant.config import MemoryConfig
from jax_assistant.memory import Memory
from jax_assistant.memory.embedded import EmbeddedBackend
from jax_assistant.memory.models import MemoryQuery
from jax_assistant.storage import open_database

T = TypeVar("T")
NOW = datetime(2017, 11, 3, 21, tzinfo=UTC)


async def cpu(fn: Callable[[], Awaitable[T]]) -> tuple[float, T]:
    start = time.process_time()
    out = await fn()
    return time.process_time() - start, out


def decisions(symbols: list[str], n: int, run: str) -> list[dict[str, Any]]:
    return [
        {
            "ts": (NOW - timedelta(days=k)).isoformat(),
            "type": "decision",
            "symbol": s,
            "tags": ["decision", "event:none"],
            "summary": f"{s} on 2017-11-03: no setup.",
            "data": {"inputs": {"symbol": s, "asOf": "2017-11-03", "lookback": 1}, "setups": []},
            "source": {"system": "jax-orchestrator", "ref": run},
            "document_id": f"decision:{s}:{k}",
        }
        for s in symbols
        for k in range(n)
    ]


async def measure(url: str, per_symbol: int) -> dict[str, Any]:
    db = await open_database(url)
    memory = Memory(EmbeddedBackend(db, MemoryConfig(), clock=lambda: NOW))
    symbols = [f"SYM{i:03d}" for i in range(505)]
    out: dict[str, Any] = {}

    def queries() -> list[MemoryQuery]:
        return [MemoryQuery(symbol=s, types=["decision"], limit=5) for s in symbols]

    async def single() -> list[list[Any]]:
        return [await memory.recall(q, bank="trade_decisions") for q in queries()]

    async def batch() -> list[list[Any]]:
        return await memory.recall_many(queries(), bank="trade_decisions")

    try:
        out["banks_empty_cpu_s"], _ = await cpu(memory.banks)
        out["recall_single_empty_cpu_s"], _ = await cpu(single)
        out["recall_batch_empty_cpu_s"], _ = await cpu(batch)
        out["retain_first_cpu_s"], _ = await cpu(
            lambda: memory.retain_many(decisions(symbols, per_symbol, "run1"), bank="trade_decisions")
        )
        out["retain_rerun_cpu_s"], _ = await cpu(
            lambda: memory.retain_many(decisions(symbols, per_symbol, "run2"), bank="trade_decisions")
        )
        out["recall_single_cpu_s"], one = await cpu(single)
        out["recall_batch_cpu_s"], many = await cpu(batch)
        same = [[i.model_dump() for i in r] for r in one] == [[i.model_dump() for i in r] for r in many]
        out["same_items"] = same
        out["items_recalled"] = sum(map(len, many))
    finally:
        await db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--per-symbol", type=int, default=1, help="decisions stored per symbol")
    parser.add_argument("--repeats", type=int, default=5, help="fresh databases measured; best kept")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.url and args.repeats != 1:
        parser.error("--url measures one given (empty) database: use --repeats 1")
    console = Console()
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="jax-recall-") as tmp:
            url = args.url or f"sqlite+aiosqlite:///{tmp}/jax.db"
            runs.append(asyncio.run(measure(url, args.per_symbol)))
    # CPU seconds, best of the repeats: other processes on a shared machine only ever add.
    figures = {k: min(r[k] for r in runs) if isinstance(v, float) else v for k, v in runs[0].items()}
    figures["same_items"] = all(r["same_items"] for r in runs)
    for key, value in figures.items():
        console.print(f"{key:28} {value:.4f}" if isinstance(value, float) else f"{key:28} {value}")
    write_results({"revision": git_revision(), "url": url.split("@")[-1], **figures}, args.out, console)


if __name__ == "__main__":
    main()
