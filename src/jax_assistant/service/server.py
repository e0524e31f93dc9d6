"""A header deadline for uvicorn: a client has ``header_timeout_s`` to send a request's headers.

uvicorn closes idle keep-alive connections but lets a client trickle request headers forever (a
"slowloris" holds a connection and its memory with a byte every few seconds). The deadline starts when
the connection opens, and again after each response; it is cancelled once a request's headers are
complete. The body has its own deadline (``service/limits.py``, a 408).

The deadline sits on uvicorn's httptools protocol (a C parser) when httptools is installed, as
uvicorn's own ``http="auto"`` would choose, and on its pure-Python h11 protocol otherwise: parsing and
writing a request with h11 was about a quarter of an accepted run's CPU. h11 refuses a request
line and headers longer than 16 KiB (a 400, "Invalid HTTP request received."); the httptools parser
has no such cap, so the same limit and answer are kept here for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional (uvicorn[standard])
    HttpToolsProtocol = None  # type: ignore[assignment, misc]


class _HeaderDeadline:
    """The deadline, over either of uvicorn's HTTP/1.1 protocols (both set ``cycle`` once a request's
    headers are parsed and call ``on_response_complete`` once its response is sent)."""

    header_timeout_s = 10.0
    # Bytes allowed while a request's headers are incomplete; None: the parser caps them itself.
    max_header_bytes: int | None = None
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._answered: object = None  # the last cycle whose response is complete
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self._deadline is None:
            return
        if self.cycle is not None and self.cycle is not self._answered:
            self._cancel()  # a new request's headers are in
        elif self.max_header_bytes is not None and not self.transport.is_closing():
            # Counted once the parser has seen the data: a first read may carry a body after headers.
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._cancel()
                msg = "Invalid HTTP request received."  # what uvicorn's h11 protocol answers
                self.logger.warning(msg)  # type: ignore[attr-defined]
                self.send_400_response(msg)  # type: ignore[attr-defined]

    def on_response_complete(self) -> None:
        self._answered = self.cycle
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._cancel()
        self._header_bytes = 0
        self._deadline = self.loop.call_later(self.header_timeout_s, self._expire)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.cycle is None or self.cycle is self._answered:
            self.transport.close()


class HeaderDeadlineH11Protocol(_HeaderDeadline, H11Protocol):  # type: ignore[misc]
    pass


def header_deadline_protocol(header_timeout_s: float, *, parser: str = "auto") -> type[asyncio.Protocol]:
    """The protocol class to pass as ``uvicorn.Config(http=...)``: ``parser`` is ``"h11"``,
    ``"httptools"`` or ``"auto"`` (httptools when installed)."""
    if parser not in ("auto", "h11", "httptools"):
        raise ValueError(f"unknown HTTP parser {parser!r}")
    if parser == "httptools" and HttpToolsProtocol is None:
        raise ValueError("the httptools parser is not installed")
    fast = parser != "h11" and HttpToolsProtocol is not None
    base: type[asyncio.Protocol] = HttpToolsProtocol if fast else H11Protocol
    # h11's own default cap (uvicorn's h11_max_incomplete_event_size when unset).
    cap = 16 * 1024 if fast else None
    return type(
        "HeaderDeadlineProtocol",
        (_HeaderDeadline, base),
        {"header_timeout_s": header_timeout_s, "max_header_bytes": cap},
    )
