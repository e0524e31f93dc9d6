"""Check that a speed change stores the same rows: run `jax run` with two source trees, compare the rows.

    python bench/same_rows.py --before /work/main/src                 # lookback 1 and 60
    python bench/same_rows.py --before /work/main/src --lookback 60

Each side runs `jax run --data PATH --as-of 2017-11-03 --lookback N` (all symbols) as a subprocess
with ``PYTHONPATH`` on its source tree (``--before`` / ``--after``, default: this repository's
``src``), a fresh SQLite file in a temporary JAX_DATA_DIR, no inherited JAX_* variables. Then the
``decisions``, ``trades``, ``events`` and ``symbol_results`` rows are compared as stored text
(JSON columns byte for byte), leaving out what differs between any two runs: run ids and wall-clock
columns, and the timing fields (``started_at``, ``duration_ms``) inside ``symbol_results.stages``.
Exits 1 and prints the first differences when the rows are not the same.
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
# Columns that name the run or the wall clock: they differ between any two runs.
SKIP = {"run_id", "first_run_id", "decided_at", "created_at", "updated_at"}
TABLES = {
    "decisions": "setup_id",
    "trades": "id",
    "events": "id",
    "symbol_results": "symbol",
}
STAGE_TIMING = ("started_at", "duration_ms")


def run(src: Path, data: Path, lookback: int, tmp: str) -> Path:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "DATABASE_URL"}
    env.update(JAX_DATA_DIR=tmp, PYTHONPATH=str(src), COLUMNS="200")
    cmd = [sys.executable, "-m", "jax_assistant", "run", "--data", str(data), "--as-of", AS_OF]
    proc = subprocess.run(
        [*cmd, "--lookback", str(lookback)], cwd=tmp, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"jax run ({src}) failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return Path(tmp) / "jax.db"


def rows(db: Path) -> dict[str, dict[str, tuple[Any, ...]]]:
    con = sqlite3.connect(db)
    try:
        out: dict[str, dict[str, tuple[Any, ...]]] = {}
        for table, key in TABLES.items():
            cols = [r[1] for r in con.execute(f"pragma table_info({table})") if r[1] not in SKIP]
            got: dict[str, tuple[Any, ...]] = {}
            for values in con.execute(f"select {', '.join(cols)} from {table}"):
                row = dict(zip(cols, values, strict=True))
                if table == "symbol_results":
                    stages = json.loads(row["stages"])
                    for stage in stages:
                        for field in STAGE_TIMING:
                            stage.pop(field, None)
                    row["stages"] = json.dumps(stages)
                got[str(row[key])] = tuple(row.values())
            out[table] = got
        return out
    finally:
        con.close()


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for table in TABLES:
        a, b = before[table], after[table]
        if a.keys() != b.keys():
            problems.append(f"{table}: keys differ: {sorted(a.keys() ^ b.keys())[:5]}")
        changed = [k for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
        for k in changed[:3]:
            problems.append(f"{table} {k}:\n  before {a[k]}\n  after  {b[k]}")
        if changed:
            problems.append(f"{table}: {len(changed)} row(s) differ")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree (src/) of the reference")
    parser.add_argument("--after", type=Path, default=REPO / "src")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--lookback", type=int, action="append", help="default: 1 and 60")
    args = parser.parse_args()
    failed = False
    for lookback in args.lookback or [1, 60]:
        with (
            tempfile.TemporaryDirectory(prefix="jax-same-a-") as ta,
            tempfile.TemporaryDirectory(prefix="jax-same-b-") as tb,
        ):
            before = rows(run(args.before.resolve(), args.data, lookback, ta))
            after = rows(run(args.after.resolve(), args.data, lookback, tb))
        counts = ", ".join(f"{t} {len(before[t])}" for t in TABLES)
        problems = compare(before, after)
        print(f"lookback {lookback}: {'SAME' if not problems else 'DIFFERENT'} ({counts})")
        for p in problems:
            print("  " + p)
        failed = failed or bool(problems)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
