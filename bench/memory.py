"""Embedded memory backend: retain throughput and recall latency at 10 000 and 100 000 memories.

    python bench/memory.py                 # 10k and 100k, SQLite and PostgreSQL, both modes
    python bench/memory.py --sizes 10000 --backends sqlite --modes fulltext
    python bench/memory.py --out bench/results/memory.json

Memories are real events from ../shared/data (``memory_dataset.load_events`` over the S&P 500 file with
intraday moves of 2.5 % or more, a seeded sample of N). Queries are the labelled queries' wording for
random symbols (no filters), so every query runs the keyword arm over the whole bank.

Modes
  fulltext  ``retain_many`` in batches of ``--batch`` (items/s over the whole load), then recall p50/p99.
  semantic  the same bank, vectors added (``_backfill``) and recall with the vector arm fused in. Stored
            vectors are real all-MiniLM-L6-v2 vectors of a pool of ``--pool`` distinct memory texts
            (embedding 100 000 texts on this shared 2-core machine would take about an hour), assigned
            to the memories round-robin; the matrix the query is scored against has the full N x 384
            size, which is what recall latency depends on. Recall is timed twice: with the query embedded
            by the real model on each call (``recall_*_model``), and with the query vector already
            computed (``recall_*_search``), which isolates the store from the model's CPU time; the
            backend's LRU of query vectors is emptied before each model-timed call, so every one runs
            the model. ``vector_arm`` times the vector arm alone (the keyword arm runs beside it), and
            ``index_load_s`` the first recall, which reads the bank's vectors into the in-process
            index. The model's own throughput on a batch of retains is ``model_items_per_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for tests.pgutil

from _common import git_revision, write_results  # bench/ is sys.path[0] when run as a script
from memory_dataset import _QUERY_TEMPLATES, DATA, load_events, memory_item
from rich.console import Console
from rich.table import Table

from jax_assistant.config import MemoryConfig
from jax_assistant.memory import Memory, MemoryQuery
from jax_assistant.memory.embedded import EmbeddedBackend
from jax_assistant.storage import open_database

BANK = "market_events"


class PooledEmbedder:
    """Real model vectors for a pool of texts, handed out round-robin to retained texts (see docstring)."""

    def __init__(self, model: Any, pool_texts: Sequence[str]) -> None:
        self.model = model
        self.model_name = model.model_name
        self.dim = model.dim
        self.pool = model.embed(list(pool_texts))
        self.next = 0
        self.query_cache: dict[str, npt.NDArray[np.float32]] = {}
        self.use_model_for_queries = True

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if len(texts) == 1 and texts[0] in self.query_cache:
            if self.use_model_for_queries:
                return self.model.embed(list(texts))  # type: ignore[no-any-return]
            return self.query_cache[texts[0]][None, :]
        index = (np.arange(len(texts)) + self.next) % len(self.pool)
        self.next += len(texts)
        return self.pool[index]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "n": float(len(ordered)),
    }


async def timed_recalls(
    memory: Memory, queries: list[str], reset: Callable[[], None] | None = None
) -> dict[str, float]:
    for q in queries[:10]:  # warm caches (and the vector matrix) before timing
        await memory.recall(MemoryQuery(q=q, limit=10), bank=BANK)
    samples = []
    for q in queries:
        if reset is not None:
            reset()
        started = time.perf_counter()
        await memory.recall(MemoryQuery(q=q, limit=10), bank=BANK)
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


async def timed_vector_arm(backend: EmbeddedBackend, queries: list[str]) -> dict[str, float]:
    """The vector arm alone (revision check, query vector, index search), to split a hybrid recall's time
    between the arms."""
    samples = []
    for q in queries:
        query = MemoryQuery(q=q, limit=10)
        conds = backend._filters(BANK, query)
        started = time.perf_counter()
        await backend._semantic(BANK, query, conds, backend.config.candidates)
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


async def run_one(
    url: str, events: list[dict[str, Any]], args: argparse.Namespace, modes: list[str], console: Console
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    items = [memory_item(e) for e in events]
    symbols = sorted({e["symbol"] for e in events})
    rng = random.Random(11)
    templates = list(_QUERY_TEMPLATES.values())
    queries = [rng.choice(templates).format(sym=rng.choice(symbols)) for _ in range(args.queries)]
    db = await open_database(url)
    try:
        memory = Memory(EmbeddedBackend(db, MemoryConfig()))
        started = time.perf_counter()
        for start in range(0, len(items), args.batch):
            await memory.retain_many(items[start : start + args.batch], bank=BANK)
        elapsed = time.perf_counter() - started
        out["retain_items_per_s"] = len(items) / elapsed
        if "fulltext" in modes:
            out["fulltext"] = await timed_recalls(memory, queries)
        if "semantic" in modes:
            from jax_assistant.memory.semantic import load_embedder

            model = load_embedder()
            pool_texts = [items[i]["summary"] for i in range(min(args.pool, len(items)))]
            pooled = PooledEmbedder(model, pool_texts)
            sample = [it["summary"] for it in items[: args.model_batch]]
            started = time.perf_counter()
            model.embed(sample)
            out["model_items_per_s"] = len(sample) / (time.perf_counter() - started)
            backend = EmbeddedBackend(db, MemoryConfig(semantic=True), embedder=pooled)
            started = time.perf_counter()
            stored = await backend._backfill(BANK, batch=2000)
            out["vector_store_items_per_s"] = stored / (time.perf_counter() - started)
            semantic = Memory(backend)
            unique = list(dict.fromkeys(queries))
            pooled.query_cache = dict(zip(unique, model.embed(unique), strict=True))
            pooled.use_model_for_queries = False
            started = time.perf_counter()
            await semantic.recall(MemoryQuery(q=queries[0], limit=10), bank=BANK)
            out["index_load_s"] = time.perf_counter() - started  # the bank's vectors read into memory
            out["semantic_search"] = await timed_recalls(semantic, queries)
            out["vector_arm"] = await timed_vector_arm(backend, queries)
            pooled.use_model_for_queries = True
            # The backend keeps an LRU of query vectors; emptied before every call so each one runs the
            # model, as a query never seen before does.
            out["semantic_model"] = await timed_recalls(
                semantic, queries[: args.model_queries], reset=backend._query_vectors.clear
            )
    finally:
        await db.close()
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--modes", default="fulltext,semantic")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--model-queries", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--pool", type=int, default=512)
    parser.add_argument("--model-batch", type=int, default=256)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    console = Console()
    modes = args.modes.split(",")
    from tests.pgutil import backend_url

    everything = load_events(DATA, file="daily_ohlcv_stooq_sp500.csv.gz", since="2005-01-01", move_pct=2.5)
    results: dict[str, Any] = {"runs": [], **git_revision()}
    table = Table(title="embedded memory")
    for column in ("backend", "N", "retain/s", "FT p50", "FT p99", "sem p50", "sem p99", "sem+model p50/p99"):
        table.add_column(column)
    for size in (int(s) for s in args.sizes.split(",")):
        events = random.Random(size).sample(everything, size)
        for backend in args.backends.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                async with backend_url(backend, Path(tmp), "jax_bench_mem") as url:
                    run = await run_one(url, events, args, modes, console)
            run |= {"backend": backend, "size": size}
            results["runs"].append(run)
            ft, ss, sm = (
                run.get("fulltext", {}),
                run.get("semantic_search", {}),
                run.get("semantic_model", {}),
            )

            def f(d: dict[str, float], k: str) -> str:
                return f"{d[k]:.1f}" if k in d else "-"

            table.add_row(
                backend,
                str(size),
                f"{run['retain_items_per_s']:.0f}",
                f(ft, "p50_ms"),
                f(ft, "p99_ms"),
                f(ss, "p50_ms"),
                f(ss, "p99_ms"),
                f"{f(sm, 'p50_ms')}/{f(sm, 'p99_ms')}",
            )
            console.print(run)
    console.print(table)
    write_results(results, args.out, console)


if __name__ == "__main__":
    asyncio.run(main())
