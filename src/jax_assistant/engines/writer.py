"""Group commit for the engine's bookkeeping writes (checkpoints, audit rows, results, dead letters).

While one batch is being committed, the writes of every symbol in flight queue up and go out together
in the next transaction: with N symbols in flight, roughly N times fewer commits. On SQLite a commit
costs ~2 ms of mostly fixed overhead, so without this the bookkeeping, not the stages, would set the
pace of a run.

Two kinds of write:

* ``write``: durable when it returns (a symbol's final result, a barrier's checkpoints, records).
* ``write_behind``: queued, not awaited (a stage's checkpoint and audit row). A checkpoint lost in a
  crash only means a deterministic stage is redone on resume, so a symbol need not wait a commit
  between stages. A behind write is tied to a key (the symbol): the key's next ``write`` takes the
  key's behind writes that are still queued into its own atomic write, waits for those already being
  committed, and raises if any of them failed. So a symbol never ends ``succeeded`` while one of its
  checkpoints failed to store, and its behind writes always commit no later than its result.

It is also the run's ``RunStorage`` (``Services.storage``): the persist stage's records go through the
same queue, so there is one writer per run and no second stream of transactions competing for SQLite's
write lock. A symbol whose records went out that way has its final result written without them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

from jax_assistant.domain import Event, TradeRecord
from jax_assistant.storage.repository import RecordsWrite, Repository, SymbolResultWrite, WriteOp

_Recorded = tuple[list[Event], list[TradeRecord]]
# Loop passes the writer waits before taking a batch (see _run); measured by bench/run_command.py.
_LINGER_PASSES = 1
# While only behind writes are queued, the writer waits for an awaited write, this many queued ops or
# this age of the oldest one before committing: behind writes then share commits with the next awaited
# write instead of each taking one (a commit also costs the loop thread, in the driver hand-off). The
# age bound keeps a crash from losing more than ~this much checkpointed work.
_BEHIND_BATCH_OPS = 1000
_BEHIND_MAX_AGE_S = 0.05


@dataclass(eq=False, slots=True)
class _Entry:
    """One caller's writes (atomic together) and the futures settled with their commit."""

    ops: list[WriteOp]
    future: asyncio.Future[None]
    # Futures of behind writes merged into this entry: they share its outcome.
    merged: list[asyncio.Future[None]] = field(default_factory=list)
    behind: bool = False  # written behind: nobody awaits it
    taken: bool = False  # in a batch being committed (or committed)
    claimed: bool = False  # merged into a later write while queued: the batch skips it


def _retrieve(future: asyncio.Future[None]) -> None:
    # A behind write's error is raised by its key's next write; nobody else awaits it, so mark it
    # retrieved (asyncio would otherwise log "exception was never retrieved").
    if not future.cancelled():
        future.exception()


