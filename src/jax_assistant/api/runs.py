"""Runs started by the HTTP service: validation up front, execution in background tasks, live progress.

The request handler validates everything a run can be refused for (symbols, date, stage overrides),
fixes the run id and correlation id, hands the run to a background task and answers once the run row is
written. While the run executes, a :class:`RunChannel` (its ProgressSink) fans progress out to
Server-Sent-Event clients; once it ends, the stored results are the source of truth and the channel is
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from jax_assistant.domain import Run, RunStatus, SymbolResult, utc_now
from jax_assistant.domain.errors import InputError
from jax_assistant.observability.correlation import (
    bind_correlation_id,
    get_correlation_id,
    new_audit_event,
    new_correlation_id,
)
from jax_assistant.observability.logging import get_logger
from jax_assistant.observability.tracing import run_span
from jax_assistant.orchestrator import (
    Orchestrator,
    PreparedRun,
    RunError,
    RunLeasedError,
    RunOutcome,
    RunRequest,
    new_run_id,
    unknown_symbols_message,
)
from jax_assistant.pipeline.fetch_stage import with_fetch_stage
from jax_assistant.pipeline.plugins import PipelineConfigError
from jax_assistant.service.admission import Admission, Ticket
from jax_assistant.service.executor import ExecutorClient, ExecutorUnavailableError, Message
from jax_assistant.service.waiting import wait_any
from jax_assistant.storage import Repository
from jax_assistant.storage.repository import AuditWrite, DeadLetter

log = get_logger("jax_assistant.api.runs")

SseMessage = tuple[str, dict[str, Any]]  # (event name, JSON data)


class InvalidOverrideError(InputError):
    """``stageOverrides`` names a stage outside the pipeline or sets an invalid policy (a 400)."""


def symbol_event(result: SymbolResult) -> dict[str, Any]:
    """The SSE ``symbol`` payload: the symbol's terminal state and what it produced, not the whole result."""
    return {
        "runId": result.run_id,
        "symbol": result.symbol,
        "status": result.status.value,
        "error": result.error,
        "counts": {
            "events": len(result.events),
            "setups": len(result.trades),
            "allowed": sum(1 for t in result.trades if t.risk.allowed),
        },
    }


def run_event(run: Run, error: str | None = None) -> dict[str, Any]:
    payload = run.to_contract()
    if error is not None:
        payload["error"] = error
    return payload


def format_sse(message: SseMessage) -> bytes:
    event, data = message
    # json.dumps never emits a raw newline, so the payload is always a single `data:` line.
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


SSE_KEEPALIVE = b": keep-alive\n\n"


