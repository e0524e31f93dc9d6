"""detect_events' merge of pushed events: the scanned sessions only, never after as_of, one per id,
in one order whatever order they were pushed in."""

from __future__ import annotations

from datetime import UTC, date, datetime

from tests.bars import build_series

from jax_assistant.domain import Event
from jax_assistant.pipeline.base import WorkItem
from jax_assistant.pipeline.stages import merge_pushed

SERIES = build_series([10.0 + i for i in range(10)], symbol="TEST", start=date(2024, 1, 1))  # Jan 1-12


def _event(id_: str, day: int, hour: int = 15, type_: str = "news_headline") -> Event:
    return Event(id=id_, symbol="TEST", type=type_, time=datetime(2024, 1, day, hour, tzinfo=UTC))


def _item(lookback: int, as_of: date) -> WorkItem:
    return WorkItem(run_id="r", symbol="TEST", as_of=as_of, lookback=lookback, correlation_id="c")


def test_only_pushed_events_of_the_scanned_sessions_are_merged() -> None:
    series = SERIES.upto(date(2024, 1, 10))
    pushed = [_event("p-old", 8), _event("p-in", 9), _event("p-asof", 10), _event("p-late", 11)]
    got = merge_pushed([], pushed, series, _item(2, date(2024, 1, 10)))
    assert [e.id for e in got] == ["p-in", "p-asof"]  # Jan 8 is outside the 2 sessions; Jan 11 is after


def test_merged_events_are_unique_and_ordered_whatever_the_push_order() -> None:
    series = SERIES.upto(date(2024, 1, 10))
    detected = [_event("gap-10", 10, 14, "gap_open")]
    pushed = [_event("p-b", 10, 16), _event("p-a", 10, 14, "earnings"), _event("p-b", 10, 16)]
    one = merge_pushed(detected, pushed, series, _item(1, date(2024, 1, 10)))
    two = merge_pushed(detected, list(reversed(pushed)), series, _item(1, date(2024, 1, 10)))
    assert [e.id for e in one] == [e.id for e in two] == ["p-a", "gap-10", "p-b"]


def test_without_pushed_events_the_detected_ones_are_untouched() -> None:
    detected = [_event("z", 10), _event("a", 9)]
    assert merge_pushed(detected, [], SERIES, _item(1, date(2024, 1, 12))) == detected
