"""The memory stages inside real runs, with memory on the ``hindsight`` backend (the fake Hindsight
server on loopback), on both project databases: retained shape, idempotency, recall, outage -> outbox."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.api.helpers import LiveServer
from tests.fakes.hindsight import FakeHindsight, create_fake_hindsight
from tests.pgutil import backend_url

from jax_assistant.config import DEFAULT_PIPELINE, MemoryConfig, Settings
from jax_assistant.domain import SymbolStatus
from jax_assistant.memory.hindsight import ITEM_METADATA_KEY
from jax_assistant.orchestrator import Orchestrator, RunOutcome, RunRequest

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
SYMBOLS = ["ACME.SIM", "BOLT.SIM", "BYTE.SIM", "MEDX.SIM"]


@dataclass
class Rig:
    fake: FakeHindsight
    settings: Settings


@pytest.fixture(params=BACKENDS)
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    fake = FakeHindsight()
    server = LiveServer(create_fake_hindsight(fake))
    await server.start()
    try:
        async with backend_url(request.param, tmp_path) as url:
            settings = Settings(
                database_url=url,
                lookback=20,
                memory=MemoryConfig(backend="hindsight", url=server.url, timeout_s=1.0),
            )
            yield Rig(fake, settings)
    finally:
        await server.stop()


async def run(settings: Settings) -> RunOutcome:
    async with Orchestrator(settings) as orch:
        return await orch.start_run(RunRequest(symbols=SYMBOLS))


def decisions(fake: FakeHindsight) -> dict[str, dict[str, Any]]:
    return {
        u.document_id or "": json.loads(u.metadata[ITEM_METADATA_KEY])
        for u in fake.units.values()
        if u.bank == "trade_decisions"
    }


def stage(outcome: RunOutcome, symbol: str, name: str) -> Any:
    result = next(r for r in outcome.results if r.symbol == symbol)
    return next(s for s in result.stages if s.stage == name)


async def test_the_default_pipeline_recalls_first_and_retains_last() -> None:
    assert DEFAULT_PIPELINE[0] == "recall_memory" and DEFAULT_PIPELINE[-1] == "retain_memory"
    assert DEFAULT_PIPELINE.index("persist") < DEFAULT_PIPELINE.index("retain_memory")


async def test_a_run_retains_one_decision_per_symbol_and_event_in_the_contract_shape(rig: Rig) -> None:
    outcome = await run(rig.settings)
    assert all(r.status is SymbolStatus.SUCCEEDED for r in outcome.results), [
        (r.symbol, [(s.stage, s.status, s.error) for s in r.stages]) for r in outcome.results
    ]
    stored = decisions(rig.fake)
    expected = set()
    for result in outcome.results:
        for event in result.events:
            expected.add(f"decision:{result.symbol}:{event.id}")
        if any(t.setup.event_id is None for t in result.trades):
            expected.add(f"decision:{result.symbol}:{outcome.run.as_of}")
    assert expected and set(stored) == expected
    # One retain call for the whole run (retain_many), not one per symbol.
    posts = [r for r in rig.fake.requests if r[0] == "POST" and r[1].endswith("/memories")]
    assert len(posts) == 1
    result = next(r for r in outcome.results if r.events and r.trades)
    event = result.events[0]
    item = stored[f"decision:{result.symbol}:{event.id}"]
    assert item["type"] == "decision" and item["symbol"] == result.symbol
    assert item["source"] == {"system": "jax-orchestrator", "ref": outcome.run.id}
    assert set(item["data"]) == {"inputs", "setups", "research", "signals"}
    assert item["data"]["inputs"]["event"]["id"] == event.id
    mine = [t for t in result.trades if t.setup.event_id == event.id]
    assert [s["setup"]["id"] for s in item["data"]["setups"]] == [t.setup.id for t in mine]
    assert all("positionSize" in s["risk"] for s in item["data"]["setups"])
    assert {s["id"] for s in item["data"]["signals"]} == {e.id for e in result.events}
    assert item["summary"]


async def test_a_second_run_recalls_the_first_and_replaces_rather_than_duplicates(rig: Rig) -> None:
    await run(rig.settings)
    count = len(rig.fake.units)
    second = await run(rig.settings)
    assert len(rig.fake.units) == count  # same events -> same document ids -> replaced
    stored = decisions(rig.fake)
    for result in second.results:
        recalled = result.extras["recall_memory"]
        assert set(recalled) == {"decisions", "outcomes", "beliefs"}
        mine = {d for d in stored if d.startswith(f"decision:{result.symbol}:")}
        assert len(mine) <= 5  # the stage recalls five: with no more, it must see every one
        assert {d["id"] for d in recalled["decisions"]} == mine
        times = [d["ts"] for d in recalled["decisions"]]
        assert times == sorted(times, reverse=True)  # newest first


async def test_memory_down_degrades_symbols_and_fills_the_outbox_which_drains_next_run(rig: Rig) -> None:
    rig.fake.faults.status = 503
    outcome = await run(rig.settings)
    assert {r.status for r in outcome.results} == {SymbolStatus.DEGRADED}
    for symbol in SYMBOLS:
        assert stage(outcome, symbol, "recall_memory").status in ("failed", "short_circuited", "degraded")
        assert stage(outcome, symbol, "persist").status == "ok"  # the trades are stored regardless
        retain = stage(outcome, symbol, "retain_memory")
        assert retain.status == "degraded" and "outbox" in (retain.reason or "")
    assert rig.fake.units == {}
    async with Orchestrator(rig.settings) as orch:
        assert orch.memory_outbox is not None
        waiting = await orch.memory_outbox.pending()
        depth = await orch.memory_outbox.depth()
    expected = {f"decision:{r.symbol}:{e.id}" for r in outcome.results for e in r.events} | {
        f"decision:{r.symbol}:{outcome.run.as_of}"
        for r in outcome.results
        if any(t.setup.event_id is None for t in r.trades)
    }
    assert depth == len(expected) and {i.document_id for _, i in waiting} == expected

    rig.fake.faults.clear()
    again = await run(rig.settings)
    assert all(r.status is SymbolStatus.SUCCEEDED for r in again.results)
    assert set(decisions(rig.fake)) == expected  # nothing lost, nothing twice
    assert len(rig.fake.units) == len(expected)
    async with Orchestrator(rig.settings) as orch:
        assert orch.memory_outbox is not None
        assert await orch.memory_outbox.depth() == 0
