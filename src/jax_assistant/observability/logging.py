"""Structured logging: structlog in front, stdlib ``logging`` underneath, one output format for both.

Every record (from structlog loggers and from plain ``logging`` loggers of libraries alike) gets an ISO
UTC timestamp, its level, the logger name, the bound correlation id, and is redacted before rendering.

Tracebacks are plain (``traceback`` module): never local variables (they held request headers and
bodies), and cheap to render. With ``background=True`` (what ``jax serve`` uses) records are handed to
a bounded queue and rendered and written by a listener thread, so a slow terminal or pipe never stalls
the event loop; when the queue is full a record is dropped and counted rather than waited for.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
from typing import IO, Any, cast

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from jax_assistant.observability.correlation import get_correlation_id
from jax_assistant.observability.redaction import redact, redact_text

# Records waiting for the listener thread; beyond this they are dropped (counted in dropped_records()).
QUEUE_SIZE = 10_000

# Marks the handler we install on the root logger so a second configure_logging() replaces it.
_HANDLER_MARK = "_jax_observability_handler"


def add_correlation_id(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: add the context's correlation id, unless the call passed one explicitly."""
    if "correlation_id" not in event_dict:
        cid = get_correlation_id()
        if cid is not None:
            event_dict["correlation_id"] = cid
    return event_dict


def redact_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: apply the contract's redaction rules to the whole event dict."""
    return cast(EventDict, redact(event_dict))


def redact_exception(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: the rendered traceback may quote a secret in an exception message."""
    exc = event_dict.get("exception")
    if isinstance(exc, str):
        event_dict["exception"] = redact_text(exc)
    return event_dict


class _QueueHandler(logging.handlers.QueueHandler):
    """Hands records to the listener unformatted (formatting is the listener's job) and never blocks."""

    dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The listener thread has no contextvars of this request: capture the id here.
        if not hasattr(record, "correlation_id"):
            cid = get_correlation_id()
            if cid is not None:
                record.correlation_id = cid
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            type(self).dropped += 1


class _QueueListener(logging.handlers.QueueListener):
    def __init__(self, records: queue.Queue[logging.LogRecord], handler: logging.Handler) -> None:
        super().__init__(records, handler, respect_handler_level=False)
        self._records = records

    def enqueue_sentinel(self) -> None:
        # Blocking put: with the queue full, stopping must wait for room, not lose the stop signal.
        self._records.put(None)  # type: ignore[arg-type]  # QueueListener's sentinel is None


_listener: logging.handlers.QueueListener | None = None


def dropped_records() -> int:
    """Records dropped because the background queue was full (0 without ``background``)."""
    return _QueueHandler.dropped


def _stop_listener() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()  # writes what is still queued, then joins the thread
        _listener = None


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_correlation_id,
        structlog.processors.StackInfoRenderer(),
        # Last, so values added by any processor above are redacted too.
        redact_event,
    ]


def configure_logging(
    level: str = "INFO", json: bool = False, stream: IO[str] | None = None, *, background: bool = False
) -> None:
    """Configure structlog and route stdlib logging through the same processors. Safe to call again.

    ``json`` selects one JSON object per line (for services and log shippers) instead of the console
    renderer; ``stream`` defaults to the *current* ``sys.stderr``.
    """
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"unknown log level: {level!r}")
    out = stream if stream is not None else sys.stderr

    shared = _shared_processors()
    renderer: Processor
    if json:
        renderer = structlog.processors.JSONRenderer()
    else:
        isatty = getattr(out, "isatty", None)
        # plain_traceback: the rich one renders local variables and takes seconds on a deep stack.
        renderer = structlog.dev.ConsoleRenderer(
            colors=bool(isatty and isatty()), exception_formatter=structlog.dev.plain_traceback
        )
    # The traceback is rendered to text first so the secret-in-text rules apply to it too.
    final: list[Processor] = [structlog.processors.format_exc_info, redact_exception, renderer]

    structlog.configure(
        # filter_by_level first so disabled levels cost one check, not the whole processor chain.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger used before configuration (e.g. at import time in another package's tests)
        # would otherwise keep the default config forever and bypass this one.
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        # foreign_pre_chain handles records from plain stdlib loggers; ExtraAdder brings their
        # ``extra={...}`` fields into the event dict so those are redacted too.
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    stream_handler = logging.StreamHandler(out)
    stream_handler.setFormatter(formatter)
    handler: logging.Handler = stream_handler

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    _stop_listener()
    if background:
        global _listener
        records: queue.Queue[logging.LogRecord] = queue.Queue(QUEUE_SIZE)
        handler = _QueueHandler(records)
        _listener = _QueueListener(records, stream_handler)
        _listener.start()
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(numeric_level)


atexit.register(_stop_listener)


def get_logger(name: str | None = None, **initial_values: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger backed by the stdlib logger ``name``."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial_values)
    return logger
