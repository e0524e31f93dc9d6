"""Whole runs with the allocate barrier: the best setups of the watchlist take the room, and decisions
are byte-identical across repeated runs and across --concurrency 1 and 8 (Orchestrator and CLI).

These go through the engine's run-level stage support (the barrier), so they need it merged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from jax_assistant.cli import app
from jax_assistant.config import EngineConfig, Settings
from jax_assistant.domain import SymbolResult
from jax_assistant.orchestrator import Orchestrator, RunRequest

TIGHT = {"portfolio_constraints": {"max_positions": 3}}


def constraints_file(folder: Path, doc: dict[str, Any]) -> Path:
    path = folder / "risk-constraints.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def decisions(results: list[SymbolResult]) -> str:
    """Every setup's risk decision, keyed by setup id, as canonical JSON (creation times excluded)."""
    out = {t.setup.id: t.risk.to_contract() for r in results for t in r.trades}
    return json.dumps(out, sort_keys=True)


async def run_once(tmp_path: Path, name: str, concurrency: int, **settings: Any) -> list[SymbolResult]:
    s = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}",
        engine=EngineConfig(concurrency=concurrency),
        **settings,
    )
    async with Orchestrator(s) as orch:
        outcome = await orch.start_run(RunRequest())
    return outcome.results


async def test_repeated_and_concurrency_1_vs_8_runs_are_identical(tmp_path: Path) -> None:
    path = constraints_file(tmp_path, TIGHT)
    runs = [
        decisions(await run_once(tmp_path, f"r{i}", c, risk_constraints_path=path))
        for i, c in enumerate((1, 8, 8, 1, 8, 8))
    ]
    assert len(set(runs)) == 1
    trades = json.loads(runs[0])
    assert sum(1 for t in trades.values() if t["constraints"]["allowed"]) == 3


async def test_the_highest_ranked_setups_of_the_watchlist_take_the_room(tmp_path: Path) -> None:
    path = constraints_file(tmp_path, TIGHT)
    results = await run_once(tmp_path, "rank", 8, risk_constraints_path=path)
    trades = [t for r in results for t in r.trades]
    ranked = sorted((t for t in trades if t.risk.rank is not None), key=lambda t: t.risk.rank or 0)
    assert len(ranked) > 3  # more candidates than room
    allowed = [t for t in ranked if t.risk.allowed]
    full = [
        t for t in ranked if [v.code for v in t.risk.constraints.violations] == ["TOO_MANY_OPEN_POSITIONS"]
    ]
    assert len(allowed) == 3 and full
    assert max(t.risk.rank or 0 for t in allowed) < min(t.risk.rank or 0 for t in full)
    scores = [t.risk.score or 0 for t in ranked]
    assert scores == sorted(scores, reverse=True)
    # Every trade is a decision, none a candidate, and the effective risk is stored.
    assert {t.risk.decision for t in trades} == {"allocated"}
    assert all(t.risk.effective_risk_percent > 0 for t in allowed)


def test_cli_runs_at_concurrency_1_and_8_print_identical_decisions(
    runner: CliRunner, jax_env: dict[str, str], tmp_path: Path
) -> None:
    path = constraints_file(tmp_path, TIGHT)
    outs = []
    for concurrency in ("1", "8", "8"):
        result = runner.invoke(
            app,
            ["run", "--json", "--concurrency", concurrency],
            env={"JAX_RISK_CONSTRAINTS_PATH": str(path)},
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        trades = {t["setup"]["id"]: t["risk"] for s in payload["symbols"] for t in s["trades"]}
        outs.append(json.dumps(trades, sort_keys=True))
    assert outs[0] == outs[1] == outs[2]
