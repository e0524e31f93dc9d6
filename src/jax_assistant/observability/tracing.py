"""OpenTelemetry tracing: one span per run, per symbol and per stage.

Provider ownership: this module keeps its *own* TracerProvider and hands out tracers from it, instead of
installing it with ``trace.set_tracer_provider``. The global provider can be set only once per process
(later calls are ignored with a warning), so a global install would pin the first configuration forever:
tests that configure tracing with fresh in-memory exporters one after another, or a CLI that reconfigures,
would silently keep exporting to the first one. Context propagation is unaffected: the current span lives
in the (global) OpenTelemetry context whatever provider created it, so ``traceparent`` injection and
parent/child links work as usual.

Disabled tracing costs one ``is None`` check per helper call: the helpers then return one shared no-op
context manager and create no span objects at all.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from jax_assistant.observability.correlation import get_correlation_id

if TYPE_CHECKING:
    # The SDK (with psutil, resources, exporters) is imported by configure_tracing when tracing is
    # enabled: with tracing off (the default) a `jax run` never loads it.
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

_log = logging.getLogger(__name__)

TRACER_NAME = "jax_assistant"
OTLP_EXPORTER_MODULE = "opentelemetry.exporter.otlp.proto.http.trace_exporter"

ATTR_RUN_ID = "jax.run_id"
ATTR_SYMBOL = "jax.symbol"
ATTR_STAGE = "jax.stage"
ATTR_CORRELATION_ID = "jax.correlation_id"
ATTR_STATUS = "jax.status"

# Outcomes that mark the span as an error in trace UIs (stage, symbol and run statuses of the domain).
ERROR_STATUSES = frozenset({"failed", "timed_out", "short_circuited", "error"})

_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None
_NOOP_TRACER = trace.NoOpTracer()
# nullcontext is stateless, so one instance can be entered any number of times, even concurrently.
_NOOP_SPAN_CM: AbstractContextManager[Span] = nullcontext(trace.INVALID_SPAN)


def _otlp_traces_url(endpoint: str) -> str:
    # The exporter uses an explicit endpoint verbatim; accept the collector base URL people usually give
    # (as OTEL_EXPORTER_OTLP_ENDPOINT would be) and add the traces path.
    return endpoint.rstrip("/") + "/v1/traces" if urlsplit(endpoint).path in ("", "/") else endpoint


def _otlp_exporter(endpoint: str) -> SpanExporter | None:
    try:
        # Imported dynamically: the package is an optional extra (``jax-assistant[otlp]``).
        module: Any = importlib.import_module(OTLP_EXPORTER_MODULE)
    except ImportError:
        _log.warning(
            "OTLP endpoint %s configured but opentelemetry-exporter-otlp-proto-http is not installed "
            "(pip install 'jax-assistant[otlp]'); spans will not be exported",
            endpoint,
        )
        return None
    exporter: SpanExporter = module.OTLPSpanExporter(endpoint=_otlp_traces_url(endpoint))
    return exporter


def configure_tracing(
    enabled: bool,
    *,
    service_name: str = "jax-orchestrator",
    otlp_endpoint: str | None = None,
    exporter: SpanExporter | None = None,
) -> TracerProvider | None:
    """(Re)configure tracing; returns the provider, or None when disabled. Safe to call again.

    ``exporter`` is attached with a SimpleSpanProcessor (synchronous, for tests: spans are visible as soon
    as they end); an OTLP exporter for ``otlp_endpoint`` goes through a BatchSpanProcessor. With neither,
    spans are still created, so ``traceparent`` is propagated to the services we call.
    """
    global _provider, _tracer
    shutdown_tracing()
    if not enabled:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if otlp_endpoint:
        otlp = _otlp_exporter(otlp_endpoint)
        if otlp is not None:
            provider.add_span_processor(BatchSpanProcessor(otlp))
    _provider = provider
    _tracer = provider.get_tracer(TRACER_NAME)
    return provider


def shutdown_tracing() -> None:
    """Flush and drop the current provider (tracing is then disabled). Call on process exit."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def tracing_enabled() -> bool:
    return _tracer is not None


def get_tracer() -> trace.Tracer:
    """The tracer of the configured provider, or a no-op tracer when tracing is disabled."""
    return _tracer if _tracer is not None else _NOOP_TRACER


def set_span_status(span: Span, status: str) -> None:
    """Record a domain status (``ok``, ``degraded``, ``failed``...) on ``span``; errors mark it ERROR."""
    if not span.is_recording():
        return
    span.set_attribute(ATTR_STATUS, str(status))
    if str(status) in ERROR_STATUSES:
        span.set_status(Status(StatusCode.ERROR, str(status)))


@contextmanager
def _span(tracer: trace.Tracer, name: str, attributes: dict[str, AttributeValue]) -> Iterator[Span]:
    # start_as_current_span records the exception and sets ERROR itself; we only add jax.status so
    # searching by status also finds spans that ended by an exception.
    with tracer.start_as_current_span(name, attributes=attributes) as span:
        try:
            yield span
        except BaseException as exc:
            if ATTR_STATUS not in (getattr(span, "attributes", None) or {}):
                cancelled = isinstance(exc, asyncio.CancelledError)
                span.set_attribute(ATTR_STATUS, "cancelled" if cancelled else "error")
            raise


def _attributes(
    base: dict[str, AttributeValue], correlation_id: str | None, extra: Mapping[str, AttributeValue] | None
) -> dict[str, AttributeValue]:
    cid = correlation_id or get_correlation_id()
    if cid is not None:
        base[ATTR_CORRELATION_ID] = cid
    if extra:
        base.update(extra)
    return base


def run_span(
    run_id: str,
    *,
    correlation_id: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> AbstractContextManager[Span]:
    """Span ``jax.run`` for one run; the root of its symbol spans."""
    tracer = _tracer
    if tracer is None:
        return _NOOP_SPAN_CM
    return _span(tracer, "jax.run", _attributes({ATTR_RUN_ID: run_id}, correlation_id, attributes))


def symbol_span(
    symbol: str,
    *,
    run_id: str | None = None,
    correlation_id: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> AbstractContextManager[Span]:
    """Span ``jax.symbol`` for one symbol of a run (child of the current run span)."""
    tracer = _tracer
    if tracer is None:
        return _NOOP_SPAN_CM
    attrs: dict[str, AttributeValue] = {ATTR_SYMBOL: symbol}
    if run_id is not None:
        attrs[ATTR_RUN_ID] = run_id
    return _span(tracer, "jax.symbol", _attributes(attrs, correlation_id, attributes))


def stage_span(
    stage: str,
    *,
    symbol: str | None = None,
    run_id: str | None = None,
    correlation_id: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> AbstractContextManager[Span]:
    """Span ``jax.stage.<stage>`` for one stage call (child of the current symbol span)."""
    tracer = _tracer
    if tracer is None:
        return _NOOP_SPAN_CM
    attrs: dict[str, AttributeValue] = {ATTR_STAGE: stage}
    if symbol is not None:
        attrs[ATTR_SYMBOL] = symbol
    if run_id is not None:
        attrs[ATTR_RUN_ID] = run_id
    # Stage names form a small fixed set, so they can go in the span name (symbols and run ids cannot).
    return _span(tracer, f"jax.stage.{stage}", _attributes(attrs, correlation_id, attributes))
