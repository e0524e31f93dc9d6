"""Domain models speak the contract's JSON (camelCase) and reject what the contract forbids."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from jax_assistant.domain import (
    AuditEvent,
    Bar,
    ConstraintResult,
    Direction,
    Event,
    ResearchBundle,
    RiskResult,
    TradeRecord,
    TradeSetup,
    session_time,
    unix_seconds,
)


def setup(**kw: object) -> TradeSetup:
    base: dict[str, object] = {
        "id": "ts_earnings_gap_v1_AAPL_1509667200",
        "symbol": "AAPL",
        "direction": "long",
        "entry": 100.0,
        "stop": 95.0,
        "targets": [110.0, 115.0],
        "eventId": "ev_gap_AAPL_1509667200",
        "strategyId": "earnings_gap_v1",
    }
    return TradeSetup.model_validate({**base, **kw})


def test_trade_setup_round_trips_the_contract_shape() -> None:
    s = setup()
    data = s.to_contract()
    for key in (
        "id",
        "symbol",
        "direction",
        "entry",
        "stop",
        "targets",
        "eventId",
        "strategyId",
        "notes",
        "research",
    ):
        assert key in data
    assert "event_id" not in data and "strategy_id" not in data
    assert TradeSetup.model_validate(json.loads(json.dumps(data))) == s
    # snake_case input is accepted too
    assert TradeSetup(**{**s.model_dump(), "direction": Direction.LONG}) == s


def test_stop_must_be_on_the_losing_side() -> None:
    with pytest.raises(ValidationError, match="stop must be below entry for a long setup"):
        setup(stop=101.0)
    with pytest.raises(ValidationError, match="stop must be above entry for a short setup"):
        setup(direction="short", stop=95.0)


def test_unknown_fields_are_rejected_with_their_name() -> None:
    with pytest.raises(ValidationError) as exc:
        setup(colour="red")
    assert exc.value.errors()[0]["loc"] == ("colour",)
    assert exc.value.errors()[0]["type"] == "extra_forbidden"


def test_event_time_is_utc_and_ids_use_unix_seconds() -> None:
    d = date(2017, 11, 3)
    assert unix_seconds(d) == 1509667200
    assert session_time(d) == datetime(2017, 11, 3, tzinfo=UTC)
    naive = Event(id="ev_gap_AAPL_1509667200", symbol="AAPL", type="gap_open", time=datetime(2017, 11, 3))
    assert naive.time.tzinfo is UTC
    assert naive.to_contract()["time"] == "2017-11-03T00:00:00Z"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("open", 0.0, "greater than 0"),
        ("close", -1.0, "greater than 0"),
        ("volume", -5.0, "greater than or equal to 0"),
        ("high", float("nan"), "finite"),
    ],
)
def test_bar_validation_names_the_field(field: str, value: float, message: str) -> None:
    data = {
        "symbol": "X",
        "date": date(2020, 1, 2),
        "open": 10,
        "high": 11,
        "low": 9,
        "close": 10,
        "volume": 5,
    }
    with pytest.raises(ValidationError) as exc:
        Bar.model_validate({**data, field: value})
    assert message in str(exc.value) and field in str(exc.value)


def test_bar_high_below_low_rejected() -> None:
    with pytest.raises(ValidationError, match="high must be >= low"):
        Bar(symbol="X", date=date(2020, 1, 2), open=10, high=9, low=11, close=10, volume=1)


def test_trade_record_and_risk_shapes() -> None:
    risk = RiskResult(
        position_size=40,
        risk_per_unit=5.0,
        total_risk=200.0,
        r_multiple=2.0,
        risk_percent=2.0,
        account_size=10_000,
        constraints=ConstraintResult(allowed=True, reason="ok"),
    )
    record = TradeRecord(setup=setup(), risk=risk)
    data = record.to_contract()
    assert set(data) == {"setup", "risk", "event", "createdAt"}
    assert {"positionSize", "riskPerUnit", "totalRisk", "rMultiple"} <= set(data["risk"])
    # the constraint result keeps the snake_case shape of risk-constraints.json callers
    assert {"allowed", "reason", "violations", "risk_metrics"} <= set(data["risk"]["constraints"])
    assert TradeRecord.model_validate(data) == record


def test_research_bundle_is_snake_case_and_audit_event_camel_case() -> None:
    bundle = ResearchBundle(ticker="AAPL", summary="s", key_points=["a"], metrics={"pe": 20.0})
    assert set(bundle.model_dump()) == {"ticker", "summary", "key_points", "metrics", "raw_markdown"}
    audit = AuditEvent(id="a1", correlation_id="corr_1", action="stage.persist", outcome="success")
    assert set(audit.to_contract()) == {
        "id",
        "correlationId",
        "action",
        "outcome",
        "timestamp",
        "payload",
        "error",
    }
    with pytest.raises(ValidationError):
        AuditEvent(id="a1", correlation_id="c", action="x", outcome="maybe")  # type: ignore[arg-type]
