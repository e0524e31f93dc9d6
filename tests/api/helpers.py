"""Shared pieces of the API suite: a real uvicorn server on loopback, polling and SSE parsing.

Import as ``from tests.api.helpers import ...`` (pytest runs with ``--import-mode=importlib``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from jax_assistant.domain import SymbolStatus
from jax_assistant.pipeline.base import BaseStage, StageContext, StageOutput, WorkItem
from jax_assistant.pipeline.policy import StagePolicy

SIM_SYMBOLS = ("ACME.SIM", "BOLT.SIM", "BREW.SIM", "BYTE.SIM")
TERMINAL = {s.value for s in SymbolStatus if s.terminal}
RUN_TIMEOUT_S = 30.0


class LiveServer:
    """``app`` served by a real uvicorn server on 127.0.0.1, in the test's own event loop.

    Port 0 lets the OS pick a free port at bind time (no find-then-bind race); the actual port is read
    back from the listening socket.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_config=None)
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve())
        deadline = time.monotonic() + 20
        while not self.server.started:
            if self._task.done():
                self._task.result()  # surface a start-up failure
                raise RuntimeError("uvicorn exited during start-up (see the log above)")
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start within 20 s")
            await asyncio.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        await asyncio.wait_for(self._task, 20)
        self._task = None


@dataclass
class Service:
    app: FastAPI
    server: LiveServer
    client: httpx.AsyncClient


@asynccontextmanager
async def serve(app: FastAPI, headers: dict[str, str] | None = None) -> AsyncIterator[Service]:
    """``app`` on loopback and a client for it; ``headers`` go on every request (e.g. an API key)."""
    server = LiveServer(app)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=RUN_TIMEOUT_S, headers=headers) as client:
            yield Service(app, server, client)
    finally:
        await server.stop()


async def wait_for_run(
    client: httpx.AsyncClient, run_id: str, timeout_s: float = RUN_TIMEOUT_S
) -> dict[str, Any]:
    """Poll GET /runs/{id} (as the front end does) until the run leaves ``running``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            resp = await client.get(f"/runs/{run_id}")
        except (httpx.RemoteProtocolError, httpx.ReadError):
            # A keep-alive connection the server closed just as it was reused (seen on a loaded
            # machine after a long idle wait); a poller asks again, as the front end does.
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        if body["run"]["status"] != "running":
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still running after {timeout_s}s: {body['run']}")
        await asyncio.sleep(0.05)


async def wait_for_admission_drained(
    client: httpx.AsyncClient, timeout_s: float = RUN_TIMEOUT_S
) -> dict[str, Any]:
    """Poll GET /status until no symbol is in flight and no run queued; returns its admission block.

    A run's place is released when its task ends, a moment after its row reads ``completed`` (the
    task still closes its stream and channel): asserting at once raced on a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while True:
        admission: dict[str, Any] = (await client.get("/status")).json()["admission"]
        if admission["symbolsInFlight"] == 0 and admission["queuedRuns"] == 0:
            return admission
        if time.monotonic() > deadline:
            raise TimeoutError(f"admission still holds places after {timeout_s}s: {admission}")
        await asyncio.sleep(0.02)


async def read_sse(client: httpx.AsyncClient, url: str) -> list[tuple[str, dict[str, Any]]]:
    """Every event of an SSE stream until the server closes it, as (event, data) pairs."""
    events: list[tuple[str, dict[str, Any]]] = []
    async with client.stream("GET", url) as resp:
        assert resp.status_code == 200, await resp.aread()
        assert resp.headers["content-type"].startswith("text/event-stream")
        events.extend(await parse_sse(resp.aiter_lines()))
    return events


async def parse_sse(lines: AsyncIterator[str]) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    name, data = "message", []
    async for line in lines:
        if line == "":
            if data:
                events.append((name, json.loads("\n".join(data))))
            name, data = "message", []
        elif line.startswith(":"):
            continue  # comment (keep-alive)
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
    return events


class GateStage(BaseStage):
    """A pipeline stage that holds every symbol until the test opens the gate.

    Makes "the run is still executing" a state the test controls instead of a race it hopes to win.
    """

    name = "gate"
    default_policy = StagePolicy(timeout_s=None)
    opened = asyncio.Event()
    entered = 0
    _arrived = asyncio.Event()

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        cls = type(self)
        cls.entered += 1
        cls._arrived.set()
        await cls.opened.wait()
        return StageOutput(item=item)

    @classmethod
    async def wait_entered(cls, count: int, timeout_s: float = 10.0) -> None:
        """Until ``count`` symbols wait at the gate."""
        async with asyncio.timeout(timeout_s):
            while cls.entered < count:
                cls._arrived.clear()
                await cls._arrived.wait()

    @classmethod
    def reset(cls) -> None:
        cls.opened = asyncio.Event()
        cls._arrived = asyncio.Event()
        cls.entered = 0


class FileGateStage(BaseStage):
    """The ``gate`` stage for runs in the executor process: a file opens it, since the test and the
    executor share no memory. Each symbol that arrives writes ``entered-<symbol>`` into the folder."""

    name = "gate"
    default_policy = StagePolicy(timeout_s=None)
    folder = ""

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        folder = Path(type(self).folder)
        (folder / f"entered-{item.symbol}").touch()
        while not (folder / "open").exists():  # noqa: ASYNC110 - another process opens it: no Event
            await asyncio.sleep(0.01)
        return StageOutput(item=item)


class FileFlakyStage(BaseStage):
    """A required ``flaky`` stage for runs in the executor process: fails every symbol (a dead letter
    each) until the file ``ok`` exists in the folder."""

    name = "flaky"
    default_policy = StagePolicy(timeout_s=None, required=True)
    folder = ""

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        if not (Path(type(self).folder) / "ok").exists():
            raise RuntimeError("dependency down")
        return StageOutput(item=item)


def file_stage_factories(folder: str) -> dict[str, Any]:
    from jax_assistant.pipeline.stages import BUILTIN_STAGES

    FileGateStage.folder = folder
    FileFlakyStage.folder = folder
    return {**BUILTIN_STAGES, "gate": FileGateStage, "flaky": FileFlakyStage}


def install_file_gate(folder: str) -> None:
    """Executor setup (runs in the child): the ``gate`` and ``flaky`` stages are discoverable like
    installed plugins."""
    from jax_assistant.pipeline import plugins

    factories = file_stage_factories(folder)
    plugins.discover_stage_factories = lambda: factories


async def wait_for_files(folder: Path, pattern: str, count: int, timeout_s: float = 20.0) -> None:
    """Until ``count`` files matching ``pattern`` exist in ``folder`` (written by another process)."""
    deadline = time.monotonic() + timeout_s
    while len(list(folder.glob(pattern))) < count:  # noqa: ASYNC240 - written by another process
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} x {pattern} did not appear in {folder}")
        await asyncio.sleep(0.02)
