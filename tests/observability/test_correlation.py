from __future__ import annotations

import asyncio
import re

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jax_assistant.observability import (
    CORRELATION_ID_HEADER,
    FLOW_ID_HEADER,
    TRACEPARENT_HEADER,
    bind_correlation_id,
    ensure_correlation_id,
    get_correlation_id,
    new_audit_event,
    new_correlation_id,
    outbound_headers,
    stage_span,
)

NEW_ID = re.compile(r"^corr_[0-9a-f]{32}$")
LEGACY_FLOW_ID = "flow_1717171717000000000_deadbeef"


def test_new_id_format_and_uniqueness() -> None:
    ids = {new_correlation_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(NEW_ID.match(i) for i in ids)


def test_primary_header_wins_over_aliases() -> None:
    headers = {"X-Request-ID": "req-1", "X-Flow-ID": LEGACY_FLOW_ID, "X-Correlation-ID": "corr-1"}
    assert ensure_correlation_id(headers) == "corr-1"
    assert get_correlation_id() == "corr-1"


def test_flow_id_beats_request_id() -> None:
    assert ensure_correlation_id({"X-Request-ID": "req-1", "X-Flow-ID": LEGACY_FLOW_ID}) == LEGACY_FLOW_ID


def test_request_id_alone_is_used() -> None:
    assert ensure_correlation_id({"X-Request-ID": "req-1"}) == "req-1"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("x-correlation-id", "a"), ("X-CORRELATION-ID", "a"), ("x-flow-id", "b"), ("X-REQUEST-id", "c")],
)
def test_header_names_are_case_insensitive(name: str, expected: str) -> None:
    value = {"x-correlation-id": "a", "x-flow-id": "b", "x-request-id": "c"}[name.lower()]
    assert ensure_correlation_id({name: value, "Other": "x"}) == expected


def test_legacy_flow_id_is_accepted_unchanged() -> None:
    assert ensure_correlation_id({"X-Correlation-ID": LEGACY_FLOW_ID}) == LEGACY_FLOW_ID


def test_surrounding_whitespace_is_stripped() -> None:
    assert ensure_correlation_id({"X-Correlation-ID": "  abc  "}) == "abc"


@pytest.mark.parametrize(
    "bad",
    ["", "   ", "x" * 129, "line\nbreak", "tab\there", "nul\x00", "caf\u00e9", "esc\x1b[31m"],
)
def test_invalid_value_is_replaced_by_a_new_id(bad: str) -> None:
    cid = ensure_correlation_id({"X-Correlation-ID": bad})
    assert cid != bad.strip()
    assert NEW_ID.match(cid)
    assert get_correlation_id() == cid


def test_max_length_is_accepted() -> None:
    value = "x" * 128
    assert ensure_correlation_id({"X-Correlation-ID": value}) == value


def test_invalid_primary_falls_back_to_valid_alias() -> None:
    assert (
        ensure_correlation_id({"X-Correlation-ID": "bad\r\nvalue", "X-Flow-ID": LEGACY_FLOW_ID})
        == LEGACY_FLOW_ID
    )


def test_without_headers_keeps_bound_id_or_generates_one() -> None:
    first = ensure_correlation_id()
    assert NEW_ID.match(first)
    assert ensure_correlation_id() == first
    assert ensure_correlation_id({}) == first
    assert ensure_correlation_id({"X-Correlation-ID": "explicit"}) == "explicit"


def test_bind_resets_previous_value() -> None:
    assert get_correlation_id() is None
    with bind_correlation_id("outer") as outer:
        assert outer == "outer"
        with bind_correlation_id() as inner:
            assert NEW_ID.match(inner)
            assert get_correlation_id() == inner
        assert get_correlation_id() == "outer"
    assert get_correlation_id() is None


def test_bind_rejects_invalid_id() -> None:
    with pytest.raises(ValueError), bind_correlation_id("bad\nid"):
        pass
    assert get_correlation_id() is None


async def test_concurrent_tasks_keep_their_own_id() -> None:
    ensure_correlation_id({"X-Correlation-ID": "parent"})

    async def handle(i: int) -> tuple[str, str | None, str | None]:
        inherited = get_correlation_id()
        cid = ensure_correlation_id({"X-Correlation-ID": f"req-{i}"})
        for _ in range(5):
            await asyncio.sleep(0)  # let the other tasks run and set their own ids
            assert get_correlation_id() == cid
        return cid, inherited, get_correlation_id()

    results = await asyncio.gather(*(handle(i) for i in range(20)))
    for i, (cid, inherited, final) in enumerate(results):
        assert cid == final == f"req-{i}"
        assert inherited == "parent"
    assert get_correlation_id() == "parent"


async def test_bound_id_in_one_task_does_not_leak_into_another() -> None:
    started = asyncio.Event()
    seen: list[str | None] = []

    async def binder() -> None:
        with bind_correlation_id("task-a"):
            started.set()
            await asyncio.sleep(0.01)

    async def observer() -> None:
        await started.wait()
        seen.append(get_correlation_id())

    await asyncio.gather(binder(), observer())
    assert seen == [None]


def test_outbound_headers_carry_bound_id_without_traceparent_when_tracing_off() -> None:
    with bind_correlation_id("cid-1"):
        headers = outbound_headers()
        # Tracing is off, so even inside a "span" helper there is no trace context to send.
        with stage_span("detect_events"):
            assert TRACEPARENT_HEADER not in outbound_headers()
    assert headers == {CORRELATION_ID_HEADER: "cid-1", FLOW_ID_HEADER: "cid-1"}


def test_outbound_headers_explicit_id() -> None:
    assert outbound_headers("given")[FLOW_ID_HEADER] == "given"


def test_outbound_headers_generate_and_bind_when_missing() -> None:
    headers = outbound_headers()
    assert NEW_ID.match(headers[CORRELATION_ID_HEADER])
    assert get_correlation_id() == headers[CORRELATION_ID_HEADER]
    assert outbound_headers() == headers


def test_outbound_headers_include_traceparent_of_current_span(span_exporter: InMemorySpanExporter) -> None:
    assert TRACEPARENT_HEADER not in outbound_headers()  # no span open yet
    with stage_span("research") as span:
        headers = outbound_headers()
    ctx = span.get_span_context()
    match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})", headers[TRACEPARENT_HEADER])
    assert match is not None
    assert int(match.group(3), 16) & 0x01  # sampled (newer SDKs also set 0x02, "random trace id")
    assert match.group(1) == format(ctx.trace_id, "032x")
    assert match.group(2) == format(ctx.span_id, "016x")
    assert match.group(1) != "0" * 32


def test_audit_event_carries_correlation_id_and_redacted_payload() -> None:
    with bind_correlation_id("cid-audit"):
        event = new_audit_event("persist", "success", payload={"symbol": "AAPL", "broker_key": "k"})
    assert event.correlation_id == "cid-audit"
    assert event.payload == {"symbol": "AAPL", "broker_key": "[REDACTED]"}
    assert event.to_contract()["correlationId"] == "cid-audit"
    assert event.id.startswith("aud_")
