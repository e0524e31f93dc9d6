"""Recall quality of the embedded memory backend on labelled trading memories built from real events.

    python bench/memory_quality.py         # longhist file (15 symbols), SQLite, full text + embeddings
    python bench/memory_quality.py --file daily_ohlcv_stooq_sp500.csv.gz --since 2016-01-01 --backend postgres
    python bench/memory_quality.py --no-semantic --out bench/results/memory_quality.json

The memories and queries come from ``bench/memory_dataset.py`` (real earnings reactions, gaps and volume
spikes; queries worded differently from the memories, relevant sets known by construction). Recall@5 is
reported two ways: ``any`` (a relevant memory in the top 5, LongMemEval's recall_any@5) and ``frac``
(share of the min(5, |relevant|) top slots that are relevant). Queries name no filter: ranking alone counts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for tests.pgutil

from _common import git_revision, write_results  # bench/ is sys.path[0] when run as a script
from memory_dataset import DATA, labelled_queries, load_events, memory_item, recall_at
from rich.console import Console

from jax_assistant.config import MemoryConfig
from jax_assistant.memory import Memory
from jax_assistant.memory.embedded import EmbeddedBackend
from jax_assistant.storage import open_database


async def measure(url: str, events: list[dict[str, Any]], semantic: bool, console: Console) -> dict[str, Any]:
    embedder = None
    if semantic:
        from jax_assistant.memory.semantic import load_embedder

        embedder = load_embedder()
    db = await open_database(url)
    memory = Memory(EmbeddedBackend(db, MemoryConfig(semantic=semantic), embedder=embedder))
    try:
        items = [memory_item(e) for e in events]
        started = time.perf_counter()
        for start in range(0, len(items), 500):
            await memory.retain_many(items[start : start + 500], bank="market_events")
        retain_s = time.perf_counter() - started
        queries = labelled_queries(events)
        ranked = []
        for query in queries:
            hits = await memory.recall({"q": query.q, "limit": 5}, bank="market_events")
            ranked.append([h.document_id or "" for h in hits])
        result = recall_at(ranked, queries, 5)
        by_kind: dict[str, Any] = {}
        for kind in sorted({q.kind for q in queries}):
            idx = [i for i, q in enumerate(queries) if q.kind == kind]
            by_kind[kind] = recall_at([ranked[i] for i in idx], [queries[i] for i in idx], 5)
        console.print(
            f"{'embeddings' if semantic else 'full text '}: recall_any@5 {result['any']:.3f}"
            f"  frac@5 {result['frac']:.3f}  ({len(queries)} queries, {len(items)} memories,"
            f" retain {retain_s:.1f} s)"
        )
        return {"recall_at_5": result, "by_kind": by_kind, "memories": len(items), "retain_s": retain_s}
    finally:
        await memory.close()
        await db.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--file", default="daily_ohlcv_stooq_longhist.csv.gz")
    parser.add_argument("--since", default="2012-01-01")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--no-semantic", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    console = Console()
    events = load_events(DATA, file=args.file, since=args.since)
    results: dict[str, Any] = {
        "file": args.file,
        "since": args.since,
        "backend": args.backend,
        **git_revision(),
    }
    from tests.pgutil import backend_url

    for semantic in [False] if args.no_semantic else [False, True]:
        with tempfile.TemporaryDirectory() as tmp:
            async with backend_url(args.backend, Path(tmp), "jax_bench_mem") as url:
                results["semantic" if semantic else "full_text"] = await measure(
                    url, events, semantic, console
                )
    write_results(results, args.out, console)


if __name__ == "__main__":
    asyncio.run(main())