class GroupCommitWriter:
    def __init__(self, repository: Repository, *, max_batch_ops: int = 2000) -> None:
        self.repository = repository
        self.max_batch_ops = max_batch_ops
        self._pending: list[_Entry] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # commits made (for tests and benchmarks)
        # (run, symbol) -> the events and trades already stored through ``save_records``.
        self._recorded: dict[tuple[str, str], _Recorded] = {}
        # key -> its behind writes not yet claimed by one of its own writes.
        self._behind: dict[Hashable, list[_Entry]] = {}
        self._awaited = 0  # awaited entries queued (not yet taken)
        self._behind_ops = 0  # ops of behind entries queued (not yet taken)
        self._urgent = asyncio.Event()  # set when the queue should be committed without lingering

    async def save_records(
        self, run_id: str, symbol: str, events: Sequence[Event], trades: Sequence[TradeRecord]
    ) -> None:
        """``RunStorage``: store a symbol's events, setups and this run's decisions (group-committed)."""
        await self.write(RecordsWrite(run_id, list(events), list(trades)), keys=((run_id, symbol),))
        self._recorded[(run_id, symbol)] = (list(events), list(trades))

    def _without_stored_records(self, ops: Sequence[WriteOp]) -> list[WriteOp]:
        if not self._recorded:
            return list(ops)
        out: list[WriteOp] = []
        for op in ops:
            if isinstance(op, SymbolResultWrite) and op.records:
                result = op.result
                stored = self._recorded.pop((result.run_id, result.symbol), None)
                # Only when nothing changed since: a later stage may have added events or setups.
                if stored is not None and stored == (result.events, result.trades):
                    op = SymbolResultWrite(result, records=False)
            out.append(op)
        return out

    def write_behind(self, key: Hashable, *ops: WriteOp) -> None:
        """Queue ``ops`` (atomically together) without waiting; ``key``'s next ``write`` settles them.

        While ``key``'s last behind write is still queued, ``ops`` join it (the two then commit
        atomically together): a symbol runs several stages within one commit window, and an entry
        and a future per stage was most of the writer's own cost.
        """
        own = self._without_stored_records(ops)
        queued = self._behind.get(key)
        if queued and not (last := queued[-1]).taken and not last.claimed and self._task is not None:
            last.ops.extend(own)
        else:
            entry = _Entry(own, asyncio.get_running_loop().create_future())
            entry.future.add_done_callback(_retrieve)
            entry.behind = True
            self._behind.setdefault(key, []).append(entry)
            self._enqueue(entry)
        self._behind_ops += len(own)
        if self._behind_ops >= _BEHIND_BATCH_OPS:
            self._urgent.set()

    async def write(self, *ops: WriteOp, keys: Iterable[Hashable] = ()) -> None:
        """Durably write ``ops`` (atomically together) and return once they are committed.

        The behind writes of ``keys`` commit first or within this write; if one of them failed, this
        raises its error and writes nothing.
        """
        own = self._without_stored_records(ops)
        claimed: list[_Entry] = []
        for key in keys:
            claimed.extend(self._behind.pop(key, ()))
        merged_ops: list[WriteOp] = []
        merged: list[_Entry] = []
        for entry in claimed:  # in queue order
            if entry.taken:
                await entry.future  # being committed (or done): raises if it failed
            else:
                # Still queued: it leaves the queue (_take skips it) and goes out inside this write.
                entry.claimed = True
                self._behind_ops -= len(entry.ops)
                merged.append(entry)
                merged_ops.extend(entry.ops)
        entry = _Entry([*merged_ops, *own], asyncio.get_running_loop().create_future())
        entry.merged = [e.future for e in merged]
        self._awaited += 1
        self._urgent.set()
        self._enqueue(entry)
        await entry.future

    def _enqueue(self, entry: _Entry) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="jax-group-commit")
        self._pending.append(entry)
        self._wake.set()

    async def aclose(self) -> None:
        """Finish what is queued (behind writes too), then stop the writer task."""
        if self._task is not None and not self._task.done():
            await self.write()  # batches are FIFO: an empty write returns once all earlier ones are in
        self._behind.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                # One loop pass before taking: symbols whose stage just finished get to queue their
                # writes too, so they share this commit instead of each paying for one of their own.
                for _ in range(_LINGER_PASSES):
                    await asyncio.sleep(0)
                if not self._awaited and self._behind_ops < _BEHIND_BATCH_OPS:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_BEHIND_MAX_AGE_S):
                            await self._urgent.wait()
                self._urgent.clear()
                batch = self._take()
                if batch:
                    await self._commit(batch)

    def _take(self) -> list[_Entry]:
        batch: list[_Entry] = []
        size, n = 0, 0
        for entry in self._pending:
            if batch and size + len(entry.ops) > self.max_batch_ops:
                break
            n += 1
            if entry.claimed:
                continue
            entry.taken = True
            if entry.behind:
                self._behind_ops -= len(entry.ops)
            else:
                self._awaited -= 1
            batch.append(entry)
            size += len(entry.ops)
        del self._pending[:n]
        return batch

    async def _commit(self, batch: list[_Entry]) -> None:
        try:
            await self.repository.write_batch([op for entry in batch for op in entry.ops])
            self.batches += 1
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            # One bad write must not fail its neighbours: retry each caller's writes on their own so
            # the error reaches only the symbol it belongs to.
            for entry in batch:
                try:
                    await self.repository.write_batch(entry.ops)
                    self.batches += 1
                except Exception as own:
                    _settle(entry, own)
                else:
                    _settle(entry, None)
            return
        for entry in batch:
            _settle(entry, None)


def _settle(entry: _Entry, exc: BaseException | None) -> None:
    for future in (entry.future, *entry.merged):
        if future.done():  # its caller was cancelled meanwhile
            continue
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)
