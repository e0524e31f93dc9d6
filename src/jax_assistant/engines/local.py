"""The local asyncio engine: many symbols through the pipeline at once, each isolated.

Flow control: a producer feeds symbol work items into a bounded queue (backpressure), a fixed pool
of workers (the global in-flight limit) takes them, and each stage may cap how many symbols are inside
it at once. Around every stage call the engine — never the stage — applies, outermost first:
per-stage concurrency, then per attempt: circuit breaker, rate limiter, bulkhead, timeout; and retries
with backoff around the attempts. Every outcome becomes a StageResult, is checkpointed with the work
item (so a killed run resumes from the last completed stage) and is audited under the run's
correlation id. Every symbol ends in exactly one terminal state.

Run stages (barriers, ``is_run_stage``) cut the pipeline into segments: each segment runs per symbol
on the pool, then its barrier runs once over every symbol that reached it, in ``run.symbols`` order,
and its checkpoints commit in one write. Stage code is contained: whatever it raises (any
``BaseException``) or returns is that stage's result, and the engine keeps its own JSON snapshot of
each item, so a stage mutating what it was handed cannot change checkpoints, dead letters or retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol, cast

from pydantic import BaseModel, TypeAdapter
from pydantic_core import from_json

from jax_assistant.domain import (
    AuditEvent,
    AuditOutcome,
    Event,
    RiskResult,
    Run,
    RunStatus,
    StageResult,
    StageStatus,
    SymbolResult,
    SymbolStatus,
    TradeRecord,
    TradeSetup,
    utc_now,
)
from jax_assistant.engines.tuning import tune_gc_for_runs
from jax_assistant.engines.writer import GroupCommitWriter
from jax_assistant.observability.correlation import bind_correlation_id
from jax_assistant.observability.metrics import MetricsSink, NullMetrics
from jax_assistant.observability.tracing import set_span_status, stage_span, symbol_span
from jax_assistant.pipeline.base import (
    RunStage,
    RunStageOutput,
    Stage,
    StageContext,
    StageOutput,
    StageSkipped,
    WorkItem,
    is_run_stage,
)
from jax_assistant.pipeline.resilience import (
    CallNotPermittedError,
    Clock,
    ResilienceRegistry,
    SystemClock,
    call_with_retry,
)
from jax_assistant.pipeline.services import Services
from jax_assistant.storage.repository import (
    CHECKPOINT_DELTA_OF,
    CHECKPOINT_TRADES_REF,
    AuditRowWrite,
    CheckpointWrite,
    DeadLetterWrite,
    Repository,
    SymbolResultWrite,
    WriteOp,
)

_AUDIT_OUTCOME: dict[StageStatus, AuditOutcome] = {
    StageStatus.OK: "success",
    StageStatus.SKIPPED: "skipped",
    StageStatus.DEGRADED: "success",
    StageStatus.FAILED: "error",
    StageStatus.TIMED_OUT: "error",
    StageStatus.SHORT_CIRCUITED: "rejected",
}


_NOT_STARTED = "run cancelled before it started"
_STATUS: dict[str, StageStatus] = {
    "ok": StageStatus.OK,
    "skipped": StageStatus.SKIPPED,
    "degraded": StageStatus.DEGRADED,
}
_PASSED = frozenset(_STATUS.values())


class _BadOutput(Exception):
    """A stage returned something that is not a valid output for the item(s) it was given."""


class _StageCrashed(Exception):
    """A ``BaseException`` raised by stage code (SystemExit, KeyboardInterrupt, ...), contained.

    Stage code is not where a run or a process ends: only the engine's ``cancel()`` (from a real
    signal handler) does that, so such an exception is just this stage failing.
    """

    def __init__(self, exc: BaseException) -> None:
        super().__init__(f"{type(exc).__name__}: {exc}")


class ProgressSink(Protocol):
    def started(self, total: int) -> None: ...

    def symbol_done(self, result: SymbolResult) -> None: ...


@dataclass
class StartPoint:
    """Where a symbol starts: a fresh item at stage 0, or a checkpointed item at a later stage."""

    item: WorkItem
    next_stage: int = 0
    stages: list[StageResult] = field(default_factory=list)


# WorkItem's fields in serialisation order: a snapshot is kept as one JSON text per field.
_FIELDS: tuple[str, ...] = tuple(WorkItem.model_fields)
_EXTRAS = _FIELDS.index("extras")
_EVENTS, _SETUPS, _TRADES = (_FIELDS.index(n) for n in ("events", "setups", "trades"))

# A list field's elements as encoded: each object's id -> (its position, its JSON text).
_Elems = dict[int, tuple[int, str]]
# A trade in reference form (see ``_trades``): setup position, decision JSON, event position
# (or "null"), created_at JSON.
_TradeRef = tuple[int, str, str, str]


class _Snap:
    """A WorkItem as JSON text, one text per field (NaN and Infinity as null).

    Per field so that a checkpoint can store only the fields a stage changed: comparing field texts
    (not objects) also catches a stage that mutated a list or dict in place. ``text`` is the whole
    item, byte for byte what ``model_dump_json`` gives; it is built only when needed (a dead letter, a
    retry, a full checkpoint).

    ``stable[i]``: field i's object was made by the engine or by a stage that leaves what it is given
    and what it returns alone (``leaves_input_intact``), so while a later such stage hands that same
    object back, its text is still ``parts[i]`` and need not be encoded again (see ``_snapshot``).
    ``setups``/``events``: those fields' elements (position and text by object id), so a trade holding
    one of those very objects reuses its text; ``trades``: the trades in reference form when every one
    of them holds a setup (and event) of the item, else None.
    """

    __slots__ = ("_text", "events", "parts", "setups", "stable", "trades")

    def __init__(
        self,
        parts: tuple[str, ...],
        stable: tuple[bool, ...],
        setups: _Elems,
        events: _Elems,
        trades: tuple[_TradeRef, ...] | None,
    ) -> None:
        self.parts = parts
        self.stable = stable
        self.setups = setups
        self.events = events
        self.trades = trades
        self._text: str | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = "{" + ",".join(f'"{n}":{p}' for n, p in zip(_FIELDS, self.parts, strict=True)) + "}"
        return self._text

    def delta(self, base: _Snap, base_seq: int) -> str:
        """JSON of the fields whose text differs from ``base``, marked as a delta of ``base_seq``.

        Changed trades go out as references when they can (``CHECKPOINT_TRADES_REF``): a trade is
        mostly its setup and event, which the item holds already (calculate_risk makes trades of the
        item's setups, allocate gives them new decisions): ``[setup position, decision, event position
        or null, created_at]`` each, expanded again by ``Repository.load_checkpoints``.
        """
        changed = [f'"{CHECKPOINT_DELTA_OF}":{base_seq}']
        for i, (n, p, b) in enumerate(zip(_FIELDS, self.parts, base.parts, strict=True)):
            if p is b or p == b:
                continue
            if i == _TRADES and self.trades is not None:
                refs = ",".join(f"[{s},{r},{e},{c}]" for s, r, e, c in self.trades)
                changed.append(f'"{CHECKPOINT_TRADES_REF}":[{refs}]')
            else:
                changed.append(f'"{n}":{p}')
        return "{" + ",".join(changed) + "}"


@dataclass(slots=True)
class _Live:
    """A symbol still moving: its item, that item's JSON snapshot, and where it goes next.

    ``snap`` is taken when a stage's output is accepted (the checkpoint needs it anyway). It is what
    checkpoints, dead letters and retries use, so a stage that mutates the item it was handed cannot
    change the engine's record of what it received. It is JSON text (per field), encoded once: the
    checkpoint stores it as it is, and text is immutable, so a queued write needs no copy of it.

    ``stored``/``stored_seq``: the snapshot of this symbol's last checkpoint written by this engine and
    its seq. The next checkpoint stores only the fields that changed since (a delta of that seq): at
    lookback 60 most stages change one field of an item carrying dozens of trades, and writing the
    whole item after every stage was most of a run's database traffic. The first checkpoint a symbol
    writes in a process is whole, so a delta never depends on a row of another process's making.
    """

    item: WorkItem
    snap: _Snap
    next_stage: int
    stages: list[StageResult]
    degraded: bool
    started: bool = False
    stored: _Snap | None = None
    stored_seq: int = -1

    @classmethod
    def of(cls, sp: StartPoint) -> _Live:
        # A resumed symbol is already degraded if an earlier optional stage did not end ok/skipped.
        degraded = any(r.status not in (StageStatus.OK, StageStatus.SKIPPED) for r in sp.stages)
        return cls(sp.item, _snapshot(sp.item), sp.next_stage, list(sp.stages), degraded)

    def checkpoint_item(self, seq: int) -> str:
        """The JSON to checkpoint at ``seq`` for the current snapshot: a delta, or whole the first time."""
        snap, stored = self.snap, self.stored
        text = snap.text if stored is None else snap.delta(stored, self.stored_seq)
        self.stored, self.stored_seq = snap, seq
        return text


# Values of these exact types cannot change in place: the same object always has the same text.
_IMMUTABLE: frozenset[type] = frozenset({str, int, float, bool, date, type(None)})


def _dumper(annotation: Any) -> Callable[[Any], str]:
    # The type's own serializer: together the same bytes as model_dump_json, without the per-call
    # cost of an ``include`` filter (which was most of the time for the small fields).
    to_json = TypeAdapter(annotation).serializer.to_json

    def dump(value: Any) -> str:
        return to_json(value, warnings="error").decode()

    return dump


_DUMPERS: tuple[Callable[[Any], str], ...] = tuple(
    _dumper(WorkItem.model_fields[n].annotation) for n in _FIELDS
)
_dump_event = _dumper(Event)
_dump_setup = _dumper(TradeSetup)
_dump_risks = _dumper(list[RiskResult])
_dump_times = _dumper(list[datetime])


def _head(model: type[BaseModel]) -> str:
    """How the JSON of ``model`` begins: its first field's key (where ``_cut`` splits a list of them)."""
    return ',{"' + next(iter(model.model_fields)) + '":'


