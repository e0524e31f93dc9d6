"""One year of ``jax replay`` over all 505 real symbols, with outcomes and weekly reflection.

    python bench/replay.py                       # 2016, learning arm only (the issue's target: <= 60 s)
    python bench/replay.py --compare-static      # both arms
    python bench/replay.py --out bench/results/replay.json

Times the replay itself in-process (data already loaded: load is timed on its own) and reports wall
and CPU seconds: on a shared machine the wall time mostly says how busy the other processes were, so
both are recorded together with the load average. Nothing is written to the data folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, git_revision, write_results

from jax_assistant.analysis.detectors import DetectorConfig
from jax_assistant.learning.replay import Replayer, ReplayParams
from jax_assistant.marketdata import CsvProvider
from jax_assistant.risk import load_risk_constraints
from jax_assistant.strategies import StrategyRegistry

DATA = REPO.parent / "shared" / "data"
TARGET_S = 60.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--from", dest="start", default="2016-01-04")
    ap.add_argument("--to", dest="end", default="2016-12-30")
    ap.add_argument("--compare-static", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    console = Console()
    t0 = time.perf_counter()
    provider = CsvProvider(
        DATA / "daily_ohlcv_stooq_sp500.csv.gz",
        earnings_path=DATA / "earnings_details.csv",
        sectors_path=DATA / "sectors.csv",
    )
    symbols = provider.symbols()
    load_s = time.perf_counter() - t0
    params = ReplayParams(
        start=date.fromisoformat(args.start),
        end=date.fromisoformat(args.end),
        symbols=symbols,
        compare_static=args.compare_static,
    )
    with tempfile.TemporaryDirectory() as state:
        replayer = Replayer(
            provider,
            params,
            detectors=DetectorConfig(),
            constraints=load_risk_constraints(),
            registry_factory=StrategyRegistry.default,
            state_dir=Path(state),
        )
        w0, c0 = time.perf_counter(), time.process_time()
        result = replayer.run()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    learning = result.arms["learning"]
    figures = {
        "what": "jax replay, one year, every symbol, outcomes + weekly reflection",
        "period": [args.start, args.end],
        "sessions": len(result.universe.sessions),
        "symbols": len(result.universe.closes),
        "setups": sum(len(v) for v in result.universe.setups.values()),
        "arms": params.arms,
        "trades_learning": len(learning.taken),
        "load_s": round(load_s, 2),
        "replay_wall_s": round(wall, 2),
        "replay_cpu_s": round(cpu, 2),
        "target_s": TARGET_S,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        **git_revision(),
    }
    for k, v in figures.items():
        console.print(f"{k}: {v}")
    verdict = "met" if wall <= TARGET_S else "NOT met (wall)"
    console.print(f"target {TARGET_S:.0f} s: {verdict}; cpu {cpu:.1f} s")
    write_results(figures, args.out, console)


if __name__ == "__main__":
    main()
