"""A header deadline for uvicorn: a client has ``header_timeout_s`` to send a request's headers.

uvicorn closes idle keep-alive connections but lets a client trickle request headers forever (a
"slowloris" holds a connection and its memory with a byte every few seconds). The deadline starts when
the connection opens, and again after each response; it is cancelled once a request's headers are
complete. The body has its own deadline (``service/limits.py``, a 408).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadlineH11Protocol(H11Protocol):
    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._answered: object = None  # the last cycle whose response is complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._deadline is not None and self.cycle is not None and self.cycle is not self._answered:
            self._cancel()  # a new request's headers are in

    def on_response_complete(self) -> None:
        self._answered = self.cycle
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._cancel()
        self._deadline = self.loop.call_later(self.header_timeout_s, self._expire)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.cycle is None or self.cycle is self._answered:
            self.transport.close()


def header_deadline_protocol(header_timeout_s: float) -> type[HeaderDeadlineH11Protocol]:
    """The protocol class to pass as ``uvicorn.Config(http=...)``."""
    return type(
        "HeaderDeadlineProtocol", (HeaderDeadlineH11Protocol,), {"header_timeout_s": header_timeout_s}
    )
