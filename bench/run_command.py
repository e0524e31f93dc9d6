"""The whole `jax run` command over the real 505 symbols, against its physical floor, measured together.

    python bench/run_command.py                      # lookback 1 and 60, best of 3 each
    python bench/run_command.py --repeats 1 --out bench/results/run_command.json

For each lookback it times `jax run --data PATH --as-of 2017-11-03 --lookback N` (all symbols, table
output, a fresh SQLite file in a temporary JAX_DATA_DIR, no inherited JAX_* variables) as a subprocess,
then counts the rows the run stored and measures, in this same invocation, the floor of that work:

* minimal imports: a fresh interpreter importing polars, numpy and sqlite3 (what any Python tool
  reading this file must load);
* typed read: `polars.read_csv` of the file with an explicit schema;
* detectors: `detect_events` over every symbol at that lookback (on bars already loaded);
* one write: the same number of rows, of the same tables' width (JSON payloads of the same size),
  inserted with `executemany` in ONE WAL transaction into a fresh SQLite file.

The package's bytecode caches are written first (``compileall``), as a user's second run would find
them even where ``PYTHONDONTWRITEBYTECODE`` is set. It prints command / floor. It also reports the
database size per run with and without checkpoint compaction (`storage.compact_completed`), as the
file holds it and as live pages (page_count - freelist_count: SQLite reuses freed pages but does not
shrink the file without VACUUM).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from _common import REPO, git_revision, write_results  # bench/ is sys.path[0] when run as a script
from rich.console import Console
from rich.table import Table

DEFAULT_DATA = REPO.parent / "shared" / "data" / "daily_ohlcv_stooq_sp500.csv.gz"
AS_OF = "2017-11-03"
TABLES = ("runs", "symbol_results", "stage_checkpoints", "events", "trades", "decisions", "audit_events")


def _jax() -> list[str]:
    exe = shutil.which("jax", path=str(Path(sys.executable).parent)) or shutil.which("jax")
    return [exe] if exe else [sys.executable, "-m", "jax_assistant"]


def _clean_env(tmp: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "DATABASE_URL"}
    return {**env, "JAX_DATA_DIR": tmp, **extra}


def _db_stats(path: Path) -> dict[str, Any]:
    con = sqlite3.connect(path)
    try:
        rows = {t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in TABLES}
        widths = {
            t: con.execute(f"select avg(length(cast(({cols}) as blob))) from {t}").fetchone()[0] or 0
            for t, cols in _row_text_columns(con).items()
        }
        page = con.execute("pragma page_size").fetchone()[0]
        live = (
            con.execute("pragma page_count").fetchone()[0]
            - con.execute("pragma freelist_count").fetchone()[0]
        )
    finally:
        con.close()
    files = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return {"rows": rows, "row_bytes": widths, "file_bytes": files, "live_bytes": live * page}


def _row_text_columns(con: sqlite3.Connection) -> dict[str, str]:
    out = {}
    for t in TABLES:
        cols = [r[1] for r in con.execute(f"pragma table_info({t})")]
        out[t] = " || ".join(f"coalesce(cast({c} as text), '')" for c in cols)
    return out


def compile_package() -> None:
    """Write the package's bytecode caches before anything is timed.

    A user's second `jax run` loads cached bytecode; a machine with ``PYTHONDONTWRITEBYTECODE`` set
    (this CI machine kind) would otherwise recompile every module on every timed run (~0.13 s), a cost
    of the interpreter's setting, not of the command. Reading the caches is still allowed there.
    """
    package = subprocess.run(
        [sys.executable, "-c", "import jax_assistant, os; print(os.path.dirname(jax_assistant.__file__))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True, capture_output=True)


def time_command(data: Path, lookback: int, repeats: int, *, compact: bool = True) -> dict[str, Any]:
    cmd = [*_jax(), "run", "--data", str(data), "--as-of", AS_OF, "--lookback", str(lookback)]
    walls: list[float] = []
    stats: dict[str, Any] = {}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="jax-bench-") as tmp:
            env = _clean_env(tmp, JAX_STORAGE__COMPACT_COMPLETED=str(compact).lower(), COLUMNS="200")
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, check=False)
            walls.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise SystemExit(f"jax run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
            stats = _db_stats(Path(tmp) / "jax.db")
    return {"command": " ".join(cmd), "wall_s_best": min(walls), "wall_s_all": walls, **stats}


# --------------------------------------------------------------------------- the floor


def floor_imports() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import polars, numpy, sqlite3"], check=True)
    return time.perf_counter() - t0


def floor_read(data: Path) -> float:
    import polars as pl

    schema = {
        "symbol": pl.String,
        "date": pl.Date,
        "open": pl.Float64,
        "high": pl.Float64,
        "low": pl.Float64,
        "close": pl.Float64,
        "volume": pl.Float64,
    }
    header = pl.read_csv(data, n_rows=1).columns
    t0 = time.perf_counter()
    pl.read_csv(data, schema_overrides={c: schema[c] for c in header if c in schema})
    return time.perf_counter() - t0


def floor_detectors(data: Path, lookback: int) -> float:
    from jax_assistant.analysis.detectors import detect_events
    from jax_assistant.marketdata import create_provider

    provider = create_provider("csv", data)
    as_of = date.fromisoformat(AS_OF)
    series = [provider.bars(s, as_of) for s in provider.symbols()]  # loaded and cleaned, untimed
    t0 = time.perf_counter()
    for s in series:
        detect_events(s, (), lookback=lookback, as_of=as_of)
    return time.perf_counter() - t0


def floor_write(stats: dict[str, Any]) -> float:
    """The run's row count, each row as wide as the run's average for its table, in one transaction."""
    with tempfile.TemporaryDirectory(prefix="jax-floor-") as tmp:
        con = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        con.execute("pragma journal_mode = wal")
        con.execute("pragma synchronous = normal")
        for t in TABLES:
            con.execute(f"create table {t} (id integer primary key, payload text)")
        batches = {
            t: [("x" * int(stats["row_bytes"][t]),) for _ in range(n)] for t, n in stats["rows"].items()
        }
        t0 = time.perf_counter()
        con.execute("begin immediate")
        for t, rows in batches.items():
            con.executemany(f"insert into {t} (payload) values (?)", rows)
        con.execute("commit")
        elapsed = time.perf_counter() - t0
        con.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--lookbacks", type=int, nargs="+", default=[1, 60])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    console = Console()
    compile_package()

    results: dict[str, Any] = {"revision": git_revision(), "data": str(args.data), "as_of": AS_OF, "runs": {}}
    imports_s = min(floor_imports() for _ in range(3))
    read_s = min(floor_read(args.data) for _ in range(3))
    table = Table(title=f"jax run over every symbol, --as-of {AS_OF}")
    for col in ("lookback", "command s", "floor s", "ratio", "imports", "read", "detect", "write", "rows"):
        table.add_column(col, justify="right")
    for lookback in args.lookbacks:
        cmd = time_command(args.data, lookback, args.repeats)
        detect_s = floor_detectors(args.data, lookback)
        write_s = min(floor_write(cmd) for _ in range(3))
        floor = imports_s + read_s + detect_s + write_s
        uncompacted = time_command(args.data, lookback, 1, compact=False)
        results["runs"][str(lookback)] = {
            "command": cmd,
            "floor": {"imports_s": imports_s, "read_s": read_s, "detect_s": detect_s, "write_s": write_s},
            "floor_s": floor,
            "ratio": cmd["wall_s_best"] / floor,
            "db_bytes_compacted": {"file": cmd["file_bytes"], "live": cmd["live_bytes"]},
            "db_bytes_uncompacted": {"file": uncompacted["file_bytes"], "live": uncompacted["live_bytes"]},
        }
        table.add_row(
            str(lookback),
            f"{cmd['wall_s_best']:.2f}",
            f"{floor:.2f}",
            f"{cmd['wall_s_best'] / floor:.1f}x",
            f"{imports_s:.2f}",
            f"{read_s:.2f}",
            f"{detect_s:.2f}",
            f"{write_s:.3f}",
            str(sum(cmd["rows"].values())),
        )
    console.print(table)
    sizes = Table(title="SQLite database per run (MB)")
    for col in ("lookback", "uncompacted file", "uncompacted live", "compacted file", "compacted live"):
        sizes.add_column(col, justify="right")
    for lookback, r in results["runs"].items():
        u, c = r["db_bytes_uncompacted"], r["db_bytes_compacted"]
        sizes.add_row(lookback, *(f"{x / 1e6:.1f}" for x in (u["file"], u["live"], c["file"], c["live"])))
    console.print(sizes)
    console.print(json.dumps({k: v["command"]["rows"] for k, v in results["runs"].items()}))
    write_results(results, args.out, console)


if __name__ == "__main__":
    main()
