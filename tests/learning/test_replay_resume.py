"""Kill a real ``jax replay`` process (SIGKILL) mid-way; the rerun resumes from its checkpoint and
ends with exactly the report of an uninterrupted replay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

SYMBOLS = ["AAPL", "MSFT", "XOM", "JPM", "GE", "KO", "PG", "INTC", "IBM", "CAT", "BA", "MCD"]


def command(shared_data: Path, state: Path, db: Path) -> list[str]:
    return [
        sys.executable, "-m", "jax_assistant", "replay", "--from", "2014-01-02", "--to", "2015-12-31",
        "--data", str(shared_data / "daily_ohlcv_stooq_sp500.csv.gz"), "--state-dir", str(state),
        "--db", f"sqlite+aiosqlite:///{db}", "--compare-static", "--json", *SYMBOLS,
    ]  # fmt: skip


def test_sigkill_then_resume_equals_an_uninterrupted_replay(shared_data: Path, tmp_path: Path) -> None:
    env = {**os.environ, "JAX_DATA_DIR": str(tmp_path)}
    killed_state = tmp_path / "killed"
    proc = subprocess.Popen(
        command(shared_data, killed_state, tmp_path / "a.db"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    checkpoint = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(killed_state.glob("replay_*.json")) if killed_state.exists() else []
        found = [f for f in found if not f.name.endswith(".report.json")]
        if found:
            data = json.loads(found[0].read_text())
            if data["next_day"] >= 60:
                checkpoint = found[0]
                os.kill(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert checkpoint is not None and proc.returncode == -signal.SIGKILL, "the replay must be killed mid-way"
    done_before = json.loads(checkpoint.read_text())["next_day"]
    assert 60 <= done_before < 450  # two years are 504 sessions: it was stopped well before the end

    resumed = subprocess.run(
        command(shared_data, killed_state, tmp_path / "a.db"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    clean = subprocess.run(
        command(shared_data, tmp_path / "clean", tmp_path / "b.db"), env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert clean.returncode == 0, clean.stderr
    a, b = json.loads(resumed.stdout), json.loads(clean.stdout)
    assert a == b
    assert a["sessions"] > done_before and a["arms"][0]["trades"] > 0
