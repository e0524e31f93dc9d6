"""Waiting on whichever of several asyncio events is set first (a start-up or a hand-over that either
begins or dies), with a timeout, leaving no waiter task behind."""

from __future__ import annotations

import asyncio


async def wait_any(*events: asyncio.Event, within_s: float | None = None) -> None:
    """Return once any of ``events`` is set or ``within_s`` seconds passed; the caller checks which."""
    waiters = {asyncio.ensure_future(event.wait()) for event in events}
    try:
        await asyncio.wait(waiters, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
