"""`jax serve`'s server keeps what start-up made out of the garbage collector once it serves, so a full
collection never walks the whole import graph in the middle of a request."""

from __future__ import annotations

import asyncio
import gc

import uvicorn
from fastapi import FastAPI

from jax_assistant.api.server import ServingServer


async def test_start_up_objects_are_frozen_once_serving() -> None:
    config = uvicorn.Config(FastAPI(), host="127.0.0.1", port=0, log_config=None, lifespan="off")
    server = ServingServer(config)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    serving = asyncio.create_task(server.serve())
    try:
        await asyncio.wait_for(server.serving.wait(), 10)
        assert gc.get_freeze_count() > 0
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        gc.unfreeze()  # the rest of the test session collects as usual
