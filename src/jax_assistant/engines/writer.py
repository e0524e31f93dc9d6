"""Group commit for the engine's bookkeeping writes (checkpoints, audit rows, results, dead letters).

Each symbol still awaits its own checkpoint before its next stage starts, so durability is exactly
that of one-transaction-per-write. But while one batch is being committed, the writes of every
other symbol in flight queue up and go out together in the next transaction: with N symbols in
flight, roughly N times fewer commits. On SQLite a commit costs ~2 ms of mostly fixed overhead, so
without this the bookkeeping, not the stages, would set the pace of a run.

It is also the run's ``RunStorage`` (``Services.storage``): the persist stage's records go through the
same queue, so there is one writer per run and no second stream of transactions competing for SQLite's
write lock. A symbol whose records went out that way has its final result written without them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from jax_assistant.domain import Event, TradeRecord
from jax_assistant.storage.repository import RecordsWrite, Repository, SymbolResultWrite, WriteOp

_Recorded = tuple[list[Event], list[TradeRecord]]
# Loop passes the writer waits before taking a batch (see _run); measured by bench/run_command.py.
_LINGER_PASSES = 1


class GroupCommitWriter:
    def __init__(self, repository: Repository, *, max_batch_ops: int = 2000) -> None:
        self.repository = repository
        self.max_batch_ops = max_batch_ops
        self._pending: list[tuple[Sequence[WriteOp], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # commits made (for tests and benchmarks)
        # (run, symbol) -> the events and trades already stored through ``save_records``.
        self._recorded: dict[tuple[str, str], _Recorded] = {}

    async def save_records(
        self, run_id: str, symbol: str, events: Sequence[Event], trades: Sequence[TradeRecord]
    ) -> None:
        """``RunStorage``: store a symbol's events, setups and this run's decisions (group-committed)."""
        await self.write(RecordsWrite(run_id, list(events), list(trades)))
        self._recorded[(run_id, symbol)] = (list(events), list(trades))

    def _without_stored_records(self, ops: Sequence[WriteOp]) -> Sequence[WriteOp]:
        if not self._recorded:
            return ops
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

    async def write(self, *ops: WriteOp) -> None:
        """Durably write ``ops`` (atomically together) and return once they are committed."""
        ops = tuple(self._without_stored_records(ops))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="jax-group-commit")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((ops, future))
        self._wake.set()
        await future

    async def aclose(self) -> None:
        """Finish what is queued, then stop the writer task."""
        if self._task is not None and not self._task.done():
            await self.write()  # batches are FIFO: an empty write returns once all earlier ones are in
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
                await self._commit(self._take())

    def _take(self) -> list[tuple[Sequence[WriteOp], asyncio.Future[None]]]:
        batch: list[tuple[Sequence[WriteOp], asyncio.Future[None]]] = []
        size = 0
        while self._pending and (not batch or size + len(self._pending[0][0]) <= self.max_batch_ops):
            entry = self._pending.pop(0)
            batch.append(entry)
            size += len(entry[0])
        return batch

    async def _commit(self, batch: list[tuple[Sequence[WriteOp], asyncio.Future[None]]]) -> None:
        try:
            await self.repository.write_batch([op for ops, _ in batch for op in ops])
            self.batches += 1
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            # One bad write must not fail its neighbours: retry each caller's writes on their own so
            # the error reaches only the symbol it belongs to.
            for ops, future in batch:
                try:
                    await self.repository.write_batch(ops)
                    self.batches += 1
                except Exception as own:
                    _settle(future, own)
                else:
                    _settle(future, None)
            return
        for _, future in batch:
            _settle(future, None)


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():  # its caller was cancelled meanwhile
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
