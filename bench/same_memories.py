"""Check that a retain change stores the same memories: `jax run` with two source trees, memories compared.

    python bench/same_memories.py --before /work/main/src                 # lookback 1 and 60

Like ``same_rows.py`` (same data, as-of date, fresh SQLite file per side), with the run id fixed on both
sides so content hashes (which cover ``source.ref``, the run id) can be compared. Every column of
``memories`` but the wall-clock ones is compared; ``data`` as a value with its key order (its JSON text
may be spelled differently). Exits 1 when they differ.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import REPO  # bench/ is sys.path[0] when run as a script

DEFAULT_DATA = REPO.parent / "shared" / "data" / "daily_ohlcv_stooq_sp500.csv.gz"
AS_OF = "2017-11-03"
RUN_ID = "run_20171103T000000_samememories"
COLUMNS = (
    "id, bank, type, symbol, ts, tags, summary, data, source_system, source_ref, document_id,"
    " content_hash, body, invalidated_at, invalidation_reason"
)
# The CLI with new_run_id fixed: the id is otherwise random and part of every content hash.
DRIVER = (
    "import runpy, sys; import jax_assistant.orchestrator as o; "
    f"o.new_run_id = lambda now=None: {RUN_ID!r}; "
    "sys.argv = ['jax', *sys.argv[1:]]; runpy.run_module('jax_assistant', run_name='__main__')"
)


def _pairs(value: Any) -> Any:
    if isinstance(value, dict):
        return [[k, _pairs(v)] for k, v in value.items()]
    if isinstance(value, list):
        return [_pairs(v) for v in value]
    return value


def memories(src: Path, data: Path, lookback: int, tmp: str) -> dict[str, list[Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "DATABASE_URL"}
    env.update(JAX_DATA_DIR=tmp, PYTHONPATH=str(src), COLUMNS="200")
    cmd = [sys.executable, "-c", DRIVER, "run", "--data", str(data), "--as-of", AS_OF]
    proc = subprocess.run(
        [*cmd, "--lookback", str(lookback)], cwd=tmp, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"jax run ({src}) failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    con = sqlite3.connect(Path(tmp) / "jax.db")
    try:
        rows = {r[0]: list(r) for r in con.execute(f"SELECT {COLUMNS} FROM memories")}
    finally:
        con.close()
    for row in rows.values():
        row[7] = _pairs(json.loads(row[7]))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree to compare against")
    parser.add_argument("--after", type=Path, default=REPO / "src")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--lookback", type=int, action="append")
    args = parser.parse_args()
    same = True
    for lookback in args.lookback or [1, 60]:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            before = memories(args.before, args.data, lookback, a)
            after = memories(args.after, args.data, lookback, b)
        differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        print(f"lookback {lookback}: {'SAME' if not differ else 'DIFFERENT'} ({len(before)} memories)")
        for key in differ[:5]:
            print(
                f"  {key}: before {str(before.get(key))[:300]}\n  {key}: after  {str(after.get(key))[:300]}"
            )
        same = same and not differ
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
