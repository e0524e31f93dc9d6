"""An in-process vector index of one memory bank (the embedded backend's semantic arm).

The bank's vectors live in one float32 matrix (rows L2-normalised by the model, so cosine is a dot
product) next to the few columns the recall filters look at (symbol, type, ts, tags, invalidation), as
numpy arrays. A recall is one matrix-vector product over the rows that pass the filters, masks built in
numpy, and an ``argpartition`` for the top k: no database read, no blob decoding per query. Rows are
slots appended in place (capacity doubles), removed by clearing their slot, compacted when half are dead.

Exactness: brute force scores every candidate, so the result is what a scan would return. Ties (equal
scores, e.g. two memories with the same text) are broken by the smaller ``seq``, whatever the slot order.
Keeping the index in step with the database is the backend's job (``memory/embedded.py``: the bank's
``revision`` says when it moved).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Below this share of live rows passing the filters, gathering the candidate rows (a copy) is cheaper
# than scoring every row and masking the rest.
_GATHER_SHARE = 0.25
G = TypeVar("G", bound=np.generic)
F = TypeVar("F", bound=Callable[..., Any])


def micros(ts: datetime) -> int:
    """``ts`` as integer microseconds since the epoch (exact: the database keeps microseconds)."""
    aware = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    delta = aware - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class VectorRow:
    """What the index keeps of one memory: its key, the filtered-on columns and its vector."""

    seq: int
    id: str
    content_hash: str
    ts: datetime
    type: str
    symbol: str | None
    tags: Sequence[str]
    invalidated: bool
    vector: npt.NDArray[np.float32]


@dataclass(frozen=True)
class VectorFilter:
    """The recall filters, with the same meaning as the SQL ones (``EmbeddedBackend._filters``)."""

    symbol: str | None = None
    types: Sequence[str] = ()
    from_: datetime | None = None
    to: datetime | None = None
    tags: Sequence[str] = ()


def _locked(method: F) -> F:
    @functools.wraps(method)
    def run(self: BankVectors, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(F, run)


class BankVectors:
    """The vectors and filter columns of one bank, as of the bank ``revision``."""

    def __init__(self, dim: int, *, revision: int = -1, model: str | None = None) -> None:
        self.dim = dim
        self.revision = revision
        self.model = model
        self._size = 0  # slots used (live or dead)
        self._dead = 0
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._seq = np.zeros(0, dtype=np.int64)
        self._present = np.zeros(0, dtype=bool)  # the slot holds a memory (not removed)
        self._valid = np.zeros(0, dtype=bool)  # ... that is not invalidated
        self._ts = np.zeros(0, dtype=np.int64)
        self._symbol = np.zeros(0, dtype=np.int32)  # code in _codes, -1 for no symbol
        self._type = np.zeros(0, dtype=np.int32)
        self._codes: dict[str, int] = {}
        self._tag_slots: dict[str, list[int]] = {}
        self._slot_of: dict[int, int] = {}
        self._seq_of_id: dict[str, int] = {}
        self._id_of_slot: list[str] = []
        self._hash_of_slot: list[str] = []
        self._slot_tags: list[tuple[str, ...]] = []
        # Searches may run in a worker thread while the event loop applies a write: one at a time.
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return self._size - self._dead

    @_locked
    def seqs(self) -> set[int]:
        return set(self._slot_of)

    @_locked
    def hashes(self) -> dict[int, str]:
        """seq -> content hash of every memory held (a seq can come back with other content: SQLite
        reuses the highest rowid after a delete)."""
        return {seq: self._hash_of_slot[slot] for seq, slot in self._slot_of.items()}

    @_locked
    def invalidated(self) -> set[int]:
        """The seqs of the index's invalidated memories."""
        return {seq for seq, slot in self._slot_of.items() if not self._valid[slot]}

    def _code(self, value: str) -> int:
        return self._codes.setdefault(value, len(self._codes))

    def _grow(self, needed: int) -> None:
        capacity = self._matrix.shape[0]
        if needed <= capacity:
            return
        new_capacity = max(needed, 2 * capacity, 1024)

        self._matrix = _grown(self._matrix, new_capacity, self._size)
        self._seq = _grown(self._seq, new_capacity, self._size)
        self._present = _grown(self._present, new_capacity, self._size)
        self._valid = _grown(self._valid, new_capacity, self._size)
        self._ts = _grown(self._ts, new_capacity, self._size)
        self._symbol = _grown(self._symbol, new_capacity, self._size)
        self._type = _grown(self._type, new_capacity, self._size)

    @_locked
    def add(self, rows: Sequence[VectorRow]) -> None:
        """Add memories. A seq already held with the same content only takes the row's invalidation;
        otherwise the row replaces what is held under its seq and under its id (a re-retained, changed
        document gets a new seq, or on SQLite possibly the same one back)."""
        fresh: list[VectorRow] = []
        for row in rows:
            slot = self._slot_of.get(row.seq)
            if slot is not None and self._hash_of_slot[slot] == row.content_hash:
                self._valid[slot] = not row.invalidated
            else:
                fresh.append(row)
        rows = fresh
        self.remove([r.seq for r in rows])
        self.remove([old for r in rows if (old := self._seq_of_id.get(r.id)) is not None])
        if not rows:
            return
        vectors = np.stack([r.vector for r in rows])
        if vectors.shape != (len(rows), self.dim):
            raise ValueError(f"vectors of shape {vectors.shape[1:]}, not ({self.dim},)")
        start, end = self._size, self._size + len(rows)
        self._grow(end)
        # Column-wise assignments: per-row numpy writes cost ~1 s on a 100k-memory first load.
        self._matrix[start:end] = vectors
        self._seq[start:end] = [r.seq for r in rows]
        self._present[start:end] = True
        self._valid[start:end] = [not r.invalidated for r in rows]
        self._ts[start:end] = [micros(r.ts) for r in rows]
        code = self._code
        self._symbol[start:end] = [code(r.symbol) if r.symbol is not None else -1 for r in rows]
        self._type[start:end] = [code(r.type) for r in rows]
        self._size = end
        slots = range(start, end)
        self._slot_of.update(zip((r.seq for r in rows), slots, strict=True))
        self._seq_of_id.update((r.id, r.seq) for r in rows)
        self._id_of_slot.extend(r.id for r in rows)
        self._hash_of_slot.extend(r.content_hash for r in rows)
        tag_sets = [tuple(dict.fromkeys(r.tags)) if r.tags else () for r in rows]
        self._slot_tags.extend(tag_sets)
        for slot, tags in zip(slots, tag_sets, strict=True):
            for tag in tags:
                self._tag_slots.setdefault(tag, []).append(slot)

    @_locked
    def remove(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            slot = self._slot_of.pop(seq, None)
            if slot is None:
                continue
            self._present[slot] = False
            self._valid[slot] = False
            memory_id = self._id_of_slot[slot]
            if self._seq_of_id.get(memory_id) == seq:
                del self._seq_of_id[memory_id]
            self._dead += 1
        if self._dead > max(1024, self._size // 2):
            self._compact()

    @_locked
    def set_invalidated(self, seqs: Iterable[int], invalidated: bool) -> None:
        for seq in seqs:
            slot = self._slot_of.get(seq)
            if slot is not None:
                self._valid[slot] = not invalidated

    @_locked
    def set_invalidated_ids(self, ids: Iterable[str], invalidated: bool) -> None:
        self.set_invalidated((s for i in ids if (s := self._seq_of_id.get(i)) is not None), invalidated)

    def _compact(self) -> None:
        keep = np.flatnonzero(self._present[: self._size])
        size = int(keep.size)
        self._matrix[:size] = self._matrix[keep]
        for array in (self._seq, self._present, self._valid, self._ts, self._symbol, self._type):
            array[:size] = array[keep]
        self._present[size:] = False
        self._valid[size:] = False
        self._id_of_slot = [self._id_of_slot[i] for i in keep.tolist()]
        self._hash_of_slot = [self._hash_of_slot[i] for i in keep.tolist()]
        self._slot_tags = [self._slot_tags[i] for i in keep.tolist()]
        self._tag_slots = {}
        for slot, tags in enumerate(self._slot_tags):
            for tag in tags:
                self._tag_slots.setdefault(tag, []).append(slot)
        self._slot_of = {int(self._seq[slot]): slot for slot in range(size)}
        self._size = size
        self._dead = 0

    def _mask(self, where: VectorFilter) -> npt.NDArray[np.bool_] | None:
        """The slots that pass every filter (None: no memory can)."""
        n = self._size
        mask = self._valid[:n].copy()
        if where.symbol:
            code = self._codes.get(where.symbol)
            if code is None:
                return None
            mask &= self._symbol[:n] == code
        if where.types:
            codes = [self._codes[t] for t in where.types if t in self._codes]
            if not codes:
                return None
            mask &= np.isin(self._type[:n], np.asarray(codes, dtype=np.int32))
        if where.from_ is not None:
            mask &= self._ts[:n] >= micros(where.from_)
        if where.to is not None:
            mask &= self._ts[:n] <= micros(where.to)
        for tag in sorted(set(where.tags)):
            # Strict tags: every query tag present on the memory.
            slots = self._tag_slots.get(tag)
            if not slots:
                return None
            has = np.zeros(n, dtype=bool)
            has[np.asarray(slots, dtype=np.int64)] = True
            mask &= has
        return mask

    def search(
        self, vector: npt.NDArray[np.float32], k: int, where: VectorFilter | None = None
    ) -> list[tuple[int, float]]:
        """The ``k`` best (seq, cosine) among the valid memories passing ``where``, best first."""
        n = self._size
        if k <= 0 or n == 0:
            return []
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(self.dim)
        mask = self._mask(where or VectorFilter())
        if mask is None:
            return []
        count = int(np.count_nonzero(mask))
        if count == 0:
            return []
        if count < _GATHER_SHARE * n:
            slots = np.flatnonzero(mask)
            sims = self._matrix[slots] @ query
            seqs = self._seq[slots]
        else:
            # Most rows pass: score them all (one pass over the matrix) and sink the rest.
            sims = self._matrix[:n] @ query
            if count < n:
                np.copyto(sims, np.float32(-np.inf), where=~mask)
            seqs = self._seq[:n]
        take = min(k, count)
        if take < sims.size:
            # Everything scoring at least the take-th best (ties at the edge included), then the
            # exact order: score descending, seq ascending. Sunk rows score below any real cosine.
            edge = np.partition(sims, sims.size - take)[sims.size - take]
            inside = np.flatnonzero(sims >= edge)
            sims, seqs = sims[inside], seqs[inside]
        order = np.lexsort((seqs, -sims))[:take]
        return [(int(seqs[i]), float(sims[i])) for i in order]


def _grown(array: npt.NDArray[G], capacity: int, used: int) -> npt.NDArray[G]:
    out = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    out[:used] = array[:used]
    return out
