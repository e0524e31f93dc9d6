from __future__ import annotations

import asyncio
import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from jax_assistant.observability import (
    bind_correlation_id,
    configure_tracing,
    get_tracer,
    run_span,
    set_span_status,
    stage_span,
    symbol_span,
    tracing,
    tracing_enabled,
)
from jax_assistant.observability.tracing import _otlp_traces_url


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def test_nested_spans_link_and_carry_attributes(span_exporter: InMemorySpanExporter) -> None:
    with (
        bind_correlation_id("cid-trace"),
        run_span("run_1"),
        symbol_span("AAPL", run_id="run_1"),
        stage_span("detect_events", symbol="AAPL", run_id="run_1") as st,
    ):
        set_span_status(st, "ok")
    spans = _by_name(span_exporter.get_finished_spans())
    run, sym, stage = spans["jax.run"], spans["jax.symbol"], spans["jax.stage.detect_events"]
    assert run.parent is None
    assert sym.parent is not None and sym.parent.span_id == run.context.span_id
    assert stage.parent is not None and stage.parent.span_id == sym.context.span_id
    assert run.context.trace_id == sym.context.trace_id == stage.context.trace_id
    assert run.attributes == {"jax.run_id": "run_1", "jax.correlation_id": "cid-trace"}
    assert sym.attributes == {"jax.symbol": "AAPL", "jax.run_id": "run_1", "jax.correlation_id": "cid-trace"}
    assert stage.attributes is not None
    assert stage.attributes["jax.stage"] == "detect_events"
    assert stage.attributes["jax.symbol"] == "AAPL"
    assert stage.attributes["jax.correlation_id"] == "cid-trace"
    assert stage.attributes["jax.status"] == "ok"
    assert stage.status.status_code is StatusCode.UNSET


async def test_concurrent_symbol_spans_share_the_run_parent(span_exporter: InMemorySpanExporter) -> None:
    async def one(symbol: str) -> None:
        with symbol_span(symbol), stage_span("research", symbol=symbol):
            await asyncio.sleep(0.001)

    with run_span("run_2"):
        await asyncio.gather(*(one(s) for s in ("AAPL", "MSFT", "NVDA")))
    spans = span_exporter.get_finished_spans()
    (run,) = [s for s in spans if s.name == "jax.run"]
    symbols = {s.context.span_id: s for s in spans if s.name == "jax.symbol"}
    stages = [s for s in spans if s.name == "jax.stage.research"]
    assert len(symbols) == 3 and len(stages) == 3
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in symbols.values())
    for st in stages:
        assert st.parent is not None
        parent = symbols[st.parent.span_id]
        assert parent.attributes is not None and st.attributes is not None
        assert parent.attributes["jax.symbol"] == st.attributes["jax.symbol"]


def test_error_status_and_exceptions(span_exporter: InMemorySpanExporter) -> None:
    with stage_span("risk") as span:
        set_span_status(span, "failed")
    with pytest.raises(RuntimeError), stage_span("persist"):
        raise RuntimeError("db down")
    spans = _by_name(span_exporter.get_finished_spans())
    risk, persist = spans["jax.stage.risk"], spans["jax.stage.persist"]
    assert risk.attributes is not None and risk.attributes["jax.status"] == "failed"
    assert risk.status.status_code is StatusCode.ERROR
    assert persist.attributes is not None and persist.attributes["jax.status"] == "error"
    assert persist.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in persist.events)


def test_explicit_status_survives_an_exception(span_exporter: InMemorySpanExporter) -> None:
    with pytest.raises(TimeoutError), stage_span("research") as span:
        set_span_status(span, "timed_out")
        raise TimeoutError
    (span_data,) = span_exporter.get_finished_spans()
    assert span_data.attributes is not None and span_data.attributes["jax.status"] == "timed_out"


def test_disabled_tracing_creates_no_spans() -> None:
    exporter = InMemorySpanExporter()
    configure_tracing(True, exporter=exporter)
    assert configure_tracing(False) is None
    assert not tracing_enabled()
    cm = run_span("r")
    assert cm is symbol_span("AAPL") is stage_span("x")  # one shared no-op object, nothing allocated
    with cm as r, symbol_span("AAPL") as s, stage_span("x") as st:
        assert not r.is_recording() and not s.is_recording() and not st.is_recording()
        assert not trace.get_current_span().get_span_context().is_valid
        set_span_status(st, "failed")  # harmless on the no-op span
    with get_tracer().start_as_current_span("manual") as manual:
        assert not manual.is_recording()
    assert exporter.get_finished_spans() == ()


def test_reconfiguring_switches_exporter_without_touching_the_global_provider() -> None:
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    provider = configure_tracing(True, exporter=first)
    with stage_span("a"):
        pass
    configure_tracing(True, exporter=second)
    with stage_span("b"):
        pass
    assert [s.name for s in first.get_finished_spans()] == ["jax.stage.a"]
    assert [s.name for s in second.get_finished_spans()] == ["jax.stage.b"]
    assert trace.get_tracer_provider() is not provider


def test_service_name_resource() -> None:
    exporter = InMemorySpanExporter()
    configure_tracing(True, service_name="jax-test", exporter=exporter)
    with run_span("r"):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.resource.attributes["service.name"] == "jax-test"


def test_missing_otlp_exporter_warns_and_carries_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Point at a module that cannot exist, so the test holds whether or not the extra is installed.
    monkeypatch.setattr(tracing, "OTLP_EXPORTER_MODULE", "jax_assistant_no_such_otlp_exporter")
    with caplog.at_level(logging.WARNING, logger="jax_assistant.observability.tracing"):
        provider = configure_tracing(True, otlp_endpoint="http://127.0.0.1:4318")
    assert provider is not None
    assert "opentelemetry-exporter-otlp-proto-http" in caplog.text
    with stage_span("still_works") as span:
        assert span.is_recording()


def test_otlp_url() -> None:
    assert _otlp_traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert _otlp_traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert _otlp_traces_url("http://c:4318/custom/v1/traces") == "http://c:4318/custom/v1/traces"
