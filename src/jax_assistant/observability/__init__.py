"""Observability: correlation ids, redaction, structured logs, Prometheus metrics, OpenTelemetry tracing.

Imports nothing of ours except ``jax_assistant.domain``; the engine and the API call into it.
"""

from jax_assistant.observability.correlation import (
    CORRELATION_ID_HEADER,
    FLOW_ID_HEADER,
    INBOUND_CORRELATION_HEADERS,
    REQUEST_ID_HEADER,
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    bind_correlation_id,
    ensure_correlation_id,
    get_correlation_id,
    is_valid_correlation_id,
    new_audit_event,
    new_correlation_id,
    outbound_headers,
)
from jax_assistant.observability.logging import configure_logging, get_logger
from jax_assistant.observability.metrics import (
    IN_FLIGHT_ALL,
    MetricsSink,
    NullMetrics,
    PipelineMetrics,
    breaker_state_value,
)
from jax_assistant.observability.redaction import REDACTED, is_sensitive_key, redact
from jax_assistant.observability.tracing import (
    configure_tracing,
    get_tracer,
    run_span,
    set_span_status,
    shutdown_tracing,
    stage_span,
    symbol_span,
    tracing_enabled,
)

__all__ = [
    "CORRELATION_ID_HEADER",
    "FLOW_ID_HEADER",
    "INBOUND_CORRELATION_HEADERS",
    "IN_FLIGHT_ALL",
    "REDACTED",
    "REQUEST_ID_HEADER",
    "TRACEPARENT_HEADER",
    "TRACESTATE_HEADER",
    "MetricsSink",
    "NullMetrics",
    "PipelineMetrics",
    "bind_correlation_id",
    "breaker_state_value",
    "configure_logging",
    "configure_tracing",
    "ensure_correlation_id",
    "get_correlation_id",
    "get_logger",
    "get_tracer",
    "is_sensitive_key",
    "is_valid_correlation_id",
    "new_audit_event",
    "new_correlation_id",
    "outbound_headers",
    "redact",
    "run_span",
    "set_span_status",
    "shutdown_tracing",
    "stage_span",
    "symbol_span",
    "tracing_enabled",
]
