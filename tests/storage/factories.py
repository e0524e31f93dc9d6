"""Small builders of domain objects for the storage tests."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from jax_assistant.domain import (
    AuditEvent,
    ConstraintResult,
    Direction,
    Event,
    ResearchBundle,
    RiskResult,
    Run,
    StageResult,
    StageStatus,
    SymbolResult,
    SymbolStatus,
    TradeRecord,
    TradeSetup,
    Violation,
)
from jax_assistant.pipeline.base import WorkItem
from jax_assistant.storage import Database
from jax_assistant.storage.tables import Base

STAGES = ["detect_events", "generate_trades", "calculate_risk", "persist"]
T0 = datetime(2024, 3, 4, 14, 30, 0, 123456, tzinfo=UTC)


def make_run(run_id: str = "run-1", *, started_at: datetime = T0, simulated: bool = True, **kw: Any) -> Run:
    return Run(
        id=run_id,
        correlation_id=kw.pop("correlation_id", f"corr-{run_id}"),
        started_at=started_at,
        as_of=date(2024, 3, 1),
        provider="simulated",
        simulated=simulated,
        symbols=["AAPL", "MSFT"],
        pipeline=["detect_events", "generate_trades", "calculate_risk", "persist"],
        params=kw.pop("params", {"lookback": 5, "asOf": "2024-03-01", "weights": [0.5, 1.5], "flag": None}),
        **kw,
    )


def make_event(event_id: str = "ev-1", symbol: str = "AAPL", *, minutes: int = 0) -> Event:
    return Event(
        id=event_id,
        symbol=symbol,
        type="gap_open",
        time=T0 + timedelta(minutes=minutes),
        payload={"gapPct": 3.25, "prevClose": 180.0, "open": 185.85, "nested": {"k": [1, 2]}},
    )


def make_trade(
    setup_id: str = "setup-1",
    symbol: str = "AAPL",
    *,
    strategy_id: str = "gap_fade",
    allowed: bool = True,
    event: Event | None = None,
    created_at: datetime = T0,
) -> TradeRecord:
    setup = TradeSetup(
        id=setup_id,
        symbol=symbol,
        direction=Direction.LONG,
        entry=100.0,
        stop=95.0,
        targets=[110.0, 120.0],
        event_id=event.id if event else None,
        strategy_id=strategy_id,
        research=ResearchBundle(ticker=symbol, summary="ok", key_points=["a"], metrics={"pe": 21.5}),
        confidence=0.7,
        time=T0,
    )
    constraints = ConstraintResult(
        allowed=allowed,
        reason="" if allowed else "too much exposure",
        violations=[] if allowed else [Violation(code="exposure", message="x", limit=1.0, actual=2.0)],
    )
    risk = RiskResult(
        position_size=20,
        risk_per_unit=5.0,
        total_risk=100.0,
        r_multiple=2.0,
        risk_percent=1.0,
        account_size=10_000.0,
        constraints=constraints,
    )
    return TradeRecord(setup=setup, risk=risk, event=event, created_at=created_at)


def make_stage_result(stage: str, status: StageStatus = StageStatus.OK, *, seq: int = 0) -> StageResult:
    return StageResult(
        stage=stage,
        status=status,
        started_at=T0 + timedelta(seconds=seq),
        duration_ms=12.5,
        attempts=1,
        reason=None if status is StageStatus.OK else "because",
    )


def make_item(run_id: str = "run-1", symbol: str = "AAPL", *, stages: list[str] | None = None) -> WorkItem:
    event = make_event(f"ev-{symbol}", symbol)
    return WorkItem(
        run_id=run_id,
        symbol=symbol,
        as_of=date(2024, 3, 1),
        correlation_id=f"corr-{run_id}",
        events=[event],
        trades=[make_trade(f"setup-{symbol}", symbol, event=event)],
        extras={"plugin": {"score": 1.5}},
        completed_stages=stages or [],
    )


def make_audit(
    audit_id: str, *, correlation_id: str = "corr-run-1", seconds: int = 0, **kw: Any
) -> AuditEvent:
    return AuditEvent(
        id=audit_id,
        correlation_id=correlation_id,
        action=kw.pop("action", "stage.detect_events"),
        outcome=kw.pop("outcome", "success"),
        timestamp=T0 + timedelta(seconds=seconds),
        payload={"symbol": "AAPL", "durationMs": 3.5},
        **kw,
    )


def make_symbol_result(symbol: str = "AAPL", **update: Any) -> SymbolResult:
    events = [make_event(f"ev-{symbol}-{i}", symbol, minutes=i) for i in range(2)]
    result = SymbolResult(
        run_id="run-1",
        symbol=symbol,
        status=SymbolStatus.SUCCEEDED,
        stages=[make_stage_result(stage, seq=i) for i, stage in enumerate(STAGES)],
        events=events,
        trades=[make_trade(f"setup-{symbol}-{i}", symbol, event=e) for i, e in enumerate(events)],
        data_issues=["missing bar 2024-02-29"],
    )
    return result.model_copy(update=update)


async def count_rows(db: Database, entity: type[Base], **where: Any) -> int:
    stmt = select(func.count()).select_from(entity)
    for name, value in where.items():
        stmt = stmt.where(getattr(entity, name) == value)
    async with db.engine.connect() as conn:
        return int(await conn.scalar(stmt) or 0)
