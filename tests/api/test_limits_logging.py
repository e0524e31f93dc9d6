"""Logs never leak or stall: secrets absent from captured service logs (JSON and console), tracebacks
without local variables, a cheap access line without query or headers, rendering off the event loop."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn
from tests.api.helpers import LiveServer, Service, serve

from jax_assistant.api import create_app
from jax_assistant.api.runs import RunManager
from jax_assistant.config import ApiConfig, Settings
from jax_assistant.observability import logging as obs_logging
from jax_assistant.observability.logging import configure_logging, get_logger

TOKEN = "jaxk_0123456789ab_SuperSecretValueThatMustNeverBeLogged"
COOKIE = "session=cookie-secret-42"


# Every test here configures logging; the API suite's fixture (conftest.py) undoes it.
pytestmark = pytest.mark.usefixtures("restore_logging")


@asynccontextmanager
async def serve_like_jax(app: object) -> AsyncIterator[Service]:
    """As `jax serve` configures uvicorn: its own access log (which prints query strings) off."""
    server = LiveServer(app)  # type: ignore[arg-type]
    server.server.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False)  # type: ignore[arg-type]
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            yield Service(server.app, server, client)
    finally:
        await server.stop()


def flush() -> None:
    obs_logging._stop_listener()  # writes everything queued, then joins the thread


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "console"])
async def test_an_unhandled_error_logs_a_traceback_without_headers_or_locals(
    database_url: str, monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", json=as_json, stream=stream, background=True)

    def explode(self: RunManager, request: object) -> object:
        seen = {"authorization": "LOCAL-VALUE-7731"}  # a local a locals-renderer would print
        raise RuntimeError(f"boom while handling {len(seen)} header(s), key {TOKEN}")

    monkeypatch.setattr(RunManager, "prepare", explode)
    monkeypatch.setattr(logging.getLogger("httpx"), "disabled", True)  # the test client's own log
    settings = Settings(database_url=database_url, api=ApiConfig(auth="off", access_log=True))
    async with serve_like_jax(create_app(settings)) as svc:
        resp = await svc.client.post(
            "/process?api_token=query-secret",
            json={"symbols": ["ACME.SIM"]},
            headers={"Authorization": f"Bearer {TOKEN}", "Cookie": COOKIE, "X-API-Key": TOKEN},
        )
        assert resp.status_code == 500
        assert TOKEN not in resp.text
        get_logger("jax.test").info("headers", headers={"Authorization": f"Bearer {TOKEN}", "Cookie": COOKIE})
    flush()
    out = stream.getvalue()
    assert "unhandled error in POST /process" in out
    assert "Traceback (most recent call last)" in out and "RuntimeError: boom" in out
    for secret in (TOKEN, "SuperSecretValue", "cookie-secret-42", "query-secret"):
        assert secret not in out, secret
    assert "LOCAL-VALUE-7731" not in out  # no local variables in the traceback
    assert "[REDACTED]" in out
    access = [line for line in out.splitlines() if "request" in line and "/process" in line]
    assert access, out
    assert all("api_token" not in line for line in access)
    if as_json:
        records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        (line,) = [r for r in records if r.get("logger") == "jax_assistant.access"]
        assert (line["method"], line["path"], line["status"]) == ("POST", "/process", 500)
        (headers,) = [r["headers"] for r in records if r.get("event") == "headers"]
        assert headers == {"Authorization": "[REDACTED]", "Cookie": "[REDACTED]"}


async def test_the_access_log_is_off_by_default(database_url: str) -> None:
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream, background=True)
    async with serve(create_app(Settings(database_url=database_url))) as svc:
        assert (await svc.client.get("/health")).status_code == 200
    flush()
    assert "jax_assistant.access" not in stream.getvalue()


class StuckStream(io.StringIO):
    """A terminal nobody reads: every write blocks until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, s: str) -> int:
        self.release.wait(30)
        return super().write(s)


def test_a_stuck_output_never_blocks_the_logging_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(obs_logging, "QUEUE_SIZE", 2)
    monkeypatch.setattr(obs_logging._QueueHandler, "dropped", 0)
    stream = StuckStream()
    configure_logging("INFO", json=True, stream=stream, background=True)
    log = get_logger("jax.test")
    for i in range(50):
        log.info("event", n=i)  # returns at once: the listener thread is the one stuck
    assert obs_logging.dropped_records() >= 45
    stream.release.set()
    flush()
    assert 1 <= len(stream.getvalue().splitlines()) <= 5
