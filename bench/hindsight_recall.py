"""Recall latency through our ``hindsight`` client against a real Hindsight server, beside our embedded
backend (SQLite, full text) on the same memories in the same run, so the ratio survives machine load.

    HINDSIGHT_URL=http://127.0.0.1:58888 python bench/hindsight_recall.py --sizes 20,1000
    (bench/hindsight_leg.sh starts the server and runs this)

Memories are real events from ../shared/data (``memory_dataset``), a seeded sample of N retained in
batches of 100 into a fresh bank. Each size times ``--queries`` recalls of two kinds: with text (the
labelled queries' wording for a random symbol of the bank, no filter) and without text (one symbol:
Hindsight's ``.../memories/list`` path). Latency is the client call, round trip included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for tests.pgutil

from _common import git_revision, write_results
from memory_dataset import _QUERY_TEMPLATES, DATA, load_events, memory_item
from rich.console import Console
from rich.table import Table

from jax_assistant.config import MemoryConfig
from jax_assistant.memory import Memory
from jax_assistant.memory.embedded import EmbeddedBackend
from jax_assistant.memory.hindsight import HindsightBackend
from jax_assistant.storage import open_database


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def time_recalls(memory: Memory, queries: list[dict[str, Any]]) -> dict[str, float]:
    await memory.recall(queries[0])  # warm the connection
    samples, hits = [], 0
    for query in queries:
        start = time.perf_counter()
        found = await memory.recall(query)
        samples.append((time.perf_counter() - start) * 1000)
        hits += len(found)
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": pct(samples, 0.99),
        "mean_hits": hits / len(queries),
        "n": len(queries),
    }


async def measure(memory: Memory, items: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    for i in range(0, len(items), 100):
        await memory.retain_many(items[i : i + 100])
    retain_s = time.perf_counter() - start
    rng = random.Random(7)
    symbols = sorted({str(i["symbol"]) for i in items})
    templates = list(_QUERY_TEMPLATES.values())
    text = [
        {"q": rng.choice(templates).format(sym=rng.choice(symbols)), "limit": 5} for _ in range(args.queries)
    ]
    textless = [{"symbol": rng.choice(symbols), "limit": 5} for _ in range(args.queries)]
    return {
        "retain_items_per_s": len(items) / retain_s,
        "text": await time_recalls(memory, text),
        "textless": await time_recalls(memory, textless),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("HINDSIGHT_URL"))
    parser.add_argument("--sizes", default="20,1000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not args.url:
        parser.error("--url or HINDSIGHT_URL is required")
    console = Console()
    everything = load_events(DATA, file="daily_ohlcv_stooq_sp500.csv.gz", since="2005-01-01", move_pct=2.5)
    results: dict[str, Any] = {"runs": [], "url": args.url, **git_revision()}
    table = Table(title="recall latency, ms (client round trip)")
    for column in ("backend", "N", "retain/s", "text p50", "text p99", "no-text p50", "no-text p99"):
        table.add_column(column)
    for size in (int(s) for s in args.sizes.split(",")):
        items = [memory_item(e) for e in random.Random(size).sample(everything, size)]
        backend = HindsightBackend(args.url, timeout_s=60.0, bank_prefix=f"bench{secrets.token_hex(3)}_")
        hindsight = Memory(backend)
        try:
            runs = {"hindsight": await measure(hindsight, items, args)}
        finally:
            await hindsight.close()
        with tempfile.TemporaryDirectory() as tmp:
            db = await open_database(f"sqlite+aiosqlite:///{tmp}/bench.db")
            embedded = Memory(EmbeddedBackend(db, MemoryConfig()))
            try:
                runs["embedded-sqlite"] = await measure(embedded, items, args)
            finally:
                await embedded.close()
                await db.close()
        for name, run in runs.items():
            results["runs"].append({"backend": name, "size": size, **run})
            table.add_row(
                name,
                str(size),
                f"{run['retain_items_per_s']:.0f}",
                *(f"{run[k][m]:.1f}" for k in ("text", "textless") for m in ("p50_ms", "p99_ms")),
            )
    console.print(table)
    write_results(results, args.out, console)


if __name__ == "__main__":
    asyncio.run(main())
