"""End-to-end fixtures: an isolated data dir per test and a small real-data extract."""

from __future__ import annotations

import csv
import gzip
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

# Real symbols chosen for what they exercise: earnings reactions (AAPL, MSFT, AMZN, NFLX),
# decimal-shift bad ticks (EIX, AVB), missing days (CHTR), a plain large cap (JPM).
REAL_SYMBOLS = ("AAPL", "MSFT", "AMZN", "NFLX", "EIX", "AVB", "CHTR", "JPM")


@pytest.fixture(scope="session")
def real_subset(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A gzipped long-format extract of real bars for REAL_SYMBOLS, with the real earnings and sectors
    files beside it (the csv provider picks those up from the same folder)."""
    folder = tmp_path_factory.mktemp("real")
    target = folder / "bars.csv.gz"
    with (
        gzip.open(shared_data / "daily_ohlcv_stooq_sp500.csv.gz", "rt", newline="") as src,
        gzip.open(target, "wt", newline="") as dst,
    ):
        reader = csv.reader(src)
        writer = csv.writer(dst)
        writer.writerow(next(reader))
        for row in reader:
            if row[0] in REAL_SYMBOLS:
                writer.writerow(row)
    for name in ("earnings_dates.csv", "earnings_details.csv", "sectors.csv"):
        shutil.copy(shared_data / name, folder / name)
    return target


@pytest.fixture
def jax_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A private SQLite data dir; no config file or stray JAX_* variables leak in."""
    import os

    for key in list(os.environ):
        if key.startswith("JAX_") or key == "DATABASE_URL":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    env = {"JAX_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield env


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
