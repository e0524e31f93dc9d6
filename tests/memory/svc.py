"""Shared pieces of the memory-service tests: `jax memory serve`'s app on a real loopback server.

Import as ``from tests.memory.svc import ...``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from tests.api.helpers import LiveServer

from jax_assistant.config import Settings
from jax_assistant.memory.app import create_app

T0 = datetime(2024, 5, 1, 13, 30, tzinfo=UTC)


def decision(symbol: str, n: int, **extra: Any) -> dict[str, Any]:
    """A contract decision item (wire shape)."""
    return {
        "id": f"decision:{symbol}:{n}",
        "ts": (T0 + timedelta(days=n)).isoformat(),
        "type": "decision",
        "symbol": symbol,
        "tags": ["decision", "event:gap_open"],
        "summary": f"{symbol} gap up day {n}: long setup allowed",
        "data": {"setups": [{"entry": 100 + n}], "broker_key": "k-123"},
        "source": {"system": "jax-orchestrator", "ref": f"run_{n}"},
        **extra,
    }


@dataclass
class MemoryService:
    server: LiveServer
    client: httpx.AsyncClient
    database_url: str

    @property
    def url(self) -> str:
        return self.server.url

    async def tool(self, tool: str, inp: Any, **headers: str) -> httpx.Response:
        return await self.client.post("/tools", json={"tool": tool, "input": inp}, headers=headers)


@asynccontextmanager
async def memory_service(
    database_url: str, settings: Settings | None = None, headers: dict[str, str] | None = None
) -> AsyncIterator[MemoryService]:
    """The service on loopback; ``settings`` default to the environment's (auth off in this suite, see
    conftest); ``headers`` go with every request of ``client``."""
    server = LiveServer(create_app(settings or Settings(), database_url=database_url))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=headers) as client:
            yield MemoryService(server, client, database_url)
    finally:
        await server.stop()
