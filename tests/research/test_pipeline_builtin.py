"""The default research (builtin) through real pipeline runs on real data."""

from __future__ import annotations

import csv
import gzip
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from tests.research.conftest import ALLOCATED, AS_OF, make_settings, run_once

from jax_assistant.config import DEFAULT_PIPELINE
from jax_assistant.orchestrator import Orchestrator

pytestmark = pytest.mark.realdata


def test_research_runs_after_allocate_and_before_persist() -> None:
    assert DEFAULT_PIPELINE.index("research") == DEFAULT_PIPELINE.index("allocate") + 1
    assert DEFAULT_PIPELINE.index("persist") == DEFAULT_PIPELINE.index("research") + 1


async def test_only_allocated_setups_get_builtin_research(research_data: Path, db_url: str) -> None:
    async with Orchestrator(make_settings(research_data, db_url, {})) as orch:
        ran = await run_once(orch)
        allocated = ran.allocated()
        assert {t.setup.symbol for t in allocated} == ALLOCATED
        for trade in allocated:
            prov = trade.setup.research_provenance
            assert prov is not None and prov.status == "ok"
            assert prov.provider == "builtin" and prov.source == "fresh"
            assert prov.tokens == 0 and prov.cost == 0.0
            bundle = trade.setup.research
            assert bundle is not None and bundle.ticker == trade.setup.symbol
            assert bundle.summary.startswith(f"{trade.setup.symbol} closed at")
            assert all(isinstance(v, float) for v in bundle.metrics.values())
        for trade in ran.not_allocated():
            assert trade.setup.research is None and trade.setup.research_provenance is None
        # Nothing failed, so no symbol is degraded by research.
        assert all(r.status.value == "succeeded" for r in ran.results)
        # The bundle is stored with the setup (persist runs after research).
        assert orch.repository is not None
        stored = await orch.repository.get_trade(allocated[0].setup.id)
        assert stored is not None and stored.setup.research == allocated[0].setup.research


def _closes(data: Path, symbol: str, as_of: date) -> tuple[list[float], list[float]]:
    closes, volumes = [], []
    with gzip.open(data, "rt", newline="") as f:
        for row in csv.DictReader(f):
            if row["symbol"] == symbol and row["date"] <= as_of.isoformat():
                closes.append(float(row["close"]))
                volumes.append(float(row["volume"]))
    return closes, volumes


def _report_dates(path: Path, symbol: str, as_of: date) -> list[str]:
    with open(path, newline="") as f:
        return sorted(
            r["date"] for r in csv.DictReader(f) if r["symbol"] == symbol and r["date"] <= as_of.isoformat()
        )


async def test_builtin_metrics_match_hand_computation_from_the_csv(
    research_data: Path, sqlite_db: str
) -> None:
    async with Orchestrator(make_settings(research_data, sqlite_db, {})) as orch:
        ran = await run_once(orch)
    trade = next(t for t in ran.allocated() if t.setup.symbol == "JNJ")
    assert trade.setup.research is not None
    m = trade.setup.research.metrics
    closes, volumes = _closes(research_data, "JNJ", AS_OF)
    assert m["last_close"] == pytest.approx(closes[-1])
    assert m["change_20d_pct"] == pytest.approx((closes[-1] / closes[-21] - 1) * 100)
    assert m["change_5d_pct"] == pytest.approx((closes[-1] / closes[-6] - 1) * 100)
    assert m["sma_50"] == pytest.approx(sum(closes[-50:]) / 50)
    rets = [closes[i] / closes[i - 1] - 1 for i in range(len(closes) - 20, len(closes))]
    mean = sum(rets) / 20
    sd = (sum((r - mean) ** 2 for r in rets) / 19) ** 0.5
    assert m["volatility_20d_pct"] == pytest.approx(sd * 100)
    assert m["avg_volume_20d"] == pytest.approx(sum(volumes[-21:-1]) / 20)
    assert m["volume_ratio_20d"] == pytest.approx(volumes[-1] / (sum(volumes[-21:-1]) / 20))
    reports = _report_dates(research_data.parent / "earnings_dates.csv", "JNJ", AS_OF)
    assert m["days_since_earnings"] == float((AS_OF - date.fromisoformat(reports[-1])).days)
    assert np.isfinite(list(m.values())).all()
    assert "20-day volatility" in trade.setup.research.summary


async def test_past_decisions_from_storage_feed_the_next_run(research_data: Path, db_url: str) -> None:
    from jax_assistant.orchestrator import RunRequest

    async with Orchestrator(make_settings(research_data, db_url, {})) as orch:
        await orch.start_run(RunRequest(symbols=["JNJ", "XOM"], as_of=date(2017, 10, 20), lookback=5))
        ran = await run_once(orch, ["JNJ", "XOM"])
    earlier = {t.setup.symbol: t for t in ran.allocated()}
    assert earlier, "the later run allocates something"
    for trade in earlier.values():
        assert trade.setup.research is not None
        m = trade.setup.research.metrics
        # The first run (2017-10-20) stored setups for these symbols; only sessions before 2017-11-03 count.
        assert m["symbol_past_setups"] >= 1
        assert any("earlier setup(s)" in p for p in trade.setup.research.key_points)
