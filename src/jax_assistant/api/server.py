"""The uvicorn server `jax serve` runs: it tells the app when its port is bound.

Start-up resume (see ``create_app``) waits for ``app.state.serving``; this server sets it once its
sockets are bound, so a service that cannot bind its port (uvicorn then exits) never touches a run.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from typing import Any

import uvicorn


class ServingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.serving = asyncio.Event()
        app: Any = config.app
        app.state.serving = self.serving

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # on a bind failure uvicorn exits here, before `started`
        if self.started:
            # Everything start-up made (imports, the app, the open database) lives as long as the
            # process: kept out of the collector, a full collection no longer walks ~150k objects on
            # the event loop (a 30-60 ms pause in the middle of a request).
            gc.freeze()
            self.serving.set()
