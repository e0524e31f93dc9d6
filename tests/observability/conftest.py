"""Isolation for observability tests: each test starts with no correlation id, tracing off, logging reset."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jax_assistant.observability import configure_tracing, shutdown_tracing
from jax_assistant.observability.correlation import _correlation_id
from jax_assistant.observability.logging import _HANDLER_MARK


@pytest.fixture(autouse=True)
def _isolate() -> Iterator[None]:
    token = _correlation_id.set(None)
    shutdown_tracing()
    root = logging.getLogger()
    level = root.level
    yield
    shutdown_tracing()
    _correlation_id.reset(token)
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    configure_tracing(True, exporter=exporter)
    return exporter
