"""What the operator reads: an 80-column setups table, legend, clamps, quiet-symbol count and summary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console
from typer.testing import CliRunner

from jax_assistant.cli import app
from jax_assistant.cli_report import Report, clamps
from jax_assistant.domain import Run, SymbolResult, SymbolStatus


def jax(env: dict[str, str], cwd: Path, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    """The real console script on a pipe at a fixed width, as an operator's terminal or log sees it."""
    proc = subprocess.run(
        [sys.executable, "-m", "jax_assistant", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "COLUMNS": str(columns)},
        cwd=cwd,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def stored_run(runner: CliRunner, *args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["run", "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload


def test_table_fits_80_columns_one_line_per_setup(
    runner: CliRunner, jax_env: dict[str, str], tmp_path: Path
) -> None:
    payload = stored_run(runner)
    run_id = payload["run"]["id"]
    text = jax(jax_env, tmp_path, "runs", "show", run_id).stdout
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert "…" not in text  # nothing cut: every field fits
    assert f"Run {run_id} " in text and f"run {run_id} completed" in text  # the full id, unbroken
    trades = [t for s in payload["symbols"] for t in s["trades"]]
    # one table line per setup: each starts at the entry price, formatted as in the table
    rows = [line for line in lines if re.search(r"\s\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\d\s", line)]
    assert len(rows) == len(trades)
    # a rejection shows a short code that the legend spells out
    codes = {v["code"] for t in trades for v in t["risk"]["constraints"]["violations"]}
    at = next(i for i, line in enumerate(lines) if line.startswith("rejected: "))
    legend = lines[at]
    for more in lines[at + 1 :]:  # a long legend wraps between entries, indented
        if not more.startswith("  "):
            break
        legend += " " + more.strip()
    entries = [c.strip() for c in legend.removeprefix("rejected: ").split(",")]
    assert {c.split("=")[1] for c in entries} == codes


def test_quiet_symbols_are_counted_not_listed_unless_all(
    runner: CliRunner, jax_env: dict[str, str], tmp_path: Path
) -> None:
    payload = stored_run(runner)
    quiet = [s["symbol"] for s in payload["symbols"] if not s["trades"] and not s["events"]]
    assert quiet  # the sample market has some
    run_id = payload["run"]["id"]
    default = jax(jax_env, tmp_path, "runs", "show", run_id).stdout
    assert f"{len(quiet)} quiet symbol(s) not shown" in default
    assert not any(re.search(rf"^{re.escape(q)}\b", default, re.M) for q in quiet)
    every = jax(jax_env, tmp_path, "runs", "show", run_id, "--all").stdout
    assert all(re.search(rf"^{re.escape(q)}\b", every, re.M) for q in quiet)
    assert "quiet symbol" not in every


def test_summary_totals_match_the_stored_run(
    runner: CliRunner, jax_env: dict[str, str], tmp_path: Path
) -> None:
    payload = stored_run(runner, "--lookback", "5")
    text = jax(jax_env, tmp_path, "runs", "show", payload["run"]["id"]).stdout
    flat = " ".join(text.split())  # summary prose wraps at 80 columns
    trades = [t for s in payload["symbols"] for t in s["trades"]]
    allowed = [t for t in trades if t["risk"]["constraints"]["allowed"]]
    total = sum(t["risk"]["totalRisk"] for t in allowed)
    assert f"total risk ${total:,.0f} ({total / 10_000 * 100:.2f}%)" in flat
    reasons = Counter(v["code"] for t in trades for v in t["risk"]["constraints"]["violations"])
    assert "rejections: " + ", ".join(f"{k} {n}" for k, n in reasons.most_common()) in flat
    per_strategy = Counter(t["setup"]["strategyId"] for t in trades)
    for strategy, n in per_strategy.items():
        assert re.search(rf"{strategy} {n} \(\d+ allowed\)", flat)
    # lookback > 1: each setup row carries its session date
    header = next(line for line in text.splitlines() if line.startswith("symbol"))
    assert "date" in header.split()
    # every allowed, clamped setup says what was clamped, from -> to
    clamped = [t for t in allowed if t["risk"]["constraints"]["adjustments"]]
    assert clamped and flat.count(" clamped: ") == len(clamped)
    first = clamped[0]["risk"]["constraints"]["adjustments"][0]
    assert f"{first['requested']:g}->" in flat


def test_bracketed_text_is_printed_not_swallowed() -> None:
    run = Run(id="run_x", correlation_id="c", as_of=date(2025, 6, 27), provider="csv[prod]", simulated=False)
    results = [
        SymbolResult(
            run_id="run_x", symbol="[bold]X", status=SymbolStatus.FAILED, error="persist: [red]boom[/]"
        )
    ]
    console = Console(width=80, record=True, color_system=None)
    console.print(Report(run, results).renderable())
    text = console.export_text()
    assert "[bold]X" in text and "persist: [red]boom[/]" in text and "csv[prod]" in text
    assert "FAIL" in text  # a failed symbol is never quiet


def test_clamps_name_each_field_once_from_first_request_to_final_value() -> None:
    from jax_assistant.domain.models import (
        Adjustment,
        ConstraintResult,
        Direction,
        RiskResult,
        TradeRecord,
        TradeSetup,
    )

    record = TradeRecord(
        setup=TradeSetup(id="s", symbol="X", direction=Direction.LONG, entry=10, stop=9, strategy_id="eg"),
        risk=RiskResult(
            position_size=5,
            risk_per_unit=1,
            total_risk=5,
            r_multiple=2,
            risk_percent=2,
            account_size=1000,
            constraints=ConstraintResult(
                allowed=True,
                adjustments=[
                    Adjustment(field="position_size", requested=40, applied=20, rule="max_leverage"),
                    Adjustment(field="position_size", requested=20, applied=5, rule="max_sector_exposure"),
                ],
            ),
        ),
    )
    assert clamps(record) == "size 40->5 (leverage+sector_exposure)"


def test_runs_list_shows_full_ids_within_80_columns(
    runner: CliRunner, jax_env: dict[str, str], tmp_path: Path
) -> None:
    ids = [stored_run(runner, "ACME.SIM")["run"]["id"] for _ in range(2)]
    text = jax(jax_env, tmp_path, "runs", "list").stdout
    assert max(len(line) for line in text.splitlines()) <= 80, text
    for run_id in ids:
        assert re.search(rf"^{run_id} 2025-06-27 sample\*\s+1\s+1/0/0/0 completed", text, re.M), text


def test_a_long_run_shows_the_allowed_and_best_ranked_setups_and_counts_the_rest(
    runner: CliRunner, jax_env: dict[str, str]
) -> None:
    payload = stored_run(runner)
    run = Run.model_validate(payload["run"])
    results = [SymbolResult.model_validate(s) for s in payload["symbols"]]
    trades = [t for r in results for t in r.trades]
    allowed = {t.setup.id for t in trades if t.risk.allowed}
    assert allowed and len(trades) > len(allowed) + 3
    report = Report(run, results, max_setups=len(allowed) + 3)
    console = Console(width=80, record=True, color_system=None)
    console.print(report.renderable())
    text = console.export_text()
    # Every allowed setup, then the three best-ranked refusals; the rest are counted, not listed.
    ranked = sorted(
        (t for t in trades if t.setup.id not in allowed),
        key=lambda t: (t.risk.rank if t.risk.rank is not None else len(trades), t.setup.id),
    )
    assert report.visible == allowed | {t.setup.id for t in ranked[:3]}
    hidden = len(trades) - len(allowed) - 3
    assert f"{hidden} lower-ranked rejected setup(s)" in text
    assert f"jax trades list --run {run.id}" in text
    # --all lists every setup.
    assert Report(run, results, show_all=True, max_setups=1).visible is None


def test_a_candidate_never_allocated_is_not_shown_as_allowed(jax_env: dict[str, str], tmp_path: Path) -> None:
    # A pipeline without the allocate barrier stores candidates: they passed the per-symbol checks
    # but no portfolio decision was made, so the table must not say "ok".
    pipeline = '["detect_events","generate_trades","calculate_risk","persist"]'
    text = jax({**jax_env, "JAX_PIPELINE": pipeline}, tmp_path, "run").stdout
    table = text.split("ev: ")[0]
    assert " cand" in table and " ok" not in table
    assert "cand: not allocated (no allocate stage)" in " ".join(text.split())
