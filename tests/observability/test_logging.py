from __future__ import annotations

import io
import json
import logging
from datetime import datetime
from typing import Any

from jax_assistant.observability import (
    REDACTED,
    bind_correlation_id,
    configure_logging,
    get_logger,
)
from jax_assistant.observability.logging import _HANDLER_MARK


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_record_has_correlation_id_and_redacted_fields() -> None:
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    log = get_logger("jax.test")
    with bind_correlation_id("cid-log"):
        log.info("stage finished", symbol="AAPL", api_key="k", ctx={"broker_key": "b", "n": 1})
    (record,) = _lines(stream)
    assert record["event"] == "stage finished"
    assert record["correlation_id"] == "cid-log"
    assert record["level"] == "info"
    assert record["logger"] == "jax.test"
    assert record["symbol"] == "AAPL"
    assert record["api_key"] == REDACTED
    assert record["ctx"] == {"broker_key": REDACTED, "n": 1}
    ts = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
    assert ts.utcoffset() is not None and ts.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert "k" not in {v for v in record.values() if isinstance(v, str)} - {"stage finished"}


def test_no_correlation_id_key_when_none_bound_and_explicit_one_is_kept() -> None:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    log = get_logger("jax.test")
    log.info("unbound")
    with bind_correlation_id("ctx-id"):
        log.info("explicit", correlation_id="given")
    first, second = _lines(stream)
    assert "correlation_id" not in first
    assert second["correlation_id"] == "given"


def test_stdlib_logging_is_routed_through_the_same_pipeline() -> None:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    with bind_correlation_id("cid-std"):
        logging.getLogger("some.library").warning("hello %s", "world", extra={"password": "p", "n": 2})
    (record,) = _lines(stream)
    assert record["event"] == "hello world"
    assert record["logger"] == "some.library"
    assert record["level"] == "warning"
    assert record["correlation_id"] == "cid-std"
    assert record["password"] == REDACTED
    assert record["n"] == 2


def test_level_filtering() -> None:
    stream = io.StringIO()
    configure_logging("WARNING", json=True, stream=stream)
    log = get_logger("jax.test")
    log.info("dropped")
    logging.getLogger("lib").info("dropped too")
    log.warning("kept")
    assert [r["event"] for r in _lines(stream)] == ["kept"]


def test_exception_is_rendered_in_json() -> None:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("jax.test").exception("failed")
    (record,) = _lines(stream)
    assert "RuntimeError: boom" in record["exception"]


def test_configure_is_idempotent_and_switches_stream() -> None:
    old, new = io.StringIO(), io.StringIO()
    configure_logging(json=True, stream=old)
    configure_logging(json=True, stream=new)
    configure_logging(json=True, stream=new)
    marked = [h for h in logging.getLogger().handlers if getattr(h, _HANDLER_MARK, False)]
    assert len(marked) == 1
    get_logger("jax.test").info("once")
    assert old.getvalue() == ""
    assert [r["event"] for r in _lines(new)] == ["once"]


def test_console_renderer_redacts_too() -> None:
    stream = io.StringIO()
    configure_logging(json=False, stream=stream)
    with bind_correlation_id("cid-console"):
        get_logger("jax.test").info("hello", token="tok-123")
    text = stream.getvalue()
    assert "hello" in text
    assert "cid-console" in text
    assert REDACTED in text
    assert "tok-123" not in text
    assert not text.lstrip().startswith("{")
