"""Research spend in `/status` (a real server) and research in the run summary."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.api.helpers import serve
from tests.fakes.dexter import FakeDexter
from tests.fakes.openai import FakeOpenAI
from tests.research.conftest import ALLOCATED, make_settings, run_once
from tests.research.test_llm_runs import llm_cfg

from jax_assistant.api.app import create_app
from jax_assistant.cli_report import Report
from jax_assistant.domain import utc_now
from jax_assistant.orchestrator import Orchestrator
from jax_assistant.research.store import ResearchStore

pytestmark = pytest.mark.realdata


async def test_status_shows_todays_spend_and_budgets(
    research_data: Path, sqlite_db: str, openai: FakeOpenAI
) -> None:
    settings = make_settings(research_data, sqlite_db, llm_cfg(openai, budget={"day_cost": 3.5}))
    async with Orchestrator(settings) as orch:
        await run_once(orch)
        assert orch.db is not None
        spent = await ResearchStore(orch.db).spend(day=utc_now().date())
    assert spent.calls == len(ALLOCATED) and spent.tokens > 0
    async with serve(create_app(settings)) as svc:
        body = (await svc.client.get("/status")).json()
    research = body["research"]
    assert research["providers"] == ["llm", "builtin"]
    assert research["budget"]["dayCost"] == 3.5
    assert research["spendToday"]["calls"] == spent.calls
    assert research["spendToday"]["tokens"] == spent.tokens
    assert research["spendToday"]["cost"] == pytest.approx(spent.cost, abs=1e-6)


async def test_run_summary_reports_research(research_data: Path, sqlite_db: str, dexter: FakeDexter) -> None:
    dexter.default = "500"
    cfg = {"providers": ["dexter"], "dexter": {"url": dexter.url, "batch_size": 1, "retry": {"attempts": 1}}}
    lenient = {"breakers": {"research.dexter": {"sliding_window_size": 100, "minimum_number_of_calls": 100}}}
    async with Orchestrator(make_settings(research_data, sqlite_db, cfg, resilience=lenient)) as orch:
        ran = await run_once(orch)
    lines = Report(ran.outcome.run, ran.results).summary()
    line = next(x for x in lines if x.startswith("research:"))
    assert f"research: {len(ALLOCATED)} setup(s): none answered | unavailable {len(ALLOCATED)}" in line
    assert "dexter: HTTP 500" in line

    dexter.default = "ok"
    async with Orchestrator(make_settings(research_data, sqlite_db, cfg, resilience=lenient)) as orch:
        ran = await run_once(orch)
        again = await run_once(orch)
    line = next(x for x in Report(ran.outcome.run, ran.results).summary() if x.startswith("research:"))
    assert f"dexter {len(ALLOCATED)} |" in line and "unavailable 0" in line
    line = next(x for x in Report(again.outcome.run, again.results).summary() if x.startswith("research:"))
    assert f"dexter {len(ALLOCATED)} ({len(ALLOCATED)} cached)" in line
