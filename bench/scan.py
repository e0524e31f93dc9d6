"""Throughput of the data path on the largest real file: load, detector scan, and a full ``jax run``.

    python bench/scan.py                      # all three parts, best of 5
    python bench/scan.py --skip-run --repeats 3
    python bench/scan.py --out bench/results/scan.json

(a) load: ``create_provider("csv", PATH)`` (polars parse of every row) plus cleaning every symbol
    (``bars()``, done lazily on first use by the provider), each timed on its own;
(b) scan: ``analysis.detectors.scan`` (all four detectors) over every symbol's full series, with the
    symbol's earnings dates, exactly as the pipeline calls it; ``detect_events`` (lookback 1, what a
    ``jax run`` does per symbol) is timed too. Warm-up pass first, then best of ``--repeats``;
(c) run: ``jax run --data PATH --json`` over every symbol of the file as a subprocess, with
    ``JAX_DATA_DIR`` on a fresh temporary directory (a new SQLite file) and no config file or database
    URL from the environment, timing the whole command (interpreter start, load, run, JSON output).

Nothing is written next to the data; results go to stdout and, with ``--out``, to a JSON file.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import git_revision, write_results  # bench/ is sys.path[0] when run as a script
from rich.console import Console
from rich.table import Table

from jax_assistant.analysis.detectors import ALL_DETECTORS, detect_events, scan
from jax_assistant.marketdata import create_provider
from jax_assistant.marketdata.base import BarSeries, MarketDataProvider

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "daily_ohlcv_stooq_sp500.csv.gz"

# Wide enough that the tables do not wrap when stdout is a pipe or a file.
console = Console(width=max(110, Console().width))


def best_of(fn: Callable[[], object], repeats: int, *, warmup: bool = True) -> tuple[float, list[float]]:
    """Best and all wall times (s) of ``repeats`` calls of ``fn`` after an optional untimed warm-up."""
    if warmup:
        fn()
    times: list[float] = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), times


# --------------------------------------------------------------------------- (a) load


def bench_load(data: Path, repeats: int) -> tuple[MarketDataProvider, dict[str, Any]]:
    load_times: list[float] = []
    clean_times: list[float] = []
    provider: MarketDataProvider | None = None
    for _ in range(repeats):
        provider = None
        gc.collect()
        t0 = time.perf_counter()
        provider = create_provider("csv", data)
        t1 = time.perf_counter()
        for sym in provider.symbols():
            provider.bars(sym)
        t2 = time.perf_counter()
        load_times.append(t1 - t0)
        clean_times.append(t2 - t1)
    assert provider is not None
    symbols = provider.symbols()
    bars = sum(len(provider.bars(s)) for s in symbols)
    return provider, {
        "file": str(data),
        "file_bytes": data.stat().st_size,
        "symbols": len(symbols),
        "bars_clean": bars,
        "repeats": repeats,
        "load_s_first": load_times[0],
        "load_s_best": min(load_times),
        "load_s_median": statistics.median(load_times),
        "clean_all_s_best": min(clean_times),
        "clean_all_s_median": statistics.median(clean_times),
        "load_plus_clean_rows_per_s": bars / (min(load_times) + min(clean_times)),
    }


# --------------------------------------------------------------------------- (b) scan


def bench_scan(provider: MarketDataProvider, repeats: int) -> dict[str, Any]:
    symbols = provider.symbols()
    series: list[tuple[BarSeries, list[Any]]] = [
        (provider.bars(s), provider.earnings_reports(s)) for s in symbols
    ]
    total_bars = sum(len(s) for s, _ in series)

    def scan_all() -> None:
        for s, earnings in series:
            scan(s, earnings)

    events_found = 0

    def events_all() -> None:
        nonlocal events_found
        events_found = sum(len(detect_events(s, earnings, lookback=1)) for s, earnings in series)

    scan_best, scan_times = best_of(scan_all, repeats)
    ev_best, ev_times = best_of(events_all, repeats)
    triggers = {name: 0 for name in ALL_DETECTORS}
    for s, earnings in series:
        for name, mask in scan(s, earnings).items():
            triggers[name] += int(mask.sum())
    return {
        "symbols": len(series),
        "total_bars": total_bars,
        "detectors": list(ALL_DETECTORS),
        "repeats": repeats,
        "scan_s_best": scan_best,
        "scan_s_median": statistics.median(scan_times),
        "scan_bars_per_s": total_bars / scan_best,
        "scan_symbols_per_s": len(series) / scan_best,
        "scan_us_per_symbol": scan_best / len(series) * 1e6,
        "triggers_full_history": triggers,
        "detect_events_s_best": ev_best,
        "detect_events_s_median": statistics.median(ev_times),
        "detect_events_bars_per_s": total_bars / ev_best,
        "detect_events_us_per_symbol": ev_best / len(series) * 1e6,
        "detect_events_lookback1_events": events_found,
    }


# --------------------------------------------------------------------------- (c) jax run


def _jax_command() -> list[str]:
    exe = shutil.which("jax")
    return [exe] if exe else [sys.executable, "-m", "jax_assistant.cli"]


def bench_run(data: Path, repeats: int) -> dict[str, Any]:
    cmd = [*_jax_command(), "run", "--data", str(data), "--json"]
    walls: list[float] = []
    last: dict[str, Any] = {}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="jax-bench-") as tmp:
            env = {
                k: v
                for k, v in os.environ.items()
                if k not in ("JAX_CONFIG", "JAX_DATABASE_URL", "DATABASE_URL") and not k.startswith("JAX_")
            }
            env["JAX_DATA_DIR"] = tmp
            t0 = time.perf_counter()
            # cwd=tmp: no ./jax.toml of the caller is picked up.
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"jax run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
            payload = json.loads(proc.stdout)
            db_bytes = sum(f.stat().st_size for f in Path(tmp).iterdir() if f.is_file())
        walls.append(wall)
        run = payload["run"]
        started = datetime.fromisoformat(run["startedAt"])
        finished = datetime.fromisoformat(run["finishedAt"])
        last = {
            "run_id": run["id"],
            "status": run["status"],
            "counts": run["counts"],
            "engine_s": (finished - started).total_seconds(),
            "db_bytes": db_bytes,
        }
    symbols = int(last["counts"].get("symbols", 0))
    best = min(walls)
    return {
        "command": " ".join(cmd),
        "env": {"JAX_DATA_DIR": "<fresh temp dir>"},
        "repeats": repeats,
        "wall_s_best": best,
        "wall_s_all": walls,
        "symbols": symbols,
        "symbols_per_s": symbols / best,
        "run_status": last["status"],
        "counts": last["counts"],
        "run_started_to_finished_s": last["engine_s"],
        "run_symbols_per_s_inside": symbols / last["engine_s"] if last["engine_s"] > 0 else None,
        "startup_and_load_s": best - last["engine_s"],
        "sqlite_bytes": last["db_bytes"],
    }


# --------------------------------------------------------------------------- output


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:,.{digits}f}"


def print_tables(res: dict[str, Any]) -> None:
    g = res["git"]
    title = f"bench/scan.py - commit {g['commit']}{' + uncommitted src changes' if g['src_dirty'] else ''}"
    t = Table(title=title, title_justify="left")
    t.add_column("part")
    t.add_column("metric")
    t.add_column("value", justify="right")
    ld = res["load"]
    t.add_row("a load", "file", Path(ld["file"]).name)
    t.add_row("", "symbols / clean bars", f"{ld['symbols']} / {ld['bars_clean']:,}")
    t.add_row("", "csv load s (first, in a fresh process)", _fmt(ld["load_s_first"]))
    t.add_row("", f"csv load s (best of {ld['repeats']})", _fmt(ld["load_s_best"]))
    t.add_row("", "clean all symbols s (best)", _fmt(ld["clean_all_s_best"]))
    t.add_row("", "load+clean rows/s", f"{ld['load_plus_clean_rows_per_s']:,.0f}")
    sc = res["scan"]
    t.add_row("b scan", "total bars", f"{sc['total_bars']:,}")
    t.add_row("", f"scan (4 detectors) wall s (best of {sc['repeats']})", _fmt(sc["scan_s_best"]))
    t.add_row("", "scan bars/s", f"{sc['scan_bars_per_s']:,.0f}")
    t.add_row("", "scan µs/symbol", _fmt(sc["scan_us_per_symbol"], 1))
    t.add_row("", "detect_events(lookback=1) wall s (best)", _fmt(sc["detect_events_s_best"]))
    t.add_row("", "detect_events bars/s", f"{sc['detect_events_bars_per_s']:,.0f}")
    if "run" in res:
        r = res["run"]
        c = r["counts"]
        t.add_row("c jax run", f"wall s (whole command, best of {r['repeats']})", _fmt(r["wall_s_best"], 2))
        t.add_row("", "symbols/s (whole command)", _fmt(r["symbols_per_s"], 1))
        t.add_row("", "run startedAt->finishedAt s", _fmt(r["run_started_to_finished_s"], 2))
        t.add_row("", "symbols/s inside the run", _fmt(r["run_symbols_per_s_inside"] or 0.0, 1))
        t.add_row("", "start-up + load s (wall - run)", _fmt(r["startup_and_load_s"], 2))
        t.add_row(
            "",
            "counts",
            f"{c.get('symbols')} symbols: {c.get('succeeded')} ok, {c.get('degraded')} degraded, "
            f"{c.get('failed')} failed, {c.get('cancelled')} cancelled; {c.get('events')} events, "
            f"{c.get('setups')} setups, {c.get('allowed')} allowed",
        )
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help=f"long-format csv(.gz) (default {DEFAULT_DATA})"
    )
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats of load and scan (best reported)")
    ap.add_argument("--run-repeats", type=int, default=1, help="timed repeats of the `jax run` subprocess")
    ap.add_argument("--skip-run", action="store_true", help="skip part (c), the `jax run` subprocess")
    ap.add_argument(
        "--out", type=Path, help="also write the results as JSON here (e.g. bench/results/scan.json)"
    )
    args = ap.parse_args(argv)
    if not args.data.is_file():
        ap.error(f"--data {args.data}: no such file")
    if args.repeats < 1 or args.run_repeats < 1:
        ap.error("repeats must be >= 1")

    res: dict[str, Any] = {
        "bench": "scan",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "git": git_revision(),
    }
    console.print(f"[dim]loading {args.data} ({args.repeats}x)...[/]")
    provider, res["load"] = bench_load(args.data, args.repeats)
    console.print("[dim]scanning...[/]")
    res["scan"] = bench_scan(provider, args.repeats)
    if not args.skip_run:
        console.print(f"[dim]jax run over {len(provider.symbols())} symbols ({args.run_repeats}x)...[/]")
        res["run"] = bench_run(args.data, args.run_repeats)
    print_tables(res)
    write_results(res, args.out, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
