"""Run execution in a separate process (``[api] executor = "process"``), so requests keep the core.

Why a process and not a thread: run execution is CPU-bound Python (indicators, allocation, persist
serialisation), and a thread holds the GIL for as long as the event loop thread would wait. A child
process at a lower CPU priority (``os.nice``) is a separate task for the kernel's scheduler: on a
shared core the API process gets the larger share, and with ``api.executor_sched = "idle"``
(SCHED_IDLE) the core as soon as it wakes (see ``_sched_idle``). The
child keeps the server's CPU affinity (inherited), so nothing moves to another core.

The API process validates a request, writes the run row and hands the run over through a pipe; the
child executes it with the same Orchestrator code the inline mode uses and sends back progress (for
SSE), the run's end, and a status snapshot (active runs, breakers, limiters) whenever it changes.
Both processes use one lease owner id: the API heartbeats a run while it waits in the admission
queue, the child while it executes it. If the child dies, the API releases the leases of the runs
it had (they read ``interrupted``), starts a new child and resumes them through it.

Messages are plain dicts (pickled by multiprocessing). API -> child: ``{"op": "run", "kind":
"new"|"resume"|"retry", "run": <Run JSON>, ...}``, ``{"op": "cancel"|"metrics", "req": n, ...}``,
``{"op": "drain", "timeout_s": s}``. Child -> API: ``{"ev": "ready"|"started"|"symbol"|"end"|
"status"|"reply", ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from jax_assistant.observability.logging import get_logger
from jax_assistant.service.waiting import wait_any

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from jax_assistant.config import Settings
    from jax_assistant.domain import SymbolResult

log = get_logger("jax_assistant.service.executor")

Message = dict[str, Any]
# How long a new executor may take to import, open the database and say "ready".
START_TIMEOUT_S = 60.0
# A child that died is restarted after this pause (doubled per quick death, up to the maximum), so a
# child that crashes at start cannot spin the core.
RESTART_BACKOFF_S = 0.2
RESTART_BACKOFF_MAX_S = 10.0
# How often the child compares its status snapshot with the last one it sent.
STATUS_INTERVAL_S = 0.2
# How long the child drains its runs when it gets a SIGTERM of its own.
SIGTERM_DRAIN_S = 5.0
# How long a request to the child (cancel, metrics) may take before the API gives up on it.
REQUEST_TIMEOUT_S = 10.0


class ExecutorUnavailableError(RuntimeError):
    """The executor process is not running (starting, restarting or stopped)."""


class ExecutorClient:
    """The API process's end: starts (and restarts) the executor process, sends it runs and routes what
    it sends back. ``on_event`` gets every run message (``started``, ``symbol``, ``end``); ``on_death``
    is awaited after a child died unexpectedly and before the next one starts; ``on_restart`` once
    that one is ready."""

    def __init__(
        self,
        settings: Settings,
        owner_id: str,
        *,
        on_event: Callable[[Message], None],
        on_death: Callable[[], Awaitable[None]],
        on_restart: Callable[[], Awaitable[object]],
        setup: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.owner_id = owner_id
        self.on_event = on_event
        self.on_death = on_death
        self.on_restart = on_restart
        self.setup = setup  # run first in the child (tests install stages there)
        self.process: BaseProcess | None = None
        self.restarts = 0
        self.status: Message = {}  # the child's last status snapshot
        self.status_version = 0  # bumped with every new snapshot (part of the /status cache key)
        self._conn: Connection | None = None
        self._ready = asyncio.Event()
        self._dead = asyncio.Event()
        self._stopping = False
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self) -> None:
        """Start the child and wait until it is ready; then watch it and restart it if it dies."""
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="jax-executor-supervisor")

    async def ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until a child is ready to take runs (waits out a restart); ExecutorUnavailableError if stopped."""
        if self._stopping:
            raise ExecutorUnavailableError("the executor is stopping")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            raise ExecutorUnavailableError("the executor did not become ready") from None

    def send(self, message: Message) -> None:
        if self._conn is None or not self._ready.is_set():
            raise ExecutorUnavailableError("the executor is not running")
        # A blocking write, but messages are small and the child reads its pipe as soon as they arrive.
        self._conn.send(message)

    async def request(self, message: Message, timeout_s: float = REQUEST_TIMEOUT_S) -> Any:
        """Send ``message`` and wait for the child's reply to it."""
        req = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req] = future
        try:
            self.send({**message, "req": req})
            return await asyncio.wait_for(future, timeout_s)
        finally:
            self._pending.pop(req, None)

    async def render_metrics(self) -> tuple[bytes, str]:
        reply = await self.request({"op": "metrics"})
        return reply["body"], reply["contentType"]

    async def stop(self, drain_s: float) -> None:
        """Shutdown: the child drains its runs (they stay resumable) for up to ``drain_s``, closes its
        database and exits; killed if it has not exited well after that."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        proc = self.process
        if proc is None:
            return
        if self._conn is not None and self._ready.is_set():
            with contextlib.suppress(OSError):
                self._conn.send({"op": "drain", "timeout_s": drain_s})
        # The runs' `end` messages keep arriving meanwhile (the reader stays registered).
        deadline = time.monotonic() + drain_s + 10.0
        while proc.is_alive() and time.monotonic() < deadline:  # noqa: ASYNC110 - no event for a child's exit
            await asyncio.sleep(0.02)
        if proc.is_alive():
            log.warning("executor did not stop in time; killing it", pid=proc.pid)
            proc.kill()
        await asyncio.to_thread(proc.join, 5.0)
        self._close_pipe()

    def snapshot(self) -> dict[str, Any]:
        return {
            "mode": "process",
            "pid": self.pid,
            "ready": self._ready.is_set(),
            "restarts": self.restarts,
        }

    # ------------------------------------------------------------------ internals

    async def _spawn(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process with an event loop and threads
        parent, child = ctx.Pipe(duplex=True)
        nice = self.settings.api.executor_nice
        proc = ctx.Process(
            target=executor_main,
            args=(child, self.settings, self.owner_id, nice, self.setup),
            name="jax-executor",
            daemon=True,  # never outlives the API process
        )
        proc.start()
        child.close()  # the child's end lives in the child only, so its death reads as EOF here
        self.process, self._conn = proc, parent
        self._dead.clear()
        asyncio.get_running_loop().add_reader(parent.fileno(), self._on_readable)
        # Ready, or dead at start (e.g. its database cannot be opened): no waiting out the timeout then.
        await wait_any(self._ready, self._dead, within_s=START_TIMEOUT_S)
        if not self._ready.is_set():
            proc.kill()
            raise ExecutorUnavailableError(f"the executor process did not start (exit code {proc.exitcode})")
        log.info("executor process ready", pid=proc.pid, nice=nice)

    def _on_readable(self) -> None:
        conn = self._conn
        if conn is None:
            return
        # One message per wake-up: the pipe is unbuffered on this side, so the loop calls again at
        # once while it holds more, and that costs less than conn.poll()'s selector per message.
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            self._on_eof()
            return
        self._dispatch(msg)

    def _dispatch(self, msg: Message) -> None:
        ev = msg.get("ev")
        if ev == "ready":
            self._ready.set()
        elif ev == "status":
            self.status = msg["data"]
            self.status_version += 1
        elif ev == "reply":
            future = self._pending.get(msg["req"])
            if future is not None and not future.done():
                future.set_result(msg.get("data"))
        else:
            self.on_event(msg)

    def _on_eof(self) -> None:
        self._ready.clear()
        self._close_pipe()
        self.status = {}
        self.status_version += 1
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ExecutorUnavailableError("the executor process died"))
        self._dead.set()

    def _close_pipe(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._conn.fileno())
            self._conn.close()
            self._conn = None

    async def _supervise(self) -> None:
        backoff = RESTART_BACKOFF_S
        while True:
            await self._dead.wait()
            if self._stopping:
                return
            proc = self.process
            code = proc.exitcode if proc is not None else None
            if proc is not None:
                await asyncio.to_thread(proc.join, 5.0)
                code = proc.exitcode
            log.error("executor process died; restarting it", pid=self.pid, exitcode=code)
            started = time.monotonic()
            try:
                await self.on_death()
            except Exception:
                log.exception("could not hand back the runs of the dead executor")
            await asyncio.sleep(backoff)
            try:
                await self._spawn()
            except Exception:
                log.exception("executor restart failed; retrying")
                self._dead.set()
                backoff = min(backoff * 2, RESTART_BACKOFF_MAX_S)
                continue
            self.restarts += 1
            # A child that lived a while resets the backoff; one that died at once doubles it.
            backoff = RESTART_BACKOFF_S if time.monotonic() - started > 30 else min(backoff * 2, 10.0)
            try:
                await self.on_restart()
            except Exception:
                log.exception("could not resume the runs of the dead executor")


# ---------------------------------------------------------------------- the child


def executor_main(
    conn: Connection, settings: Settings, owner_id: str, nice: int, setup: Callable[[], None] | None
) -> None:
    """The executor process: execute runs sent over ``conn`` until told to drain or the API is gone."""
    if nice:
        os.nice(nice)  # the API process gets the larger share of a shared core
    # Before the threads of the executor's own start (log writer, SQLite writer): they inherit it.
    sched_problem = _sched_idle() if settings.api.executor_sched == "idle" else None
    # Ctrl-C reaches the whole process group; the API process decides when runs stop (it drains us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from jax_assistant.observability.logging import configure_logging

    configure_logging(settings.log_level, json=settings.log_json, stream=sys.stderr, background=True)
    if sched_problem is not None:
        log.warning("executor_sched idle not applied: the executor keeps its nice", reason=sched_problem)
    if setup is not None:
        setup()
    asyncio.run(_serve(conn, settings, owner_id))


def _sched_idle() -> str | None:
    """Every thread of this process under SCHED_IDLE (those started later inherit it); why not, if
    it could not be set.

    Why: on Linux's EEVDF scheduler (6.6 and later) a lower nice shrinks the executor's share of a
    shared core but not its turn: an API thread that wakes while the executor runs may wait out the
    executor's slice (1.4 ms here) before it gets the core, and an accept wakes the loop and the writer
    thread several times. A SCHED_IDLE task is preempted as soon as a normal one wakes
    (bench/README.md "Accept: the executor's CPU policy")."""
    if not hasattr(os, "SCHED_IDLE"):
        return "SCHED_IDLE needs Linux"
    try:
        # Every thread: some start while the child imports its arguments' modules (polars, jemalloc).
        for tid in _threads():
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except OSError as exc:  # a sandbox may forbid it: the runs still execute, at their nice level
        return str(exc)
    return None


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # no /proc: this thread, which the threads started from now on inherit
        return [0]


async def _serve(conn: Connection, settings: Settings, owner_id: str) -> None:
    # Imported here: this module is imported by the API (api/runs.py), which the child reuses.
    from jax_assistant.api.runs import RunChannel, RunManager
    from jax_assistant.domain import Run
    from jax_assistant.orchestrator import Orchestrator, PreparedRun

    orch = Orchestrator(settings)
    orch.owner_id = owner_id  # one owner with the API process: its queued runs' leases pass over as is
    await orch.open()
    gc.freeze()  # as the API process does once serving (api/server.py): start-up's objects stay
    manager = RunManager(orch)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Message | None] = asyncio.Queue()

    def send(message: Message) -> None:
        with contextlib.suppress(OSError):  # the API is gone: the inbox's EOF ends this process
            conn.send(message)

    def readable() -> None:
        try:
            while conn.poll():
                inbox.put_nowait(conn.recv())
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            inbox.put_nowait(None)

    class ForwardingChannel(RunChannel):
        """The run's ProgressSink in the child: every event goes to the API process's channel."""

        def started(self, total: int) -> None:
            super().started(total)
            send({"ev": "started", "runId": self.run_id, "total": total})

        def symbol_done(self, result: SymbolResult) -> None:
            from jax_assistant.api.runs import symbol_event

            send({"ev": "symbol", "runId": self.run_id, "data": symbol_event(result)})

        def close(self, final: dict[str, Any] | None) -> None:
            if not self.done:
                super().close(final)
                send({"ev": "end", "runId": self.run_id, "final": final})

    def start_run(msg: Message) -> None:
        run = Run.model_validate(msg["run"])
        channel = ForwardingChannel(run.id)
        manager._channels[run.id] = channel
        start: Callable[[], Awaitable[Any]]
        if msg["kind"] == "new":

            async def execute_new() -> Any:
                # Rebuilt from the stored run as a resume does: same provider, pipeline and overrides
                # (execute builds the stages from the run's pipeline and overrides).
                prepared = PreparedRun(
                    run=run,
                    provider=orch.provider(run.params.get("provider"), run.params.get("dataPath")),
                    stages=None,
                    unknown=list(run.params.get("unknownSymbols", [])),
                )
                return await orch.execute(prepared, progress=channel, record=False)

            start = execute_new
        elif msg["kind"] == "resume":
            start = functools.partial(orch.resume_run, run.id, progress=channel)
        else:
            start = functools.partial(
                orch.retry_dead_letters, msg["letters"], progress=channel, new_id=run.id
            )
        manager._spawn(manager._execute(run, start, channel), name=f"jax-run-{run.id}")

    async def reply(msg: Message, work: Awaitable[Any]) -> None:
        try:
            data = await work
        except Exception as exc:  # the API's request gets an answer either way
            data = {"error": f"{type(exc).__name__}: {exc}"}
        send({"ev": "reply", "req": msg["req"], "data": data})

    async def metrics() -> dict[str, Any]:
        body, content_type = orch.metrics.render()
        return {"body": body, "contentType": content_type}

    async def report_status() -> None:
        last: Message | None = None
        while True:
            current = orch.status()
            if current != last:
                send({"ev": "status", "data": current})
                last = current
            await asyncio.sleep(STATUS_INTERVAL_S)

    loop.add_reader(conn.fileno(), readable)
    # A SIGTERM sent to the whole group (systemd, a container stop) drains like the API's own stop,
    # instead of killing the runs mid-stage with their leases held until the TTL.
    loop.add_signal_handler(signal.SIGTERM, inbox.put_nowait, {"op": "drain", "timeout_s": SIGTERM_DRAIN_S})
    reporter = asyncio.create_task(report_status(), name="jax-executor-status")
    helpers: set[asyncio.Task[None]] = set()
    drain_s = 5.0
    send({"ev": "ready", "pid": os.getpid()})
    try:
        while (msg := await inbox.get()) is not None:
            op = msg["op"]
            if op == "run":
                start_run(msg)
                continue
            if op == "drain":
                drain_s = float(msg["timeout_s"])
                break
            if op == "cancel":
                work: Awaitable[Any] = manager.cancel_local(msg["runId"])
            elif op == "metrics":
                work = metrics()
            else:
                log.warning("unknown executor message", op=op)
                continue
            task = asyncio.create_task(reply(msg, work))
            helpers.add(task)
            task.add_done_callback(helpers.discard)
    finally:
        # Drain: active runs stop taking symbols, in-flight stages finish, the runs stay `running`
        # (leases released) for the next executor to resume; then cancel what is left.
        for engine in list(orch.active.values()):
            engine.interrupt()
        deadline = time.monotonic() + drain_s
        while orch.active and time.monotonic() < deadline:  # noqa: ASYNC110 - nothing signals it
            await asyncio.sleep(0.05)
        await manager.shutdown(10.0)
        reporter.cancel()
        await orch.close()
        with contextlib.suppress(Exception):
            loop.remove_reader(conn.fileno())
        conn.close()
