"""Every repository method round-trips its domain objects and writes idempotently."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy.exc import IntegrityError
from tests.storage.factories import (
    STAGES,
    T0,
    count_rows,
    make_audit,
    make_event,
    make_item,
    make_run,
    make_stage_result,
    make_symbol_result,
    make_trade,
)

from jax_assistant.domain import RunStatus, StageStatus, SymbolStatus, TradeRecord
from jax_assistant.pipeline.base import WorkItem
from jax_assistant.storage import CheckpointRow, Database, DeadLetter, Repository
from jax_assistant.storage.repository import AuditWrite
from jax_assistant.storage.tables import EventRow, StageCheckpointRow, TradeRow

# --------------------------------------------------------------------------- runs


async def test_run_round_trip(repo: Repository) -> None:
    run = make_run()
    assert await repo.create_run(run, lease_owner="me", lease_ttl_s=60) is True
    assert await repo.get_run(run.id) == run
    assert await repo.get_run("missing") is None


async def test_a_run_stored_from_its_dump_reads_as_the_run(repo: Repository) -> None:
    # An accept dumps the run once for its row and its executor message (run_json): the row must be
    # the one the repository would build from the run itself, on both create paths.
    given, audited = make_run("run-given"), make_run("run-audited")
    assert await repo.create_run(
        given, lease_owner="me", lease_ttl_s=60, run_json=given.model_dump(mode="json")
    )
    assert await repo.create_run_audited(
        audited,
        AuditWrite(make_audit("audit-accept"), idempotency_key="key-1", run_id=audited.id),
        lease_owner="me",
        lease_ttl_s=60,
        run_json=audited.model_dump(mode="json"),
    )
    assert await repo.get_run("run-given") == given
    assert await repo.get_run("run-audited") == audited


async def test_a_running_run_nobody_holds_reads_interrupted(repo: Repository) -> None:
    await repo.create_run(make_run())
    stored = await repo.get_run("run-1")
    assert stored is not None and stored.status is RunStatus.INTERRUPTED
    assert [r.status for r in await repo.list_runs()] == [RunStatus.INTERRUPTED]


async def test_create_run_twice_keeps_the_first(repo: Repository) -> None:
    run = make_run()
    await repo.create_run(run)
    assert await repo.create_run(run.model_copy(update={"provider": "other"})) is False
    stored = await repo.get_run(run.id)
    assert stored is not None and stored.provider == "simulated"


async def test_update_run(repo: Repository) -> None:
    run = make_run()
    await repo.create_run(run)
    done = run.model_copy(
        update={
            "status": RunStatus.COMPLETED,
            "finished_at": T0 + timedelta(minutes=3),
            "counts": {"events": 3, "trades": 2},
        }
    )
    await repo.update_run(done)
    await repo.update_run(done)  # idempotent
    assert await repo.get_run(run.id) == done
    assert len(await repo.list_runs()) == 1


async def test_update_run_inserts_unknown_run(repo: Repository) -> None:
    run = make_run("late", status=RunStatus.COMPLETED)
    await repo.update_run(run)
    assert await repo.get_run("late") == run


async def test_run_params_are_stored_as_json(repo: Repository) -> None:
    run = make_run(params={"asOf": date(2024, 3, 1), "nan": float("nan")})
    await repo.create_run(run)
    stored = await repo.get_run(run.id)
    assert stored is not None
    assert stored.params == {"asOf": "2024-03-01", "nan": None}


async def test_list_runs_newest_first(repo: Repository) -> None:
    for i in range(5):
        await repo.create_run(make_run(f"run-{i}", started_at=T0 + timedelta(hours=i)))
    assert [r.id for r in await repo.list_runs()] == ["run-4", "run-3", "run-2", "run-1", "run-0"]
    assert [r.id for r in await repo.list_runs(limit=2)] == ["run-4", "run-3"]


async def test_timestamps_come_back_in_utc(repo: Repository) -> None:
    from zoneinfo import ZoneInfo

    local = T0.astimezone(ZoneInfo("America/New_York"))
    await repo.create_run(make_run(started_at=local))
    stored = await repo.get_run("run-1")
    assert stored is not None
    assert stored.started_at == T0 and stored.started_at.utcoffset() == timedelta(0)


# --------------------------------------------------------------------------- checkpoints


async def test_checkpoints_round_trip_in_stage_order(repo: Repository) -> None:
    await repo.create_run(make_run())
    items = {}
    # Written out of order on purpose: loading must order by seq.
    for seq in (2, 0, 3, 1):
        for symbol in ("MSFT", "AAPL"):
            item = make_item(symbol=symbol, stages=STAGES[: seq + 1])
            items[symbol, seq] = item
            result = make_stage_result(STAGES[seq], seq=seq)
            await repo.save_checkpoint("run-1", symbol, seq, result, item)

    loaded = await repo.load_checkpoints("run-1")
    assert sorted(loaded) == ["AAPL", "MSFT"]
    for symbol, rows in loaded.items():
        assert [r.stage for r in rows] == STAGES
        assert [r.seq for r in rows] == [0, 1, 2, 3]
        for row in rows:
            assert isinstance(row, CheckpointRow)
            assert row.status is StageStatus.OK
            assert row.result == make_stage_result(row.stage, seq=row.seq)
            assert WorkItem.model_validate(row.item) == items[symbol, row.seq]
    assert await repo.load_checkpoints("other-run") == {}


async def test_checkpoint_accepts_a_plain_dict(repo: Repository) -> None:
    await repo.create_run(make_run())
    item = make_item().model_dump(mode="json")
    result = make_stage_result("detect_events", StageStatus.DEGRADED)
    raw = {**item, "as_of": date(2024, 3, 1), "extras": {"score": float("nan")}}
    await repo.save_checkpoint("run-1", "AAPL", 0, result, raw)
    [row] = (await repo.load_checkpoints("run-1"))["AAPL"]
    assert row.item == {**item, "extras": {"score": None}}
    assert row.status is StageStatus.DEGRADED


async def test_saving_a_checkpoint_twice_keeps_one_row_latest_wins(db: Database, repo: Repository) -> None:
    await repo.create_run(make_run())
    failed = make_stage_result("detect_events", StageStatus.FAILED)
    await repo.save_checkpoint("run-1", "AAPL", 0, failed, make_item())
    rerun = make_stage_result("detect_events")
    await repo.save_checkpoint("run-1", "AAPL", 0, rerun, make_item(stages=["x"]))
    assert await count_rows(db, StageCheckpointRow) == 1
    [row] = (await repo.load_checkpoints("run-1"))["AAPL"]
    assert row.result == rerun and row.item["completed_stages"] == ["x"]


async def test_checkpoint_for_unknown_run_is_rejected(db: Database, repo: Repository) -> None:
    with pytest.raises(IntegrityError):
        await repo.save_checkpoint("nope", "AAPL", 0, make_stage_result("detect_events"), make_item())
    assert await count_rows(db, StageCheckpointRow) == 0


# --------------------------------------------------------------------------- symbol results


async def test_symbol_result_round_trip(db: Database, repo: Repository) -> None:
    await repo.create_run(make_run(simulated=False))
    aapl, msft = (
        make_symbol_result("AAPL"),
        make_symbol_result("MSFT", trades=[], status=SymbolStatus.DEGRADED),
    )
    await repo.save_symbol_result(msft)
    await repo.save_symbol_result(aapl)
    assert await repo.get_symbol_results("run-1") == [aapl, msft]
    assert await repo.get_symbol_results("other") == []
    # The events and trades landed in their own tables, flagged like the run.
    assert await count_rows(db, EventRow, simulated=False, first_run_id="run-1") == 4
    assert await count_rows(db, TradeRow, simulated=False) == 2


async def test_symbol_result_upsert(db: Database, repo: Repository) -> None:
    await repo.create_run(make_run())
    await repo.save_symbol_result(make_symbol_result(status=SymbolStatus.RUNNING, trades=[]))
    final = make_symbol_result(status=SymbolStatus.FAILED, error="boom", data_issues=[])
    await repo.save_symbol_result(final)
    await repo.save_symbol_result(final)
    assert await repo.get_symbol_results("run-1") == [final]
    assert await count_rows(db, EventRow) == 2
    assert await count_rows(db, TradeRow) == 2


async def test_symbol_result_for_unknown_run_writes_nothing(db: Database, repo: Repository) -> None:
    with pytest.raises(LookupError):
        await repo.save_symbol_result(make_symbol_result())
    assert await count_rows(db, EventRow) == 0
    assert await count_rows(db, TradeRow) == 0


# --------------------------------------------------------------------------- events & trades


async def test_events_are_saved_once(db: Database, repo: Repository) -> None:
    events = [make_event(f"ev-{i}", minutes=i) for i in range(3)]
    assert await repo.save_events(events + events[:1], run_id="run-1", simulated=True) == 3
    assert await repo.save_events(events, run_id="run-2", simulated=True) == 0
    assert await repo.save_events([], run_id=None, simulated=True) == 0
    assert await count_rows(db, EventRow) == 3
    assert await count_rows(db, EventRow, first_run_id="run-1", simulated=True) == 3


async def test_trades_round_trip_and_are_saved_once(db: Database, repo: Repository) -> None:
    event = make_event()
    trades = [make_trade("s-1", event=event), make_trade("s-2", allowed=False)]
    assert await repo.save_trades(trades, run_id="run-1", simulated=True) == 2
    assert await repo.save_trades(trades, run_id="run-1", simulated=True) == 0
    assert await count_rows(db, TradeRow) == 2
    assert await repo.get_trade("s-1") == trades[0]
    assert await repo.get_trade("s-2") == trades[1]
    assert await repo.get_trade("missing") is None
    assert await count_rows(db, TradeRow, allowed=False, position_size=20) == 1


def ids(records: list[TradeRecord]) -> list[str]:
    return [r.setup.id for r in records]


async def test_list_trades_filters_and_orders(repo: Repository) -> None:
    trades = [
        make_trade(f"t-{i}", symbol, strategy_id=strategy, created_at=T0 + timedelta(minutes=i))
        for i, (symbol, strategy) in enumerate(
            [("AAPL", "gap"), ("AAPL", "vol"), ("MSFT", "gap"), ("AAPL", "gap"), ("MSFT", "vol")]
        )
    ]
    await repo.save_trades(trades, run_id=None, simulated=False)
    assert ids(await repo.list_trades()) == ["t-4", "t-3", "t-2", "t-1", "t-0"]
    assert ids(await repo.list_trades(limit=2)) == ["t-4", "t-3"]
    assert ids(await repo.list_trades(symbol="AAPL")) == ["t-3", "t-1", "t-0"]
    assert ids(await repo.list_trades(strategy_id="gap")) == ["t-3", "t-2", "t-0"]
    assert ids(await repo.list_trades(symbol="AAPL", strategy_id="gap")) == ["t-3", "t-0"]
    assert await repo.list_trades(symbol="NVDA") == []


async def test_large_batches_are_chunked(db: Database, repo: Repository) -> None:
    trades = [make_trade(f"t-{i:05d}", created_at=T0 + timedelta(seconds=i)) for i in range(1_201)]
    assert await repo.save_trades(trades, run_id="r", simulated=True) == 1_201
    assert await repo.save_trades(trades, run_id="r", simulated=True) == 0
    assert await count_rows(db, TradeRow) == 1_201


# --------------------------------------------------------------------------- audit


async def test_audit_round_trip_and_idempotency(repo: Repository) -> None:
    first = make_audit("a-1", seconds=2)
    assert await repo.record_audit(first, idempotency_key="run-1:AAPL:detect:1", run_id="run-1") is True
    # Same key (a retried write with a fresh id) and same id under another key are both ignored.
    assert await repo.record_audit(make_audit("a-x"), idempotency_key="run-1:AAPL:detect:1") is False
    assert await repo.record_audit(first, idempotency_key="another-key") is False
    failure = make_audit("a-2", seconds=1, outcome="error", error="Timeout")
    assert await repo.record_audit(failure, idempotency_key="k2", run_id="run-1", symbol="AAPL") is True
    other = make_audit("a-3", correlation_id="corr-other")
    assert await repo.record_audit(other, idempotency_key="k3", run_id="run-2") is True

    assert await repo.list_audit(correlation_id="corr-run-1") == [failure, first]
    assert await repo.list_audit(run_id="run-1") == [failure, first]
    assert await repo.list_audit(run_id="run-2") == [other]
    assert await repo.list_audit() == [other, failure, first]
    assert await repo.list_audit(limit=1) == [other]


# --------------------------------------------------------------------------- dead letters


async def test_dead_letter_lifecycle(repo: Repository) -> None:
    await repo.create_run(make_run())
    await repo.create_run(make_run("run-2"))
    item = make_item()
    dl_id = await repo.add_dead_letter("run-1", "AAPL", "calculate_risk", "Timeout", 3, item)
    assert await repo.add_dead_letter("run-1", "AAPL", "calculate_risk", "again", 4, item) == dl_id
    other_id = await repo.add_dead_letter("run-1", "MSFT", "detect_events", "boom", 1, {"symbol": "MSFT"})
    assert other_id != dl_id

    [letter, _] = await repo.list_dead_letters(run_id="run-1")
    assert isinstance(letter, DeadLetter)
    assert (letter.id, letter.symbol, letter.stage, letter.error, letter.attempts, letter.status) == (
        dl_id,
        "AAPL",
        "calculate_risk",
        "Timeout",
        3,
        "open",
    )
    assert WorkItem.model_validate(letter.item) == item
    assert letter.created_at.utcoffset() == timedelta(0)
    assert await repo.get_dead_letter(dl_id) == letter

    assert await repo.mark_dead_letter(dl_id, "retried", retried_by_run_id="run-2") is True
    assert [d.id for d in await repo.list_dead_letters()] == [other_id]
    [retried] = await repo.list_dead_letters(status="retried")
    assert retried.retried_by_run_id == "run-2"

    assert await repo.mark_dead_letter(dl_id, "resolved") is True
    resolved = await repo.get_dead_letter(dl_id)
    assert resolved is not None and resolved.status == "resolved" and resolved.retried_by_run_id == "run-2"
    assert [d.id for d in await repo.list_dead_letters(status=None)] == [dl_id, other_id]
    assert await repo.list_dead_letters(run_id="run-2", status=None) == []

    assert await repo.mark_dead_letter(999_999, "resolved") is False
    assert await repo.get_dead_letter(999_999) is None
    with pytest.raises(ValueError, match="invalid dead-letter status"):
        await repo.mark_dead_letter(dl_id, "bogus")  # type: ignore[arg-type]


async def test_delta_checkpoints_load_as_whole_items_and_a_broken_chain_as_nothing(repo: Repository) -> None:
    await repo.create_run(make_run())
    whole = make_item(stages=STAGES[:1])
    await repo.save_checkpoint("run-1", "AAPL", 0, make_stage_result(STAGES[0], seq=0), whole)
    # What the engine writes after a stage that changed only completed_stages and extras.
    delta = {"delta_of": 0, "completed_stages": STAGES[:2], "extras": {"x": 1}}
    await repo.save_checkpoint("run-1", "AAPL", 1, make_stage_result(STAGES[1], seq=1), delta)
    # Its base (seq 2) is not the row before it (seq 1): nothing to resume from.
    broken = {"delta_of": 2, "completed_stages": STAGES[:4]}
    await repo.save_checkpoint("run-1", "AAPL", 3, make_stage_result(STAGES[3], seq=3), broken)
    rows = (await repo.load_checkpoints("run-1"))["AAPL"]
    assert [r.seq for r in rows] == [0, 1, 3]
    expected = whole.model_copy(update={"completed_stages": STAGES[:2], "extras": {"x": 1}})
    assert WorkItem.model_validate(rows[1].item) == expected
    assert rows[2].item == {}


def test_an_engine_snapshot_is_the_items_json_byte_for_byte() -> None:
    from jax_assistant.engines.local import _snapshot

    item = make_item(stages=STAGES[:2]).model_copy(update={"extras": {"a": [1.5, float("nan")], "b": "é"}})
    snap = _snapshot(item)
    assert snap.text == item.model_dump_json()
    changed = _snapshot(item.model_copy(update={"data_issues": ["gap"]}))
    assert changed.delta(snap, 4) == '{"delta_of":4,"data_issues":["gap"]}'