_SETUP_HEAD, _EVENT_HEAD, _RISK_HEAD = _head(TradeSetup), _head(Event), _head(RiskResult)


def _cut(text: str, sep: str, n: int) -> list[str] | None:
    """The element texts of ``text``, a JSON list of ``n`` elements that each begin with ``sep[1:]``:
    split at ``sep``, which then occurs exactly ``n - 1`` times unless something inside an element
    holds it too (then None: encode element by element instead). A call per element would cost about
    as much as encoding it."""
    if n == 0:
        return []
    pieces = text[1:-1].split(sep)
    if len(pieces) != n:
        return None
    head = sep[1:]
    return [pieces[0], *(head + p for p in pieces[1:])]


def _elements(
    value: list[Any], dump: Callable[[Any], str], one: Callable[[Any], str], sep: str
) -> tuple[str, _Elems]:
    """A list field's text and its elements (position and text by object id)."""
    text = dump(value)
    pieces = _cut(text, sep, len(value))
    if pieces is None:
        pieces = [one(v) for v in value]
    return text, {id(v): (k, t) for k, (v, t) in enumerate(zip(value, pieces, strict=True))}


def _trades(value: list[Any], setups: _Elems, events: _Elems) -> tuple[str, tuple[_TradeRef, ...]] | None:
    """The trades' text built from the texts of their setups and events (the item's own objects) and of
    their decisions, with their reference form; None unless every trade allows that."""
    if not value:
        return None
    for t in value:
        if (
            type(t) is not TradeRecord
            or id(t.setup) not in setups
            or not (t.event is None or id(t.event) in events)
        ):
            return None
    risks = _cut(_dump_risks([t.risk for t in value]), _RISK_HEAD, len(value))
    times = _cut(_dump_times([t.created_at for t in value]), ",", len(value))
    if risks is None or times is None:
        return None
    pieces: list[str] = []
    refs: list[_TradeRef] = []
    for t, risk, created in zip(value, risks, times, strict=True):
        k, setup = setups[id(t.setup)]
        if t.event is None:
            e_ref, event = "null", "null"
        else:
            e, event = events[id(t.event)]
            e_ref = str(e)
        pieces += ('{"setup":', setup, ',"risk":', risk, ',"event":', event, ',"created_at":', created, "},")
        refs.append((k, risk, e_ref, created))
    pieces[-1] = "}"
    return "[" + "".join(pieces) + "]", tuple(refs)


