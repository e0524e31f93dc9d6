"""Pooled random bytes for ids: one os.urandom call serves many ids, never the same bytes twice."""

from __future__ import annotations

import os

import pytest

from jax_assistant.observability import entropy
from jax_assistant.observability.correlation import new_audit_event, new_correlation_id
from jax_assistant.orchestrator import new_run_id


def test_ids_share_one_urandom_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.urandom

    def counting(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(entropy.os, "urandom", counting)
    entropy._forget()
    ids = [new_correlation_id() for _ in range(50)] + [new_audit_event("a", "started").id for _ in range(50)]
    ids += [new_run_id() for _ in range(50)]
    # Each os.urandom releases the GIL on the event loop thread: 150 ids, one call.
    assert calls == [4096]
    assert len(set(ids)) == 150


def test_id_formats_unchanged() -> None:
    cid = new_correlation_id()
    assert cid.startswith("corr_") and len(cid) == 37
    assert cid[5 + 12] == "4" and cid[5 + 16] in "89ab"  # uuid4 version and variant
    aid = new_audit_event("a", "started").id
    assert aid.startswith("aud_") and len(aid) == 36 and aid[4 + 12] == "4"
    rid = new_run_id()
    assert rid.startswith("run_") and len(rid.rsplit("_", 1)[1]) == 12


def test_large_requests_and_page_boundaries_stay_distinct() -> None:
    entropy._forget()
    drawn = [entropy.random_bytes(1000) for _ in range(9)]  # crosses pages: no reuse of a tail
    assert len(set(drawn)) == 9 and all(len(b) == 1000 for b in drawn)
    assert len(entropy.random_bytes(5000)) == 5000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_forked_child_draws_other_bytes() -> None:
    entropy.random_bytes(1)  # a page in the parent's pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next bytes and leave at once
        os.write(write, entropy.random_bytes(16))
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert child != entropy.random_bytes(16)
