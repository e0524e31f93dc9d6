"""A portfolio state file's account size is the sizing base of a run (as its equity is the leverage base)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.risk.conftest import make_setup

from jax_assistant.config import Settings
from jax_assistant.domain import Run
from jax_assistant.orchestrator import Orchestrator


def run(settings: Settings) -> Run:
    # The params prepare_run records (the run's settings at its start).
    params = {"accountSize": settings.account_size, "riskPercent": settings.risk_percent}
    return Run(id="run_t", correlation_id="c", provider="sample", simulated=True, params=params)


def test_the_portfolio_files_account_size_sizes_the_trades(tmp_path: Path) -> None:
    portfolio = tmp_path / "portfolio.json"
    portfolio.write_text(json.dumps({"account_size": 50_000, "equity": 48_000}), encoding="utf-8")
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}", portfolio_path=portfolio)
    orch = Orchestrator(settings)
    services = orch.services(orch.provider(), run(settings))
    assert services.risk.account_size == 50_000 and services.risk.book.equity == 48_000
    risk = services.risk.candidate(make_setup(entry=100, stop=95, targets=(110.0,)))
    # 2 % (the 3 % default clamped) of 50 000, not of the settings' 10 000: 1 000 / 5 = 200 units.
    assert (risk.account_size, risk.position_size, risk.effective_risk_percent) == (50_000, 200, 2.0)


def test_without_a_portfolio_file_the_settings_account_size_sizes(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}", account_size=20_000)
    orch = Orchestrator(settings)
    risk = orch.services(orch.provider(), run(settings)).risk.candidate(make_setup())
    assert (risk.account_size, risk.position_size) == (20_000, 80)


def test_the_run_records_the_portfolio_files_account_size(tmp_path: Path) -> None:
    from jax_assistant.orchestrator import RunRequest

    portfolio = tmp_path / "portfolio.json"
    portfolio.write_text(json.dumps({"account_size": 50_000}), encoding="utf-8")
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}", portfolio_path=portfolio)
    prepared = Orchestrator(settings).prepare_run(RunRequest(symbols=["ACME.SIM"]))
    assert prepared.run.params["accountSize"] == 50_000  # what sized its trades, not the 10 000 default