def _snapshot(item: WorkItem, base: tuple[WorkItem, _Snap] | None = None, *, intact: bool = True) -> _Snap:
    """``item`` as JSON text per field (NaN and Infinity as null); fails if it holds anything JSON cannot.

    ``base``: the item a stage was handed and its snapshot; ``intact``: that stage leaves what it is
    given and returns alone (the engine's own items count as such). A field the stage handed back as
    the same object keeps its text when the object cannot have changed: an immutable value, or one
    that is ``stable`` in ``base`` and passed through an intact stage. Every other field is encoded:
    at lookback 60 an item carries dozens of setups and trades that most stages pass through
    untouched, and encoding them again after every stage was most of the engine's own cost. Trades
    are built from the texts of the item's setups and events they hold (see ``_Snap``).
    """
    values = item.__dict__
    given = base[0].__dict__ if base is not None else None
    parts: list[str] = []
    stable: list[bool] = []
    setups: _Elems = {}
    events: _Elems = {}
    trades: tuple[_TradeRef, ...] | None = None
    try:
        for i, name in enumerate(_FIELDS):
            value = values[name]
            same = given is not None and value is given[name]
            if same and base is not None and (type(value) in _IMMUTABLE or (intact and base[1].stable[i])):
                parts.append(base[1].parts[i])
                stable.append(True)
                if i == _SETUPS:
                    setups = base[1].setups
                elif i == _EVENTS:
                    events = base[1].events
                elif i == _TRADES and setups is base[1].setups and events is base[1].events:
                    trades = base[1].trades  # its positions are those of the same setups and events
                continue
            if i == _SETUPS and type(value) is list:
                text, setups = _elements(value, _DUMPERS[i], _dump_setup, _SETUP_HEAD)
            elif i == _EVENTS and type(value) is list:
                text, events = _elements(value, _DUMPERS[i], _dump_event, _EVENT_HEAD)
            elif (
                i == _TRADES and type(value) is list and (built := _trades(value, setups, events)) is not None
            ):
                text, trades = built
            else:
                text = _DUMPERS[i](value)
            parts.append(text)
            # Handed back by a stage that may have changed it in place, or that may still (its maker
            # kept it): encoded now, and again after every later stage.
            stable.append(intact and not same)
    except Exception as exc:  # PydanticSerializationError: an object, or a field of the wrong type
        raise _BadOutput(f"item of {item.symbol!r} is not JSON-serialisable: {exc}") from exc
    return _Snap(tuple(parts), tuple(stable), setups, events, trades)


def _restore(snap: _Snap) -> WorkItem:
    """A fresh item from a snapshot."""
    return WorkItem.model_validate_json(snap.text)


def _extras(item: WorkItem, snap: _Snap) -> dict[str, Any]:
    """The item's extras as stored: JSON values only (a set is a list, NaN is null)."""
    if not item.extras:
        return {}
    extras: dict[str, Any] = from_json(snap.parts[_EXTRAS])
    return extras


def _completed(item: WorkItem, stage: str) -> WorkItem:
    return item.model_copy(update={"completed_stages": [*item.completed_stages, stage]})


def _as_optional(result: StageResult) -> StageResult:
    reason = f"optional stage {result.status.value}: {result.error or result.reason}"
    return result.model_copy(update={"reason": reason})


def _leaves_input_intact(stage: Stage | RunStage) -> bool:
    """The stage declares it never changes the item(s) it is handed, nor what it returns once returned."""
    return getattr(stage, "leaves_input_intact", False) is True


def _kind(obj: object) -> str:
    return "None" if obj is None else f"a {type(obj).__name__}"


@dataclass
class EngineStatus:
    run_id: str | None = None
    queue_depth: int = 0
    in_flight: int = 0
    total: int = 0
    done: dict[str, int] = field(default_factory=dict)
    stage_in_flight: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "queueDepth": self.queue_depth,
            "inFlight": self.in_flight,
            "total": self.total,
            "done": dict(self.done),
            "stageInFlight": dict(self.stage_in_flight),
        }


