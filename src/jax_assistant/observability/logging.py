"""Structured logging: structlog in front, stdlib ``logging`` underneath, one output format for both.

Every record (from structlog loggers and from plain ``logging`` loggers of libraries alike) gets an ISO
UTC timestamp, its level, the logger name, the bound correlation id, and is redacted before rendering.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any, cast

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from jax_assistant.observability.correlation import get_correlation_id
from jax_assistant.observability.redaction import redact

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


def configure_logging(level: str = "INFO", json: bool = False, stream: IO[str] | None = None) -> None:
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
        final: list[Processor] = [structlog.processors.format_exc_info, renderer]
    else:
        isatty = getattr(out, "isatty", None)
        renderer = structlog.dev.ConsoleRenderer(colors=bool(isatty and isatty()))
        final = [renderer]  # renders exc_info itself, with a readable traceback

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
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric_level)


def get_logger(name: str | None = None, **initial_values: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger backed by the stdlib logger ``name``."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial_values)
    return logger
