"""Random bytes for ids (correlation, audit, run ids), drawn from ``os.urandom`` a page at a time.

``os.urandom`` releases the GIL around its system call, so on the event loop thread every call lets a
busy Python thread (the SQLite writer, the log listener) take the GIL, and the loop then waits for that
thread's switch interval: up to 5 ms, several times per accepted run. One call per 4 KiB keeps the same
kernel randomness and leaves that wait once per hundreds of ids. Not for secrets (keys and tokens use
``secrets`` directly): these bytes sit in memory until used.
"""

from __future__ import annotations

import os
import threading

_PAGE = 4096

_lock = threading.Lock()
_pool = b""
_used = 0


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the kernel's random source (a few at a time from a pooled page)."""
    global _pool, _used
    if n > _PAGE // 4:
        return os.urandom(n)
    with _lock:  # threads (the executor's, tests') draw ids too: no two may get the same bytes
        if _used + n > len(_pool):
            _pool, _used = os.urandom(_PAGE), 0
        out = _pool[_used : _used + n]
        _used += n
    return out


def _forget() -> None:
    # A forked child must not hand out the bytes its parent also hands out.
    global _lock, _pool, _used
    _lock = threading.Lock()  # it may have been held by a thread the child does not have
    _pool, _used = b"", 0


os.register_at_fork(after_in_child=_forget)