class LocalEngine:
    def __init__(
        self,
        stages: Sequence[Stage],
        services: Services,
        *,
        repository: Repository | None,
        resilience: ResilienceRegistry,
        metrics: MetricsSink | None = None,
        concurrency: int = 8,
        queue_size: int = 64,
        drain_timeout_s: float = 30.0,
        clock: Clock | None = None,
        seed: int | None = None,
        audit: bool = True,
        writer: GroupCommitWriter | None = None,
    ) -> None:
        self.stages = list(stages)
        self.services = services
        self.repository = repository
        self.resilience = resilience
        self.metrics: MetricsSink = metrics or NullMetrics()
        self.concurrency = concurrency
        self.queue_size = queue_size
        self.drain_timeout_s = drain_timeout_s
        self.clock = clock or SystemClock()
        self.rng = random.Random(seed)
        self.audit = audit and repository is not None
        # A caller-supplied writer is shared with the stages (Services.storage): one writer per run.
        self._writer = writer or (GroupCommitWriter(repository) if repository is not None else None)
        self.status = EngineStatus()
        self._cancel = asyncio.Event()
        self._interrupted = False
        self._stage_limits: dict[str, asyncio.Semaphore] = {
            s.name: asyncio.Semaphore(s.policy.concurrency) for s in self.stages if s.policy.concurrency
        }

    # ------------------------------------------------------------------ public API

    def cancel(self) -> None:
        """Stop taking new symbols; in-flight stages finish (drain) and the rest end ``cancelled``."""
        self._cancel.set()

    def interrupt(self) -> None:
        """Drain like :meth:`cancel`, but leave the run ``running``: the process is stopping (a service
        shut down), not the user cancelling, so the next start-up resumes the run."""
        self._interrupted = True
        self._cancel.set()

    @property
    def cancelling(self) -> bool:
        return self._cancel.is_set()

    async def run(
        self,
        run: Run,
        starts: Sequence[StartPoint],
        *,
        progress: ProgressSink | None = None,
        finished: Mapping[str, SymbolResult] | None = None,
        before_end: Callable[[list[SymbolResult]], Awaitable[None]] | None = None,
    ) -> tuple[Run, list[SymbolResult]]:
        """Run (or resume) ``run``: every start point ends in one terminal state.

        ``finished`` holds symbols that already ended in an earlier attempt of this run (resume); they
        are counted, not re-run. ``before_end`` gets the results once every symbol ended, before the
        run's own end is stored: what it writes is there when anyone sees the run ended.

        The pipeline is cut into segments at run stages (barriers): each segment runs per symbol on the
        worker pool, then its barrier runs once for every symbol that reached it, in ``run.symbols``
        order.
        """
        results: dict[str, SymbolResult] = dict(finished or {})
        self.status = EngineStatus(run_id=run.id, total=len(starts) + len(results))
        self.metrics.run_started()
        if progress:
            progress.started(len(starts) + len(results))
            for r in results.values():
                progress.symbol_done(r)
        await self._audit_run(run, "started")
        lives: dict[str, _Live] = {}

        def pulled() -> Iterator[_Live]:
            # Start points are taken lazily, as the bounded queue admits them (backpressure).
            for sp in starts:
                lv = lives[sp.item.symbol] = _Live.of(sp)
                yield lv

        await self._run_segments(run, pulled(), lives, results, progress)
        # Whatever did not end (cancelled before a worker took it, or waiting between segments) ends
        # `cancelled`; finished together so their writes share commits.
        rest = [lives.get(sp.item.symbol) or _Live.of(sp) for sp in starts if sp.item.symbol not in results]
        for r in await asyncio.gather(
            *(
                self._finish(run, lv, SymbolStatus.CANCELLED, "run cancelled" if lv.started else _NOT_STARTED)
                for lv in rest
            )
        ):
            results[r.symbol] = r
            if progress:
                progress.symbol_done(r)

        ordered = [results[s] for s in run.symbols if s in results]
        run.counts = _count(ordered)
        run.finished_at = utc_now()
        run.status = RunStatus.CANCELLED if self._cancel.is_set() else RunStatus.COMPLETED
        if self._interrupted and run.status is RunStatus.CANCELLED:
            run.status, run.finished_at = RunStatus.RUNNING, None  # resumable by the next start-up
        if self._writer is not None:
            await self._writer.aclose()
        if before_end is not None:
            await before_end(ordered)
        if self.repository is not None:
            await self.repository.update_run(run)
        await self._audit_run(run, "success" if run.status is RunStatus.COMPLETED else "skipped")
        if run.status is RunStatus.COMPLETED:
            self.metrics.run_completed()
        else:
            self.metrics.run_failed()
        return run, ordered

    async def _run_segments(
        self,
        run: Run,
        source: Iterator[_Live],
        lives: dict[str, _Live],
        results: dict[str, SymbolResult],
        progress: ProgressSink | None,
    ) -> None:
        barriers = [i for i, s in enumerate(self.stages) if is_run_stage(s)]
        order = {s: i for i, s in enumerate(run.symbols)}
        for k, end in enumerate([*barriers, len(self.stages)]):
            if self._cancel.is_set():
                return
            # A resumed symbol may already be past this segment (or this barrier): it just waits. In the
            # last segment it still goes through the pool: one killed after its last checkpoint but
            # before its result was written has no stage left, yet must still be finished.
            last = end == len(self.stages)

            def due(lv: _Live, end: int = end, last: bool = last) -> bool:
                return lv.next_stage < end or last

            todo: Iterable[_Live] = (
                (lv for lv in source if due(lv))
                if k == 0
                else [lv for lv in lives.values() if lv.item.symbol not in results and due(lv)]
            )
            await self._run_pool(run, todo, end, results, progress)
            if end == len(self.stages) or self._cancel.is_set():
                return
            arrived = sorted(
                (lv for lv in lives.values() if lv.item.symbol not in results and lv.next_stage == end),
                key=lambda lv: order.get(lv.item.symbol, len(order)),
            )
            if arrived:
                if self._writer is not None:
                    # Flush the segment's behind checkpoints: a barrier can run for seconds, and a crash
                    # meanwhile should not make the resume redo the whole segment's last stages.
                    await self._writer.write()
                await self._run_barrier(run, end, arrived, results, progress)

    # ------------------------------------------------------------------ flow control

    async def _run_pool(
        self,
        run: Run,
        todo: Iterable[_Live],
        end: int,
        results: dict[str, SymbolResult],
        progress: ProgressSink | None,
    ) -> None:
        """Take ``todo`` through stages ``[next_stage, end)`` on the worker pool (one segment)."""
        queue: asyncio.Queue[_Live | None] = asyncio.Queue(maxsize=self.queue_size)

        async def produce() -> None:
            for lv in todo:
                if self._cancel.is_set():
                    break
                await queue.put(lv)  # blocks while the queue is full: backpressure
                self._set_queue_depth(queue.qsize())
            for _ in range(self.concurrency):
                await queue.put(None)

        busy: set[asyncio.Task[None]] = set()

        async def work() -> None:
            me = asyncio.current_task()
            assert me is not None
            # Once cancelling, a worker that finished its symbol stops instead of waiting for more work:
            # the producer is gone, so an empty queue would keep the drain waiting its whole timeout.
            while not self._cancel.is_set():
                lv = await queue.get()
                self._set_queue_depth(queue.qsize())
                if lv is None or self._cancel.is_set():
                    return
                busy.add(me)  # no await between get() and here: a worker is idle or busy, never between
                try:
                    result = await self._process_symbol(run, lv, end)
                finally:
                    busy.discard(me)
                if result is not None:
                    results[result.symbol] = result
                    if progress:
                        progress.symbol_done(result)

        workers = [asyncio.create_task(work(), name=f"jax-worker-{i}") for i in range(self.concurrency)]
        producer = asyncio.create_task(produce(), name="jax-producer")
        try:
            await self._wait_or_drain(producer, workers, busy)
        finally:
            for t in (producer, *workers):
                # Never cancel a task twice: a second cancel lands while the first is still unwinding
                # (e.g. inside SQLAlchemy's shielded connection close) and can leave that close
                # waiting forever on a stopped driver thread, hanging the process at exit.
                if not t.done() and not t.cancelling():
                    t.cancel()
            await asyncio.gather(producer, *workers, return_exceptions=True)

    async def _wait_or_drain(
        self, producer: asyncio.Task[None], workers: list[asyncio.Task[None]], busy: set[asyncio.Task[None]]
    ) -> None:
        all_done: asyncio.Future[list[None]] = asyncio.ensure_future(asyncio.gather(producer, *workers))
        cancel_wait: asyncio.Future[Any] = asyncio.ensure_future(self._cancel.wait())
        try:
            waiters: list[asyncio.Future[Any]] = [all_done, cancel_wait]
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if all_done in done:
                all_done.result()  # surface engine bugs instead of hiding them
                return
            # Cancel requested: stop feeding, stop idle workers, and give busy ones the drain window to
            # finish their current stage (each then ends its symbol `cancelled` at the next stage boundary).
            producer.cancel()
            draining = [w for w in workers if w in busy]
            for w in workers:
                if w not in busy:
                    w.cancel()
            if draining:
                await asyncio.wait(draining, timeout=self.drain_timeout_s)
        finally:
            cancel_wait.cancel()
            if not all_done.done():
                all_done.cancel()
            with contextlib.suppress(BaseException):
                await all_done

    def _set_queue_depth(self, n: int) -> None:
        self.status.queue_depth = n
        self.metrics.set_queue_depth(n)

    def _set_in_flight(self, delta: int) -> None:
        self.status.in_flight += delta
        self.metrics.set_in_flight(self.status.in_flight)

    # ------------------------------------------------------------------ one symbol

    def _context(self, run: Run, stage: str, as_of: date) -> StageContext:
        """What a stage (per-symbol or run-level) may use besides its items."""
        return StageContext(
            run_id=run.id,
            correlation_id=run.correlation_id,
            as_of=as_of,
            services=self.services,
            params=run.params,
            stage=stage,
        )

    async def _process_symbol(self, run: Run, lv: _Live, end: int) -> SymbolResult | None:
        """Run ``lv`` up to stage ``end``: its final result, or None when it reached a barrier."""
        lv.started = True
        self._set_in_flight(+1)
        try:
            with bind_correlation_id(run.correlation_id), symbol_span(lv.item.symbol, run_id=run.id):
                for seq in range(lv.next_stage, end):
                    if self._cancel.is_set():
                        return await self._finish(run, lv, SymbolStatus.CANCELLED, "run cancelled")
                    stage: Stage = self.stages[seq]
                    result, out, snap = await self._run_stage(run, stage, lv.item, lv.snap)
                    lv.stages.append(result)
                    if out is not None and snap is not None:
                        # A stage that returned `degraded` did its work: keep its output, degrade the symbol.
                        lv.degraded = lv.degraded or result.status is StageStatus.DEGRADED
                        self._advance(run, lv, seq, result, out, snap)
                        continue
                    # failed / timed_out / short_circuited
                    if stage.policy.required:
                        error = f"{stage.name}: {result.error or result.reason or result.status.value}"
                        lv.item = _restore(lv.snap)  # the result reports the item as it was, not as mangled
                        # Checkpoint, dead letter and final result commit together: a crash between them
                        # would leave a dead letter for a symbol that a resume then completes.
                        return await self._finish(
                            run,
                            lv,
                            SymbolStatus.FAILED,
                            error,
                            extra_ops=self._failure_ops(run, lv, seq, result),
                        )
                    # Optional stage: record it as degraded and go on with the item as it was before it.
                    lv.stages[-1] = result = _as_optional(result)
                    lv.degraded = True
                    kept = _completed(_restore(lv.snap), stage.name)
                    self._advance(run, lv, seq, result, kept, _snapshot(kept))
                if end == len(self.stages):
                    status = SymbolStatus.DEGRADED if lv.degraded else SymbolStatus.SUCCEEDED
                    return await self._finish(run, lv, status, None)
                return None
        except Exception as exc:  # an engine-side failure (e.g. storage down) still ends the symbol
            error = f"engine: {type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                await self._dead_letter(run, lv, "engine", error, 1)
            return await self._finish(run, lv, SymbolStatus.FAILED, error, persist=False)
        finally:
            self._set_in_flight(-1)

    def _advance(
        self, run: Run, lv: _Live, seq: int, result: StageResult, item: WorkItem, snap: _Snap
    ) -> None:
        """``lv`` passed stage ``seq``: ``item`` (already marked completed) and its snapshot; checkpoint."""
        lv.item = item
        lv.snap = snap
        lv.next_stage = seq + 1
        self._checkpoint(run, lv, seq, result)

    def _failure_ops(self, run: Run, lv: _Live, seq: int, result: StageResult) -> list[WriteOp]:
        error = f"{result.stage}: {result.error or result.reason or result.status.value}"
        return [
            *self._checkpoint_ops(run, lv, seq, result),
            DeadLetterWrite(run.id, lv.item.symbol, result.stage, error, result.attempts, lv.snap.text),
        ]

    async def _run_stage(
        self, run: Run, stage: Stage, item: WorkItem, snap: _Snap
    ) -> tuple[StageResult, WorkItem | None, _Snap | None]:
        """One per-symbol stage under its policies: (result, output item marked completed and its
        snapshot, if it passed)."""
        ctx = self._context(run, stage.name, item.as_of)
        calls = 0
        intact = _leaves_input_intact(stage)

        def call() -> Awaitable[Any]:
            nonlocal calls
            calls += 1
            # A retry gets the item as it was before the stage, not what a failed attempt left of it.
            return stage.run(ctx, item if calls == 1 else _restore(snap))

        def check(out: Any) -> tuple[StageStatus, str | None, Any]:
            if not isinstance(out, StageOutput):
                raise _BadOutput(f"returned {_kind(out)}, not a StageOutput")
            given = out.item
            if not isinstance(given, WorkItem):
                raise _BadOutput(f"returned an item that is {_kind(given)}, not a WorkItem")
            if given.symbol != item.symbol or given.run_id != item.run_id:
                raise _BadOutput(
                    f"returned the item of {given.symbol!r} in run {given.run_id!r}, "
                    f"not {item.symbol!r} in {item.run_id!r}"
                )
            done = _completed(given, stage.name)
            # The item this attempt was handed: the live one on the first call, a fresh copy after.
            base = (item, snap) if calls == 1 else None
            return _STATUS[out.status], out.reason, (done, _snapshot(done, base, intact=intact))

        result, payload = await self._call(run, stage, ctx, call, check, symbol=item.symbol)
        if payload is None:
            return result, None, None
        out_item, out_snap = payload
        return result, out_item, out_snap

    async def _call(
        self,
        run: Run,
        stage: Stage | RunStage,
        ctx: StageContext,
        call: Callable[[], Awaitable[Any]],
        check: Callable[[Any], tuple[StageStatus, str | None, Any]],
        *,
        symbol: str | None,
    ) -> tuple[StageResult, Any]:
        """Call a stage with its policies applied; (result, ``check``'s payload or None on failure).

        Around the call, outermost first: per-stage concurrency, then per attempt: circuit breaker,
        rate limiter, bulkhead, timeout; retries with backoff around the attempts. Whatever the stage
        raises — any ``BaseException`` — becomes this stage's result; only the engine's own
        cancellation of the task passes through.
        """
        policy = stage.policy
        started_at = utc_now()
        t0 = time.perf_counter()
        breaker = self.resilience.breaker(policy.breaker) if policy.breaker else None
        limiter = self.resilience.limiter(policy.rate_limit) if policy.rate_limit else None
        bulkhead = self.resilience.bulkhead(policy.bulkhead) if policy.bulkhead else None
        attempts = 0

        async def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            ctx.attempt = attempts
            permit = breaker.acquire() if breaker is not None else None  # raises while open
            if limiter is not None:
                try:
                    waited = await limiter.acquire()
                except BaseException:
                    if breaker is not None:
                        breaker.release(permit)  # cancelled while queued: no call made, trial permit back
                    raise
                if waited:
                    self.metrics.observe_rate_limit_wait(policy.rate_limit or "", waited)
            call_start = self.clock.monotonic()
            try:
                async with _maybe(bulkhead):
                    # The slow-call timer starts here: waiting for a bulkhead slot (or the rate limiter)
                    # is not the dependency being slow.
                    call_start = self.clock.monotonic()
                    try:
                        if policy.timeout_s is None:
                            out = await call()
                        else:
                            async with asyncio.timeout(policy.timeout_s):
                                out = await call()
                    except (Exception, asyncio.CancelledError):
                        raise
                    except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit, custom
                        raise _StageCrashed(exc) from exc
            except StageSkipped:
                if breaker is not None:
                    breaker.on_success(self.clock.monotonic() - call_start, permit)
                raise
            except Exception as exc:
                if breaker is not None:
                    breaker.on_error(self.clock.monotonic() - call_start, exc, permit)
                raise
            except BaseException:
                if breaker is not None:
                    breaker.release(permit)  # cancelled: neither a success nor a failure
                raise
            if breaker is not None:
                breaker.on_success(self.clock.monotonic() - call_start, permit)
            return out

        status: StageStatus
        error: str | None = None
        reason: str | None = None
        payload: Any = None
        limit = self._stage_limits.get(stage.name)
        with stage_span(stage.name, run_id=run.id, symbol=symbol) as span:
            async with _maybe(limit):
                # Counted once it holds the stage's slot: symbols queued for the slot are not in the stage.
                self.status.stage_in_flight[stage.name] = self.status.stage_in_flight.get(stage.name, 0) + 1
                try:
                    out, attempts = await call_with_retry(
                        attempt, policy.retry, clock=self.clock, rng=self.rng
                    )
                    status, reason, payload = check(out)
                except _BadOutput as exc:
                    status, error = StageStatus.FAILED, f"bad output: {exc}"
                except StageSkipped as exc:
                    status, reason = StageStatus.SKIPPED, str(exc) or "skipped"
                except CallNotPermittedError as exc:
                    status, reason = StageStatus.SHORT_CIRCUITED, str(exc)
                except TimeoutError as exc:
                    status = StageStatus.TIMED_OUT
                    error = str(exc) or f"exceeded its {policy.timeout_s:g}s timeout"
                    reason = f"timed out after {policy.timeout_s:g}s"
                except asyncio.CancelledError:
                    if (task := asyncio.current_task()) is not None and task.cancelling():
                        raise  # the engine is cancelling this symbol (drain timeout or abort)
                    # Raised inside the stage (it awaited something another task cancelled): a failure of
                    # this symbol, not a cancellation of the run.
                    status, error = StageStatus.FAILED, "CancelledError: cancelled inside the stage"
                except _StageCrashed as exc:
                    status, error = StageStatus.FAILED, str(exc)
                except Exception as exc:
                    status, error = StageStatus.FAILED, f"{type(exc).__name__}: {exc}"
                finally:
                    self.status.stage_in_flight[stage.name] -= 1
                attempts = max(attempts, 1)
            set_span_status(span, status.value)
        duration = time.perf_counter() - t0
        self.metrics.observe_stage(stage.name, status.value, duration)
        # model_construct: every field is produced right here with its proper type, and validating
        # it again costs ~2 µs per stage, a tenth of the engine's whole per-stage overhead.
        result = StageResult.model_construct(
            stage=stage.name,
            status=status,
            started_at=started_at,
            duration_ms=duration * 1000.0,
            attempts=attempts,
            error=error,
            reason=reason,
        )
        return result, (payload if status in _PASSED else None)

    # ------------------------------------------------------------------ run stages (barriers)

    async def _run_barrier(
        self,
        run: Run,
        seq: int,
        arrived: list[_Live],
        results: dict[str, SymbolResult],
        progress: ProgressSink | None,
    ) -> None:
        """Run the run stage ``seq`` once over ``arrived`` (in run order) and apply its outcome.

        Every symbol's checkpoint, audit row and (for those it fails) dead letter and result go out
        in ONE write: after a crash either every symbol passed the barrier or none did.
        """
        stage = cast(RunStage, self.stages[seq])
        symbols = [lv.item.symbol for lv in arrived]
        given = set(symbols)
        ctx = self._context(run, stage.name, run.as_of or arrived[0].item.as_of)
        calls = 0
        intact = _leaves_input_intact(stage)
        handed = {lv.item.symbol: (lv.item, lv.snap) for lv in arrived}

        def call() -> Awaitable[Any]:
            nonlocal calls
            calls += 1
            items = [lv.item if calls == 1 else _restore(lv.snap) for lv in arrived]
            return stage.run_all(ctx, items)

        def check(out: Any) -> tuple[StageStatus, str | None, Any]:
            if not isinstance(out, RunStageOutput):
                raise _BadOutput(f"returned {_kind(out)}, not a RunStageOutput")
            by_symbol: dict[str, tuple[WorkItem, _Snap]] = {}
            for it in out.items:
                if not isinstance(it, WorkItem):
                    raise _BadOutput(f"returned an item that is {_kind(it)}, not a WorkItem")
                if it.symbol not in given:
                    raise _BadOutput(f"returned an item for {it.symbol!r}, which it was not given")
                if it.symbol in by_symbol:
                    raise _BadOutput(f"returned {it.symbol!r} twice")
                if it.run_id != run.id:
                    raise _BadOutput(f"returned {it.symbol!r} of run {it.run_id!r}, not {run.id!r}")
                done = _completed(it, stage.name)
                base = handed[it.symbol] if calls == 1 else None
                by_symbol[it.symbol] = (done, _snapshot(done, base, intact=intact))
            unknown = sorted(set(out.failed) - given)
            if unknown:
                raise _BadOutput(f"failed symbol(s) it was not given: {', '.join(unknown)}")
            missing = [s for s in symbols if s not in by_symbol and s not in out.failed]
            if missing:
                raise _BadOutput(f"returned no item for {', '.join(missing)}")
            return _STATUS[out.status], out.reason, (by_symbol, dict(out.failed))

        with bind_correlation_id(run.correlation_id):
            result, payload = await self._call(run, stage, ctx, call, check, symbol=None)
        outputs: dict[str, tuple[WorkItem, _Snap]] = payload[0] if payload is not None else {}
        failed: dict[str, str] = payload[1] if payload is not None else {}
        ops: list[WriteOp] = []
        ended: list[tuple[_Live, SymbolResult]] = []
        for lv in arrived:
            sym = lv.item.symbol
            res = result
            if payload is not None and sym not in failed:
                out_item, out_snap = outputs[sym]
                lv.degraded = lv.degraded or res.status is StageStatus.DEGRADED
                lv.item, lv.snap = out_item, out_snap
            else:
                if payload is not None:  # the stage ran but failed this one symbol
                    res = res.model_copy(update={"status": StageStatus.FAILED, "error": failed[sym]})
                if stage.policy.required:
                    lv.item = _restore(lv.snap)
                    lv.stages.append(res)
                    error = f"{stage.name}: {res.error or res.reason or res.status.value}"
                    sr = self._symbol_result(run, lv, SymbolStatus.FAILED, error)
                    ops += [*self._failure_ops(run, lv, seq, res), *self._finish_ops(run, lv, sr)]
                    ended.append((lv, sr))
                    continue
                res = _as_optional(res)
                lv.degraded = True
                lv.item = _completed(_restore(lv.snap), stage.name)
                lv.snap = _snapshot(lv.item)
            lv.stages.append(res)
            lv.next_stage = seq + 1
            ops += self._checkpoint_ops(run, lv, seq, res)
        try:
            if self._writer is not None:
                await self._writer.write(*ops, keys=[(run.id, s) for s in symbols])
        except Exception as exc:  # storage failed: nobody passed the barrier
            error = f"engine: {type(exc).__name__}: {exc}"
            for lv in arrived:
                with contextlib.suppress(Exception):
                    await self._dead_letter(run, lv, "engine", error, 1)
                r = await self._finish(run, lv, SymbolStatus.FAILED, error, persist=False)
                results[r.symbol] = r
                if progress:
                    progress.symbol_done(r)
            return
        for _, sr in ended:
            self._count_done(sr)
            results[sr.symbol] = sr
            if progress:
                progress.symbol_done(sr)

    # ------------------------------------------------------------------ persistence

    def _checkpoint(self, run: Run, lv: _Live, seq: int, result: StageResult) -> None:
        if self._writer is not None:
            # The checkpoint and its audit row commit together: a crash cannot keep one and lose the other.
            # Write-behind: the symbol goes on without waiting for the commit. A checkpoint lost in a crash
            # only means its stage is redone on resume; the symbol's terminal write claims (or waits for)
            # it and fails the symbol if it could not be stored.
            key = (run.id, lv.item.symbol)
            self._writer.write_behind(key, *self._checkpoint_ops(run, lv, seq, result))

    def _checkpoint_ops(self, run: Run, lv: _Live, seq: int, result: StageResult) -> list[WriteOp]:
        # JSON text of the item's snapshot: nothing a stage does later can change a queued write.
        symbol = lv.item.symbol
        ops: list[WriteOp] = [CheckpointWrite(run.id, symbol, seq, result, lv.checkpoint_item(seq))]
        if self.audit:
            ops.append(
                AuditRowWrite.of(
                    id=f"au_{run.id}_{symbol}_{result.stage}",
                    idempotency_key=f"{run.id}/{symbol}/stage/{result.stage}",
                    correlation_id=run.correlation_id,
                    run_id=run.id,
                    symbol=symbol,
                    action=f"stage.{result.stage}",
                    outcome=_AUDIT_OUTCOME[result.status],
                    payload={
                        "symbol": symbol,
                        "status": result.status.value,
                        "attempts": result.attempts,
                        "durationMs": round(result.duration_ms, 3),
                        "reason": result.reason,
                    },
                    error=result.error,
                )
            )
        return ops

    async def _dead_letter(self, run: Run, lv: _Live, stage: str, error: str, attempts: int) -> None:
        if self._writer is not None:
            await self._writer.write(
                DeadLetterWrite(run.id, lv.item.symbol, stage, error, attempts, lv.snap.text)
            )

    def _symbol_result(self, run: Run, lv: _Live, status: SymbolStatus, error: str | None) -> SymbolResult:
        item = lv.item
        return SymbolResult(
            run_id=run.id,
            symbol=item.symbol,
            status=status,
            stages=lv.stages,
            events=item.events,
            trades=item.trades,
            error=error,
            data_issues=item.data_issues,
            # From the snapshot: JSON values only (a set is a list, NaN is null), as stored.
            extras=_extras(item, lv.snap),
        )

    def _finish_ops(self, run: Run, lv: _Live, result: SymbolResult) -> list[WriteOp]:
        item, status = lv.item, result.status
        ops: list[WriteOp] = [SymbolResultWrite(result)]
        if self.audit:
            ops.append(
                AuditRowWrite.of(
                    id=f"au_{run.id}_{item.symbol}_done_{status.value}",
                    # Keyed by outcome too: a symbol cancelled and later resumed records both.
                    idempotency_key=f"{run.id}/{item.symbol}/finished/{status.value}",
                    correlation_id=run.correlation_id,
                    run_id=run.id,
                    symbol=item.symbol,
                    action="symbol.finished",
                    outcome="success"
                    if status in (SymbolStatus.SUCCEEDED, SymbolStatus.DEGRADED)
                    else ("skipped" if status is SymbolStatus.CANCELLED else "error"),
                    payload={
                        "symbol": item.symbol,
                        "status": status.value,
                        "events": len(item.events),
                        "trades": len(item.trades),
                        "allowed": sum(1 for t in item.trades if t.risk.allowed),
                    },
                    error=result.error,
                )
            )
        return ops

    def _count_done(self, result: SymbolResult) -> None:
        self.status.done[result.status.value] = self.status.done.get(result.status.value, 0) + 1
        self.metrics.symbol_finished(result.status.value)

    async def _finish(
        self,
        run: Run,
        lv: _Live,
        status: SymbolStatus,
        error: str | None,
        *,
        persist: bool = True,
        extra_ops: Sequence[WriteOp] = (),
    ) -> SymbolResult:
        result = self._symbol_result(run, lv, status, error)
        if persist and self._writer is not None:
            ops = [*extra_ops, *self._finish_ops(run, lv, result)]
            try:
                await self._writer.write(*ops, keys=((run.id, lv.item.symbol),))
            except Exception:
                # A failed symbol's final bookkeeping is best effort once its dead letter is stored; when
                # the dead letter rides in this write, the failure must surface (the caller then parks it
                # alone and finishes the symbol once more, without persisting).
                if status is not SymbolStatus.FAILED or extra_ops:
                    raise
        # Counted only once the symbol really ended here: a write that raised above is finished (and
        # counted) by the caller, so no symbol is counted twice.
        self._count_done(result)
        return result

    async def _audit_run(self, run: Run, outcome: AuditOutcome) -> None:
        if not self.audit or self.repository is None:
            return
        await self.repository.record_audit(
            AuditEvent(
                id=f"au_{run.id}_run_{outcome}",
                correlation_id=run.correlation_id,
                action="run." + ("started" if outcome == "started" else "finished"),
                outcome=outcome,
                payload={
                    "runId": run.id,
                    "symbols": len(run.symbols),
                    "counts": run.counts,
                    "status": run.status,
                },
            ),
            idempotency_key=f"{run.id}/run/{outcome}",
            run_id=run.id,
        )


def _count(results: Sequence[SymbolResult]) -> dict[str, int]:
    counts = {
        s.value: 0
        for s in (SymbolStatus.SUCCEEDED, SymbolStatus.DEGRADED, SymbolStatus.FAILED, SymbolStatus.CANCELLED)
    }
    for r in results:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    counts["symbols"] = len(results)
    counts["events"] = sum(len(r.events) for r in results)
    counts["setups"] = sum(len(r.trades) for r in results)
    counts["allowed"] = sum(1 for r in results for t in r.trades if t.risk.allowed)
    return counts


class _Null:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NULL = _Null()


def _maybe(cm: Any) -> Any:
    """``cm`` as an async context manager, or a shared no-op one (kept allocation-free on the hot path)."""
    return _NULL if cm is None else cm


def fresh_starts(run: Run, symbols: Sequence[str], as_of: date, lookback: int) -> list[StartPoint]:
    return [
        StartPoint(
            item=WorkItem(
                run_id=run.id, symbol=s, as_of=as_of, lookback=lookback, correlation_id=run.correlation_id
            )
        )
        for s in symbols
    ]


__all__ = ["EngineStatus", "LocalEngine", "ProgressSink", "StartPoint", "fresh_starts", "tune_gc_for_runs"]
