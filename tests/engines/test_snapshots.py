"""The engine's JSON record of each item (``_snapshot``): byte for byte ``model_dump_json``, reusing the
text of fields an intact stage handed back untouched, and never a stale text after a stage that may
have changed a field in place (or may still change it after returning)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import select
from tests.engines.helpers import FnStage, make_engine, run_symbols
from tests.storage.factories import make_event, make_trade

from jax_assistant.domain import Event, SymbolStatus, TradeRecord
from jax_assistant.engines.local import _FIELDS, _BadOutput, _snapshot
from jax_assistant.pipeline.base import BaseRunStage, RunStageOutput, StageContext, StageOutput, WorkItem
from jax_assistant.pipeline.resilience import FakeClock
from jax_assistant.storage import Repository
from jax_assistant.storage.repository import CHECKPOINT_TRADES_REF
from jax_assistant.storage.tables import StageCheckpointRow


def _event(n: int, **payload: Any) -> Event:
    return Event(
        id=f"ev{n}", symbol="AAA", type="gap_open", time=datetime(2024, 1, n, tzinfo=UTC), payload=payload
    )


def _item(**over: Any) -> WorkItem:
    base: dict[str, Any] = {
        "run_id": "r1",
        "symbol": "AAA",
        "as_of": date(2024, 1, 5),
        "lookback": 3,
        "correlation_id": "c1",
    }
    return WorkItem(**(base | over))


_E = make_event("ev-1", "AAA")
_T = make_trade("s1", "AAA", event=_E)
_T.risk.r_multiple = math.nan  # NaN inside a trade is null, as model_dump_json writes it
ITEMS = [
    _item(),
    _item(events=[_event(1, pct=1.5), _event(2, pct=math.nan, note='ü "q"')], data_issues=["x"]),
    _item(extras={"a": {"b": [1, 2.5, None, float("inf")], "s": {3}}, "t": (1, "x")}, completed_stages=["s"]),
    _item(events=[_E], setups=[_T.setup], trades=[_T, make_trade("s2", event=None)]),
]


@pytest.mark.parametrize("item", ITEMS)
def test_a_snapshot_is_model_dump_json_byte_for_byte(item: WorkItem) -> None:
    snap = _snapshot(item)
    assert snap.text == item.model_dump_json()
    # ... also when built from a base whose texts it reuses.
    again = _snapshot(item.model_copy(update={"completed_stages": ["x"]}), (item, snap))
    assert again.text == item.model_copy(update={"completed_stages": ["x"]}).model_dump_json()


def test_an_intact_stage_reuses_the_text_of_what_it_hands_back_untouched() -> None:
    item = ITEMS[1]
    snap = _snapshot(item)
    out = item.model_copy(update={"data_issues": ["y"]})
    again = _snapshot(out, (item, snap), intact=True)
    events = _FIELDS.index("events")
    assert again.parts[events] is snap.parts[events]  # not encoded again
    assert again.parts[_FIELDS.index("data_issues")] == '["y"]'


def test_a_stage_that_may_mutate_gets_every_handed_back_field_encoded_again() -> None:
    item = ITEMS[1]
    snap = _snapshot(item)
    item.events[0].payload["pct"] = 99.0  # changed in place, handed back as the same list
    again = _snapshot(item, (item, snap), intact=False)
    assert again.text == item.model_dump_json() != snap.text
    # What such a stage handed back stays suspect: a later intact stage encodes it again too.
    later = _snapshot(item, (item, again), intact=True)
    assert later.parts[_FIELDS.index("events")] is not again.parts[_FIELDS.index("events")]
    # Immutable values are the same text whoever handed them back.
    assert later.parts[_FIELDS.index("symbol")] is snap.parts[_FIELDS.index("symbol")]


def test_an_unserialisable_field_fails_as_before() -> None:
    bad = ITEMS[0].model_copy(update={"extras": {"obj": object()}})
    with pytest.raises(_BadOutput, match="not JSON-serialisable"):
        _snapshot(bad)
    wrong = ITEMS[0].model_copy(update={"events": ["not an event"]})
    with pytest.raises(_BadOutput):
        _snapshot(wrong, (ITEMS[0], _snapshot(ITEMS[0])), intact=True)


class IntactStage(FnStage):
    leaves_input_intact = True


async def test_a_leaky_stage_then_an_intact_one_checkpoints_what_the_item_really_holds(
    sqlite_repository: Repository, clock: FakeClock
) -> None:
    # The leaky (not intact) stage changes its output after returning it (a cache it keeps); the intact
    # stage after it hands that output back untouched. Its checkpoint must hold the item as it then is,
    # not the text taken when the leaky stage returned.
    tasks: set[asyncio.Task[None]] = set()

    async def leaky(ctx: StageContext, item: WorkItem) -> StageOutput:
        out = item.model_copy(update={"extras": {"leaky": {"n": 1}}})

        async def later() -> None:
            out.extras["leaky"]["n"] = 2

        tasks.add(asyncio.get_running_loop().create_task(later()))
        return StageOutput(item=out)

    async def intact(ctx: StageContext, item: WorkItem) -> StageOutput:
        for _ in range(3):
            await asyncio.sleep(0)  # the leaky stage's task runs meanwhile
        return StageOutput(item=item)

    engine = make_engine(
        [FnStage("leaky", leaky), IntactStage("intact", intact)], repository=sqlite_repository, clock=clock
    )
    run, results = await run_symbols(engine, ["AAA"])
    assert results["AAA"].status is SymbolStatus.SUCCEEDED
    rows = (await sqlite_repository.load_checkpoints(run.id))["AAA"]
    assert [r.item["extras"]["leaky"]["n"] for r in rows] == [1, 2]
    assert results["AAA"].extras["leaky"] == {"n": 2}


class IntactBarrier(BaseRunStage):
    """A run stage like allocate: a new decision for some trades (model_copy), the rest handed back."""

    name = "decide"
    leaves_input_intact = True

    async def run_all(self, ctx: StageContext, items: Sequence[WorkItem]) -> RunStageOutput:
        out = []
        for item in items:
            trades = list(item.trades)
            trades[0] = trades[0].model_copy(update={"risk": trades[0].risk.model_copy(update={"rank": 7})})
            out.append(item.model_copy(update={"trades": trades}))
        return RunStageOutput(items=out)


async def test_trades_are_checkpointed_as_references_and_load_back_whole(
    sqlite_repository: Repository, clock: FakeClock
) -> None:
    # A trade is mostly its setup and event, which the item holds already: the checkpoints after the
    # stages that make or re-decide trades name those by position (and unchanged trades by their
    # position before), and loading them gives back exactly the items the stages returned.
    seen: dict[tuple[str, str], dict[str, Any]] = {}

    def keep(stage: str, item: WorkItem) -> StageOutput:
        seen[(item.symbol, stage)] = item.model_dump(mode="json", exclude={"completed_stages"})
        return StageOutput(item=item)

    async def setups(ctx: StageContext, item: WorkItem) -> StageOutput:
        events = [make_event(f"ev-{item.symbol}-{n}", item.symbol, minutes=n) for n in range(2)]
        made = [make_trade(f"s-{item.symbol}-{n}", item.symbol, event=events[n % 2]).setup for n in range(3)]
        made.append(make_trade(f"s-{item.symbol}-x", item.symbol, event=None).setup)
        return keep("setups", item.model_copy(update={"events": events, "setups": made}))

    async def risk(ctx: StageContext, item: WorkItem) -> StageOutput:
        events = {e.id: e for e in item.events}
        trades = [
            TradeRecord(setup=s, risk=make_trade().risk, event=events.get(s.event_id or ""))
            for s in reversed(item.setups)
        ]
        if item.symbol == "BBB":  # a trade whose setup is a copy the item does not hold: stored whole
            trades.append(trades[0].model_copy(update={"setup": trades[0].setup.model_copy()}))
        return keep("risk", item.model_copy(update={"trades": trades}))

    async def after(ctx: StageContext, item: WorkItem) -> StageOutput:
        return keep("after", item)

    engine = make_engine(
        [
            IntactStage("setups", setups),
            IntactStage("risk", risk),
            IntactBarrier(),
            IntactStage("after", after),
        ],
        repository=sqlite_repository,
        clock=clock,
    )
    run, results = await run_symbols(engine, ["AAA", "BBB"])
    assert {r.status for r in results.values()} == {SymbolStatus.SUCCEEDED}
    loaded = await sqlite_repository.load_checkpoints(run.id)
    async with sqlite_repository._db.engine.connect() as conn:
        raw = {
            (r.symbol, r.stage): r.item
            for r in (
                await conn.execute(select(StageCheckpointRow).where(StageCheckpointRow.run_id == run.id))
            )
        }
    for symbol, rows in loaded.items():
        by_stage = {r.stage: {k: v for k, v in r.item.items() if k != "completed_stages"} for r in rows}
        assert by_stage["setups"] == seen[(symbol, "setups")]
        assert by_stage["risk"] == seen[(symbol, "risk")]
        assert by_stage["after"] == seen[(symbol, "after")]
        assert by_stage["decide"] == {**seen[(symbol, "after")]}
        if symbol == "BBB":
            assert CHECKPOINT_TRADES_REF not in raw[(symbol, "risk")]
            assert len(raw[(symbol, "risk")]["trades"]) == 5
            continue
        risk_refs = raw[(symbol, "risk")][CHECKPOINT_TRADES_REF]
        assert [r[0] for r in risk_refs] == [3, 2, 1, 0]  # setups by position
        assert [r[2] for r in risk_refs] == [None, 0, 1, 0]  # events by position
        assert "trades" not in raw[(symbol, "risk")]
        decide_refs = raw[(symbol, "decide")][CHECKPOINT_TRADES_REF]
        assert [r[1]["rank"] for r in decide_refs] == [7, None, None, None]
