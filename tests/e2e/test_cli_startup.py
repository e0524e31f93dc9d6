"""The fixed costs around a `jax run`'s stages: the data file read ahead from before the settings, and
the report choosing its rows once."""

from __future__ import annotations

import json
import threading
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.test_cli_report import stored_run
from typer.testing import CliRunner

import jax_assistant.config
from jax_assistant import cli_report
from jax_assistant.cli import app
from jax_assistant.cli_report import Report
from jax_assistant.domain import Run, SymbolResult
from jax_assistant.marketdata import calendar, csv_provider


def _bars_csv(path: Path, symbols: tuple[str, ...] = ("AAA", "BBB"), n: int = 40) -> None:
    days: list[date] = []
    d = date(2021, 3, 1)
    while len(days) < n:
        if d.weekday() < 5:
            days.append(d)
        d += timedelta(days=1)
    lines = ["symbol,date,open,high,low,close,volume"]
    for k, sym in enumerate(symbols):
        base = 10.0 + 10 * k
        lines += [
            f"{sym},{day},{base + i},{base + i + 1},{base + i - 1},{base + i + 0.5},{1000 + i}"
            for i, day in enumerate(days)
        ]
    path.write_text("\n".join(lines) + "\n")


def test_run_reads_its_data_file_ahead_from_before_the_settings_and_each_file_once(
    runner: CliRunner, jax_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "bars.csv"
    _bars_csv(data)
    (tmp_path / "sectors.csv").write_text("symbol,sector\nAAA,Energy\nBBB,Utilities\n")
    reads: list[tuple[str, str]] = []
    real_read = csv_provider._read_typed

    def read(path: Path) -> Any:
        reads.append((path.name, threading.current_thread().name))
        return real_read(path)

    monkeypatch.setattr(csv_provider, "_read_typed", read)
    real_sectors = calendar.load_sectors

    def sectors(*args: Any, **kwargs: Any) -> Any:
        reads.append(("sectors.csv", threading.current_thread().name))
        return real_sectors(*args, **kwargs)

    sectors.__name__ = "load_sectors"  # the prefetch keys side files by their loader's name
    monkeypatch.setattr(csv_provider, "load_sectors", sectors)
    pending_at_settings: list[bool] = []
    real_settings = jax_assistant.config.load_settings

    def load_settings(*args: Any, **kwargs: Any) -> Any:
        pending_at_settings.append(bool(csv_provider._prefetched))
        return real_settings(*args, **kwargs)

    monkeypatch.setattr(jax_assistant.config, "load_settings", load_settings)

    result = runner.invoke(app, ["run", "--data", str(data), "--json"], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    assert pending_at_settings == [True]  # the read had started when the settings were loaded
    # Read once, ahead, and the side file after it on its own thread: the provider loaded neither.
    assert reads == [("bars.csv", "jax-csv-prefetch"), ("sectors.csv", "jax-csv-prefetch-sides")]
    payload = json.loads(result.stdout)
    assert {s["symbol"] for s in payload["symbols"]} == {"AAA", "BBB"}
    assert payload["run"]["provider"] == "csv"


def test_run_with_the_sample_provider_reads_no_data_file_ahead(
    runner: CliRunner, jax_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "bars.csv"
    _bars_csv(data)
    started: list[Path] = []
    monkeypatch.setattr(csv_provider, "prefetch", lambda path, **_: started.append(Path(path)))
    result = runner.invoke(app, ["run", "--provider", "sample", "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    assert started == []  # --provider sample: the file is not what the run reads


def test_the_report_chooses_its_rows_once_for_the_table_notes_and_summary(
    runner: CliRunner, jax_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = stored_run(runner)
    run = Run.model_validate(payload["run"])
    results = [SymbolResult.model_validate(s) for s in payload["symbols"]]
    tested: list[str] = []
    real = cli_report.is_quiet

    def is_quiet(result: SymbolResult) -> bool:
        tested.append(result.symbol)
        return real(result)

    monkeypatch.setattr(cli_report, "is_quiet", is_quiet)
    report = Report(run, results, max_setups=1)
    report.renderable()
    # Once per symbol to pick the rows, once more to count the quiet ones under the table.
    assert sorted(tested) == sorted([r.symbol for r in results] * 2)
    assert report.shown() is report.shown()
