"""``off_loop``: stage CPU work on a worker thread, one call at a time, never stuck behind a timed-out one."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from jax_assistant.pipeline.stages import off_loop


async def test_calls_run_on_a_worker_thread_one_at_a_time() -> None:
    lock = threading.Lock()
    active, most, threads = 0, 0, set()
    gate = threading.Event()

    def work(n: int) -> int:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
            threads.add(threading.get_ident())
        # Held until every call has been submitted: without the lane they would all be inside at once.
        gate.wait(5)
        with lock:
            active -= 1
        return n * 2

    tasks = [asyncio.create_task(off_loop(work, n)) for n in range(4)]
    for _ in range(20):
        await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == [0, 2, 4, 6]
    assert most == 1
    assert threading.get_ident() not in threads


async def test_a_call_abandoned_by_its_timeout_frees_the_lane() -> None:
    stuck_started, release = threading.Event(), threading.Event()

    def stuck() -> None:
        stuck_started.set()
        release.wait(10)

    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await off_loop(stuck)
        assert stuck_started.is_set() and not release.is_set()  # its thread still runs
        # The next symbol's work is not queued behind the abandoned call.
        async with asyncio.timeout(5):
            assert await off_loop(lambda: "next") == "next"
    finally:
        release.set()


def test_each_event_loop_has_its_own_lane() -> None:
    # A lane bound to one loop must not break a later loop (tests and `jax serve` run several).
    assert asyncio.run(off_loop(sum, [1, 2])) == 3
    assert asyncio.run(off_loop(sum, [3, 4])) == 7


def _spin(seconds: float) -> float:
    # CPU seconds, not wall: off_loop judges CPU time, and a busy machine must not shorten the spin.
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    return seconds


async def test_a_tiny_function_runs_inline_after_its_warm_up_calls() -> None:
    threads: list[int] = []

    def tiny() -> None:
        threads.append(threading.get_ident())

    for _ in range(5):
        await off_loop(tiny)
    loop_thread = threading.get_ident()
    assert loop_thread not in threads[:2]  # measured on the thread first
    assert threads[2:] == [loop_thread] * 3  # then inline: no hand-off


async def test_a_timeout_expiring_during_an_inline_call_still_times_the_stage_out() -> None:
    def short(seconds: float) -> float:
        return _spin(seconds)

    for _ in range(3):
        await off_loop(short, 0.0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.001):
            await off_loop(short, 0.004)  # inline (under the 50 ms bound), overruns the 1 ms timeout


async def test_a_slow_call_sends_its_function_back_to_the_thread() -> None:
    threads: list[int] = []

    def sometimes_slow(seconds: float) -> None:
        threads.append(threading.get_ident())
        _spin(seconds)

    for _ in range(3):
        await off_loop(sometimes_slow, 0.0)
    await off_loop(sometimes_slow, 0.12)  # inline, but too slow for it
    await off_loop(sometimes_slow, 0.0)
    assert threads[2] == threading.get_ident()
    assert threads[-1] != threading.get_ident()
