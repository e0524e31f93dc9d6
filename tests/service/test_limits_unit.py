"""The JSON shape check, the host matching and admission bookkeeping, without a server."""

from __future__ import annotations

import asyncio
import json

import pytest

from jax_assistant.service.admission import Admission, AdmissionRejectedError
from jax_assistant.service.hosts import TrustedHostMiddleware, host_name
from jax_assistant.service.limits import RequestLimits, check_body, check_json

LIMITS = RequestLimits(max_json_depth=5, max_list_length=3, max_string_length=10)


def nested(depth: int) -> object:
    doc: object = 1
    for _ in range(depth):
        doc = {"a": doc}
    return doc


def test_depth_limit_names_the_path() -> None:
    assert check_json(nested(5), LIMITS) is None
    violation = check_json({"context": nested(5)}, LIMITS)
    assert violation is not None
    assert violation.rule == "max_json_depth"
    assert violation.field.startswith("body.context.a.a")


def test_depth_far_beyond_the_recursion_limit_is_a_violation_not_a_crash() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    violation = check_body(body, LIMITS)
    assert violation is not None and violation.rule == "max_json_depth"


def test_list_object_and_string_lengths() -> None:
    assert check_json({"s": [1, 2, 3]}, LIMITS) is None
    too_long = check_json({"s": [1, 2, 3, 4]}, LIMITS)
    assert too_long is not None and (too_long.rule, too_long.field) == ("max_list_length", "body.s")
    wide = check_json({str(i): i for i in range(4)}, LIMITS)
    assert wide is not None and wide.rule == "max_list_length"
    text = check_json({"s": ["ok", "x" * 11]}, LIMITS)
    assert text is not None and (text.rule, text.field) == ("max_string_length", "body.s.1")
    key = check_json({"k" * 11: 1}, LIMITS)
    assert key is not None and key.rule == "max_string_length"


def test_invalid_json_is_left_to_the_app() -> None:
    assert check_body(b"{not json", LIMITS) is None
    assert check_body(json.dumps({"a": [1, 2]}).encode(), LIMITS) is None


def test_host_matching() -> None:
    assert host_name("[::1]:8091") == "::1"
    assert host_name("LocalHost:80") == "localhost"
    assert host_name("::1") == "::1"
    guard = TrustedHostMiddleware(lambda *_: None, allowed=["127.0.0.1", "localhost", "*.corp.example"])  # type: ignore[arg-type]
    assert guard.allows("127.0.0.1:8091") and guard.allows("localhost")
    assert guard.allows("api.corp.example:443")
    assert not guard.allows("evil.example") and not guard.allows("corp.example.evil") and not guard.allows("")


async def test_admission_caps_symbols_queues_in_order_and_refuses_when_full() -> None:
    adm = Admission(max_in_flight=4, max_queued=2)
    a = adm.admit(3)
    b = adm.admit(2)  # does not fit beside a: queued
    c = adm.admit(1)  # would fit, but must not overtake b
    assert a.granted.is_set() and not b.granted.is_set() and not c.granted.is_set()
    with pytest.raises(AdmissionRejectedError) as info:
        adm.admit(1)
    assert info.value.status == 429 and info.value.retry_after_s >= 1
    snap = adm.snapshot()
    assert (snap["symbolsInFlight"], snap["queuedRuns"], snap["rejected"]) == (3, 2, 1)
    a.release()
    a.release()  # idempotent
    assert b.granted.is_set() and c.granted.is_set()
    assert adm.in_flight == 3
    b.release()
    c.release()
    assert adm.in_flight == 0
    big = adm.admit(100)  # larger than the cap: runs alone instead of never
    assert big.granted.is_set() and adm.in_flight == 4


async def test_a_queued_ticket_released_unstarted_leaves_the_queue() -> None:
    adm = Admission(max_in_flight=1, max_queued=1)
    first = adm.admit(1)
    queued = adm.admit(1)
    waiter = asyncio.ensure_future(queued.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    queued.release()
    assert adm.snapshot()["queuedRuns"] == 0
    first.release()
    assert adm.in_flight == 0


def test_closing_refuses_with_503() -> None:
    adm = Admission(max_in_flight=1, max_queued=1)
    adm.close()
    with pytest.raises(AdmissionRejectedError) as info:
        adm.admit(1)
    assert info.value.status == 503 and info.value.retry_after_s > 0


def test_refuse_if_full_refuses_exactly_when_admit_would_for_every_weight() -> None:
    for max_queued in (0, 1):
        adm = Admission(max_in_flight=2, max_queued=max_queued)
        adm.refuse_if_full()  # room: nothing raised
        held = [adm.admit(2)]  # the cap is reached
        if max_queued:
            adm.refuse_if_full()  # a queue place is left
            held.append(adm.admit(1))
        with pytest.raises(AdmissionRejectedError) as info:
            adm.refuse_if_full()
        assert info.value.status == 429
        with pytest.raises(AdmissionRejectedError):
            adm.admit(1)  # what admit says for the smallest run too
        for ticket in held:
            ticket.release()
        adm.refuse_if_full()  # room again