class RunChannel:
    """Live progress of one run executing in this process, fanned out to any number of SSE clients.

    It is the run's ProgressSink. A subscriber gets a snapshot of what already happened plus a queue of
    what follows, taken with no await in between, so nothing is missed or sent twice.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.total: int | None = None
        self.done = False
        self.final: dict[str, Any] | None = None
        # Set when the engine starts the run (its row exists) and when the stream ends, for callers
        # that answer only then (a dead-letter retry, `wait=true`).
        self.began = asyncio.Event()
        self.ended = asyncio.Event()
        self._history: list[SseMessage] = []
        self._subscribers: set[asyncio.Queue[SseMessage | None]] = set()

    # ProgressSink
    def started(self, total: int) -> None:
        self.total = total
        self.began.set()

    def symbol_done(self, result: SymbolResult) -> None:
        self._publish(("symbol", symbol_event(result)))

    def publish_symbol(self, payload: dict[str, Any]) -> None:
        """A ``symbol`` event already rendered (by the executor process)."""
        self._publish(("symbol", payload))

    def close(self, final: dict[str, Any] | None) -> None:
        """End the stream: with the ``run`` event, or without one (service shutting down)."""
        if self.done:
            return
        if final is not None:
            self._publish(("run", final))
        self.final = final
        self.done = True
        self.ended.set()
        for q in self._subscribers:
            q.put_nowait(None)
        self._subscribers.clear()

    def subscribe(self) -> tuple[list[SseMessage], asyncio.Queue[SseMessage | None]]:
        queue: asyncio.Queue[SseMessage | None] = asyncio.Queue()
        if self.done:
            queue.put_nowait(None)
        else:
            self._subscribers.add(queue)
        return list(self._history), queue

    def unsubscribe(self, queue: asyncio.Queue[SseMessage | None]) -> None:
        self._subscribers.discard(queue)

    def _publish(self, message: SseMessage) -> None:
        self._history.append(message)
        for q in self._subscribers:
            q.put_nowait(message)  # unbounded: at most one message per symbol plus one


class RunManager:
    """Starts, resumes and tracks the runs of this service process.

    Runs execute in this process (inline) or, after :meth:`start_executor`, in the executor process
    (service/executor.py): this process then keeps admission, the run rows, the queued runs' leases
    and the SSE channels, and the executor sends each run's progress back into its channel.
    """

    def __init__(self, orchestrator: Orchestrator, admission: Admission | None = None) -> None:
        self.orchestrator = orchestrator
        self.admission = admission  # resumed runs take their places from it too
        self._channels: dict[str, RunChannel] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.resume_state: dict[str, Any] = {"state": "disabled", "runIds": [], "finished": []}
        self.executor: ExecutorClient | None = None
        self._remote: set[str] = set()  # ids of the runs handed to the executor and not ended yet

    @property
    def repository(self) -> Repository:
        repo = self.orchestrator.repository
        if repo is None:
            raise RuntimeError("the orchestrator is not open (the app's lifespan did not run)")
        return repo

    # ------------------------------------------------------------------ starting runs

    def prepare(self, request: RunRequest) -> PreparedRun:
        """Validate ``request`` as the orchestrator does, without recording or starting anything.

        Raises RunError (bad input: a 400) or InvalidOverrideError (a 400 with ``details``). Stricter
        than the CLI on purpose: an unknown symbol refuses the whole request instead of being skipped,
        because an HTTP caller has no terminal to read a "skipped" warning on.
        """
        orch = self.orchestrator
        provider = orch.request_provider(request)
        _, unknown = orch.resolve_symbols(provider, request.symbols)
        if unknown:
            raise RunError(unknown_symbols_message(unknown, provider))
        latest = provider.latest_date()
        if request.as_of is not None and request.as_of > latest:
            raise RunError(
                f"asOf {request.as_of.isoformat()} is after the last session in the data "
                f"({latest.isoformat()})"
            )
        pipeline = with_fetch_stage(list(orch.settings.pipeline), orch.settings.provider)
        foreign = sorted(set(request.stage_overrides or {}) - set(pipeline))
        if foreign:
            raise InvalidOverrideError(
                f"stageOverrides.{foreign[0]}: not a stage of the pipeline ({', '.join(pipeline)})"
            )
        cid = request.correlation_id or get_correlation_id() or new_correlation_id()
        if cid != request.correlation_id:  # the API's requests carry theirs: no copy for them
            request = dataclasses.replace(request, correlation_id=cid)
        try:
            return orch.prepare_run(request)
        except PipelineConfigError as exc:
            if not request.stage_overrides:
                raise  # the configured pipeline itself is broken: a server problem, not the request's
            orch.stages(None)  # re-raises if the configuration alone is broken
            raise InvalidOverrideError(f"stageOverrides: {exc}") from exc

    async def submit(
        self, prepared: PreparedRun, *, ticket: Ticket | None = None, audit: AuditWrite | None = None
    ) -> bool:
        """Record a prepared run, then execute it in a background task.

        The row is written before this returns, so the 202 means something: the id resolves at once
        on GET /runs/{id}, and a shutdown or crash right after the answer still leaves a row the next
        start-up resumes. A failure to record is raised here, to the request.

        With ``audit`` (the acceptance's audit record) the run row and that record are written in one
        transaction (shared with the accepts waiting beside it); False means its idempotency key was
        already recorded, and nothing was written or started (the ticket is then the caller's to free).

        With an admission ``ticket`` the run waits for its place before executing and frees it when its
        task ends, however it ends.
        """
        run = prepared.run
        orch = self.orchestrator
        # The executor message carries the run as JSON, the same dump its row stores: made once.
        run_json = run.model_dump(mode="json") if self.executor is not None else None
        if not await orch.record_run(prepared, audit=audit, run_json=run_json):
            return False
        channel = RunChannel(run.id)
        self._channels[run.id] = channel

        async def queued() -> None:
            if ticket is not None:
                await self._wait_queued(run.id, ticket)

        async def start() -> RunOutcome:
            await queued()
            return await orch.execute(prepared, progress=channel, record=False)

        if self.executor is not None:
            message = {"op": "run", "kind": "new", "run": run_json}
            coro = self._execute_remote(run, message, channel, before=queued)
        else:
            coro = self._execute(run, start, channel)
        task = self._spawn(coro, name=f"jax-run-{run.id}")
        if ticket is not None:
            task.add_done_callback(lambda _: ticket.release())
        return True

    async def _wait_queued(self, run_id: str, ticket: Ticket) -> None:
        """Wait for the run's admission place with its lease heartbeated meanwhile: a run queued longer
        than the lease TTL is still owned by this process, so no other process resumes it as
        interrupted. Raises RunLeasedError if the lease was lost anyway (this process stalled)."""
        if ticket.granted.is_set():
            await ticket.wait()
            return
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(
            self.orchestrator.heartbeat(run_id, lost.set), name=f"jax-queued-lease-{run_id}"
        )
        waiter = asyncio.create_task(ticket.wait(), name=f"jax-queued-{run_id}")
        try:
            await asyncio.wait({heartbeat, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (heartbeat, waiter):
                task.cancel()
            await asyncio.gather(heartbeat, waiter, return_exceptions=True)
        if lost.is_set():
            raise RunLeasedError(f"run {run_id!r} was taken over by another process while queued")
        if not ticket.granted.is_set():  # the heartbeat ended without losing the lease: storage closed
            raise RunError(f"run {run_id!r} could not keep its lease while queued")

    async def wait(self, run_id: str, timeout_s: float) -> bool:
        """Until the run executing here ends (True) or ``timeout_s`` passes (False)."""
        channel = self._channels.get(run_id)
        if channel is None:
            return True
        try:
            await asyncio.wait_for(channel.ended.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def cancel(self, run_id: str, *, settle_s: float = 2.0) -> Run:
        """Cancel a run: the engine drains (in-flight stages finish) and ends the rest ``cancelled``.

        Raises LookupError for an unknown run and RunError (a 409) for one that already ended or that
        another live process executes. An interrupted run (its executor died) is marked ``cancelled``
        here, under its lease, so no start-up resumes it.
        """
        orch = self.orchestrator
        run = await self.repository.get_run(run_id)
        if run is None:
            raise LookupError(run_id)
        if run.status not in (RunStatus.RUNNING, RunStatus.INTERRUPTED):
            raise RunError(
                f"run {run_id!r} already ended ({run.status.value})", field="runId", rule="running"
            )
        if self.executor is not None and run_id in self._remote:
            found = await self.executor.request({"op": "cancel", "runId": run_id})
        else:
            found = await self.cancel_local(run_id, settle_s=settle_s)
        if found is True:
            log.info("run cancel requested", run_id=run_id)
            return run
        if run.status is RunStatus.INTERRUPTED and await orch.claim_run(run_id):
            try:
                run.status = RunStatus.CANCELLED
                run.finished_at = utc_now()
                await self.repository.update_run(run)
            finally:
                await self.repository.release_lease(run_id, orch.owner_id)
            log.info("interrupted run cancelled", run_id=run_id)
            return run
        raise RunError(
            f"run {run_id!r} is executed by another process; cancel it there", field="runId", rule="local"
        )

    async def cancel_local(self, run_id: str, *, settle_s: float = 2.0) -> bool:
        """Cancel the engine of ``run_id`` if it executes in this process; False if it does not."""
        orch = self.orchestrator
        # A run just accepted builds its engine before it shows in `active`: give it a moment. Polled:
        # nothing signals an engine's registration.
        deadline = time.monotonic() + settle_s
        while run_id in self._channels and run_id not in orch.active and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        engine = orch.active.get(run_id)
        if engine is None:
            return False
        engine.cancel()
        return True

    async def retry_dead_letter(self, letter: DeadLetter, *, start_timeout_s: float = 30.0) -> str:
        """Re-run one open dead letter as a new run in the background; returns once that run exists.

        Raises RunError when the retry cannot start (e.g. the letter was retried meanwhile).
        """
        orch = self.orchestrator
        origin = await self.repository.get_run(letter.run_id)
        if origin is None:
            raise RunError(f"the run {letter.run_id!r} of the dead letter is gone", field="id")
        run_id = new_run_id()
        placeholder = Run(
            id=run_id,
            correlation_id=origin.correlation_id,
            as_of=origin.as_of,
            provider=origin.provider,
            simulated=origin.simulated,
            symbols=[letter.symbol],
            pipeline=origin.pipeline,
        )
        channel = RunChannel(run_id)
        self._channels[run_id] = channel
        if self.executor is not None:
            message = {
                "op": "run",
                "kind": "retry",
                "run": placeholder.model_dump(mode="json"),
                "letters": [letter.id],
            }
            coro = self._execute_remote(placeholder, message, channel)
        else:
            start = functools.partial(orch.retry_dead_letters, [letter.id], progress=channel, new_id=run_id)
            coro = self._execute(placeholder, start, channel)
        self._spawn(coro, name=f"jax-retry-{run_id}")
        await wait_any(channel.began, channel.ended, within_s=start_timeout_s)
        if not channel.began.is_set():
            error = (channel.final or {}).get("error") or "the retry did not start in time"
            raise RunError(f"dead letter {letter.id}: {error}", field="id", rule="retryable")
        return run_id

    def spawn_after(
        self, ready: asyncio.Event, start: Callable[[], Awaitable[object]], *, name: str
    ) -> asyncio.Task[None]:
        """Run ``start()`` in the background once ``ready`` is set (cancelled with the others at shutdown)."""

        async def wait_then_start() -> None:
            await ready.wait()
            await start()

        return self._spawn(wait_then_start(), name=name)

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)  # a strong reference, or the loop may garbage-collect a running task
        task.add_done_callback(self._tasks.discard)
        return task

    async def _execute(
        self, run: Run, start: Callable[[], Awaitable[RunOutcome]], channel: RunChannel
    ) -> None:
        final: dict[str, Any] | None = None
        # A resumed run has no request context: bind its own id so its logs and spans carry it.
        with bind_correlation_id(run.correlation_id), run_span(run.id, correlation_id=run.correlation_id):
            try:
                outcome = await start()
            except asyncio.CancelledError:
                # Service shutting down: the run stays `running` in the database, checkpointed per stage,
                # and the next start-up resumes it. That beats ending it `cancelled` on every redeploy.
                log.info("run interrupted by shutdown", run_id=run.id)
                raise
            except RunLeasedError:
                # Another process holds the run now and records its outcome: writing a failure here
                # would overwrite that process's run.
                log.warning("run left to the process that took its lease", run_id=run.id)
            except Exception as exc:
                log.exception("run failed", run_id=run.id)
                final = await self._record_failure(run, exc)
            else:
                final = run_event(outcome.run)
                log.info(
                    "run finished", run_id=run.id, status=outcome.run.status.value, counts=outcome.run.counts
                )
            finally:
                self._channels.pop(run.id, None)
                channel.close(final)

    async def _execute_remote(
        self,
        run: Run,
        message: Message,
        channel: RunChannel,
        *,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Hand the run to the executor process and follow it until its ``end`` message (or the
        executor's death) closes the channel. The executor records the run's outcome and failures;
        this process records only a failure to hand it over."""
        assert self.executor is not None
        with bind_correlation_id(run.correlation_id):
            try:
                if before is not None:
                    await before()  # the admission queue, with the lease heartbeated from here
                await self.executor.ready()
                self.executor.send(message)
                self._remote.add(run.id)  # no await since the send: its `end` cannot have arrived
                await channel.ended.wait()
            except asyncio.CancelledError:
                log.info("run interrupted by shutdown", run_id=run.id)
                raise
            except RunLeasedError:
                log.warning("run left to the process that took its lease", run_id=run.id)
            except Exception as exc:
                if isinstance(exc, ExecutorUnavailableError) and self.executor.stopping:
                    # Shut down before its turn (it was queued): left `running`, its lease released,
                    # as a drained run is, so the next start-up resumes it instead of finding it failed.
                    log.info("queued run left for the next start-up", run_id=run.id)
                    with contextlib.suppress(Exception):
                        await self.repository.release_lease(run.id, self.orchestrator.owner_id)
                else:
                    log.exception("run could not be handed to the executor", run_id=run.id)
                    if run.id not in self._remote:  # never sent: nothing else records its end
                        channel.close(await self._record_failure(run, exc))
            finally:
                self._remote.discard(run.id)
                self._channels.pop(run.id, None)
                channel.close(None)  # no-op when the run's end already closed it

    def _on_executor_event(self, msg: Message) -> None:
        channel = self._channels.get(msg["runId"])
        if channel is None:
            return
        ev = msg["ev"]
        if ev == "started":
            channel.started(msg["total"])
        elif ev == "symbol":
            channel.publish_symbol(msg["data"])
        elif ev == "end":
            self._remote.discard(channel.run_id)
            self._channels.pop(channel.run_id, None)
            channel.close(msg["final"])

    async def _on_executor_death(self) -> None:
        """The runs the dead executor had stay ``running``: release their leases (so they read
        ``interrupted`` at once instead of after the lease TTL) and end their live streams; the next
        executor resumes them (:meth:`resume_interrupted`)."""
        lost = sorted(self._remote)
        self._remote.clear()
        for run_id in lost:
            channel = self._channels.pop(run_id, None)
            if channel is not None:
                channel.close(None)
            with contextlib.suppress(Exception):  # storage down: the lease simply expires
                await self.repository.release_lease(run_id, self.orchestrator.owner_id)
        log.warning("runs of the dead executor left for resume", run_ids=lost)

    async def start_executor(self, setup: Callable[[], None] | None = None) -> None:
        """Execute runs in an executor process from now on (``[api] executor = "process"``)."""
        self.executor = ExecutorClient(
            self.orchestrator.settings,
            self.orchestrator.owner_id,
            on_event=self._on_executor_event,
            on_death=self._on_executor_death,
            on_restart=self.resume_interrupted,
            setup=setup,
        )
        await self.executor.start()

    def execution_status(self) -> dict[str, Any]:
        """Active runs, queue depth, in-flight and resilience for /status: of the process executing."""
        if self.executor is None:
            return self.orchestrator.status()
        return self.executor.status or {"activeRuns": {}, "queueDepth": 0, "inFlight": 0, "resilience": {}}

    def execution_key(self) -> object | None:
        """What identifies :meth:`execution_status` for a cache: None (do not cache) while a run
        executes in this process, whose per-stage counters change without a version; the executor's
        snapshot version in process mode (the child sends a snapshot only when it changed)."""
        if self.executor is None:
            return None if self.orchestrator.active else 0
        return ("executor", self.executor.status_version)

    async def render_metrics(self) -> tuple[bytes, str]:
        """The Prometheus text of the process executing the runs (where the pipeline metrics are)."""
        if self.executor is None:
            return self.orchestrator.metrics.render()
        return await self.executor.render_metrics()

    async def _record_failure(self, run: Run, exc: Exception) -> dict[str, Any]:
        """Mark a run that raised as failed (and audit why), so it neither shows `running` forever nor
        gets resumed by the next start-up."""
        message = str(exc) if isinstance(exc, RunError) else f"{type(exc).__name__}: {exc}"
        stored: Run | None = None
        try:
            stored = await self.repository.get_run(run.id)
            # INTERRUPTED too: the lease is released as the run ends, before this reads the row back.
            if stored is not None and stored.status in (RunStatus.RUNNING, RunStatus.INTERRUPTED):
                stored.status = RunStatus.FAILED
                stored.finished_at = utc_now()
                await self.repository.update_run(stored)
                await self.repository.record_audit(
                    new_audit_event(
                        "run.failed",
                        "error",
                        payload={"runId": run.id},
                        error=message,
                        correlation_id=run.correlation_id,
                    ),
                    idempotency_key=f"{run.id}/run/failed",
                    run_id=run.id,
                )
        except Exception:  # storage down: the row (if any) stays `running` and is resumed on restart
            log.exception("could not record the run's failure", run_id=run.id)
        failed = stored or run.model_copy(update={"status": RunStatus.FAILED, "finished_at": utc_now()})
        return run_event(failed, message)

    # ------------------------------------------------------------------ resuming at start-up

    async def resume_interrupted(self) -> list[str]:
        """Resume, oldest first and in the background, the interrupted runs whose lease this process wins.

        Interrupted means ``running`` with an expired lease: its executor died. A run another live
        process executes (this one's own included) holds a live lease, so it is never picked up here;
        of several services starting together, each run goes to whichever takes its lease first. Each
        resumed run gets a channel, so its SSE stream is live.
        """
        runs = [r for r in await self.orchestrator.interrupted_runs() if r.id not in self._channels]
        channels = {r.id: RunChannel(r.id) for r in runs}
        self._channels.update(channels)
        ids = [r.id for r in runs]
        self.resume_state = {"state": "running" if runs else "done", "runIds": ids, "finished": []}
        if runs:
            log.warning("resuming interrupted runs", count=len(runs), run_ids=ids)
            self._spawn(self._resume_all(runs, channels), name="jax-resume-interrupted")
        else:
            log.info("no interrupted runs to resume")
        return ids

    async def _resume_all(self, runs: list[Run], channels: dict[str, RunChannel]) -> None:
        orch = self.orchestrator
        try:
            for run in runs:  # one after another, like Orchestrator.resume_interrupted
                channel = channels[run.id]
                # A resumed run holds admission places like a new one, so the global cap holds
                # across resumed and new runs; its lease is taken only once it has its place.
                ticket = None
                if self.admission is not None:
                    ticket = self.admission.enqueue_resumed(
                        min(len(run.symbols), orch.settings.engine.concurrency)
                    )
                try:
                    if ticket is not None:
                        await ticket.wait()
                    # Claimed at its turn (not all up front): a lease taken now is heartbeated from now on.
                    if not await orch.claim_run(run.id):
                        log.info("interrupted run taken by another process", run_id=run.id)
                        self._channels.pop(run.id, None)
                        channel.close(None)
                        continue
                    if self.executor is not None:
                        message = {"op": "run", "kind": "resume", "run": run.model_dump(mode="json")}
                        await self._execute_remote(run, message, channel)
                    else:
                        await self._execute(
                            run, functools.partial(orch.resume_run, run.id, progress=channel), channel
                        )
                finally:
                    if ticket is not None:
                        ticket.release()
                self.resume_state["finished"].append(run.id)
                log.info("resumed interrupted run", run_id=run.id)
        finally:
            for channel in channels.values():
                if not channel.done:  # cancelled before its turn: end the waiting SSE clients' streams
                    self._channels.pop(channel.run_id, None)
                    channel.close(None)
            self.resume_state["state"] = "done"

    # ------------------------------------------------------------------ queries

    def channel(self, run_id: str) -> RunChannel | None:
        return self._channels.get(run_id)

    def snapshot(self) -> dict[str, Any]:
        return {
            "executing": sorted(self._channels),
            "tasks": len(self._tasks),
            "startupResume": dict(self.resume_state),
            "executor": self.executor.snapshot() if self.executor is not None else {"mode": "inline"},
        }

    async def stop_executor(self, drain_s: float) -> None:
        """Shutdown in process mode: the executor drains its runs (they stay resumable) and exits."""
        if self.executor is not None:
            await self.executor.stop(drain_s)

    async def shutdown(self, timeout_s: float = 10.0) -> None:
        """Cancel every run task (they stay resumable) and wait for them to unwind."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            if pending:
                log.warning("run tasks still unwinding at shutdown", count=len(pending))

    # ------------------------------------------------------------------ SSE

    async def stream(
        self, run_id: str, *, poll_interval_s: float = 0.5, keepalive_s: float = 15.0
    ) -> AsyncIterator[bytes] | None:
        """The SSE byte stream of a run, or None when the run is unknown (a 404).

        Decided before the response starts so an unknown id can still get a proper status code.
        """
        channel = self._channels.get(run_id)
        if channel is not None:
            return self._from_channel(channel, keepalive_s)
        if await self.repository.get_run(run_id) is None:
            return None
        return self._from_database(run_id, poll_interval_s, keepalive_s)

    async def _from_channel(self, channel: RunChannel, keepalive_s: float) -> AsyncIterator[bytes]:
        history, queue = channel.subscribe()
        try:
            for past in history:
                yield format_sse(past)
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), keepalive_s)
                except TimeoutError:
                    yield SSE_KEEPALIVE  # proxies drop connections that stay silent too long
                    continue
                if message is None:
                    return
                yield format_sse(message)
        finally:
            channel.unsubscribe(queue)

    async def _from_database(
        self, run_id: str, poll_interval_s: float, keepalive_s: float
    ) -> AsyncIterator[bytes]:
        """Stored results, then the run event; polls while the run is executing elsewhere.

        A run whose executor died reads ``interrupted`` (its lease expired) and ends the stream with
        that status, instead of polling a run nothing executes.

        The run row is read before the results: the engine stores every result before it marks the
        run finished, so seeing it finished guarantees the results read next are complete.
        """
        sent: set[str] = set()
        quiet_since = time.monotonic()
        while True:
            run = await self.repository.get_run(run_id)
            if run is None:
                return
            for result in await self.repository.get_symbol_results(run_id):
                if result.status.terminal and result.symbol not in sent:
                    sent.add(result.symbol)
                    quiet_since = time.monotonic()
                    yield format_sse(("symbol", symbol_event(result)))
            if run.status is not RunStatus.RUNNING:
                yield format_sse(("run", run_event(run)))
                return
            if time.monotonic() - quiet_since >= keepalive_s:
                quiet_since = time.monotonic()
                yield SSE_KEEPALIVE
            await asyncio.sleep(poll_interval_s)
