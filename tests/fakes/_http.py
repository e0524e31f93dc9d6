"""A real HTTP server on loopback, in a thread of its own, for fakes of services outside this machine.

Each fake decides per request what to do through a queue of scripted behaviours (then a default), so
a test can say "the next two calls return 500, then answer normally". Behaviours: ``ok``,
``slow:<seconds>``, ``hang`` (holds the connection until the server stops), ``429:<retry-after>``,
``429`` (no Retry-After), ``500``, ``400``, ``malformed`` (not JSON), ``oversized`` (a huge valid
JSON body; ``stream``: the same, chunked without Content-Length), ``error`` (the vendor's documented
error body, status 200 or ``error:<status>``).
The thread keeps answering while the test's event loop waits, which is how a hang looks for real.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class FakeServer:
    """Subclasses implement ``answer(path, body) -> (status, json_obj)`` for the ``ok`` behaviour and
    ``error_reply(status, message)`` for the vendor's error shape."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.script: deque[str] = deque()
        self.default = "ok"
        self.oversize_bytes = 5_000_000
        self._stop = threading.Event()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:  # keep test output clean
                return None

            def do_GET(self) -> None:
                fake._send(self, Reply(200, json.dumps(fake.health()).encode()))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    fake._send(self, fake.error_reply(400, "invalid JSON"))
                    return
                with fake._lock:
                    fake.requests.append(
                        Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    behaviour = fake.script.popleft() if fake.script else fake.default
                fake._send(self, fake._behave(behaviour, self.path, body))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # releases hanging handlers
        self.httpd.shutdown()
        self.httpd.server_close()

    def then(self, *behaviours: str) -> FakeServer:
        self.script.extend(behaviours)
        return self

    # ------------------------------------------------------------------ to override

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    def answer(self, path: str, body: Any) -> tuple[int, Any]:
        raise NotImplementedError

    def error_reply(self, status: int, message: str) -> Reply:
        return Reply(status, json.dumps({"error": message}).encode())

    def oversized(self, path: str, body: Any) -> Any:
        return {"padding": "x" * self.oversize_bytes}

    # ------------------------------------------------------------------ behaviours

    def _behave(self, behaviour: str, path: str, body: Any) -> Reply:
        kind, _, arg = behaviour.partition(":")
        if kind == "slow":
            self._stop.wait(float(arg))
            kind = "ok"
        if kind == "hang":
            self._stop.wait(600)
            return Reply(504, b"{}")
        if kind == "ok":
            status, obj = self.answer(path, body)
            return Reply(status, json.dumps(obj).encode())
        if kind == "429":
            reply = self.error_reply(429, "rate limit exceeded")
            if arg:
                reply.headers["Retry-After"] = arg
            return reply
        if kind in ("500", "502", "503", "400", "401", "404"):
            return self.error_reply(int(kind), f"fake {kind}")
        if kind == "malformed":
            return Reply(200, b'{"output": {"ticker": "AAPL", "summ')
        if kind == "oversized":
            return Reply(200, json.dumps(self.oversized(path, body)).encode())
        if kind == "stream":  # chunked, no Content-Length: only reading it tells how big it is
            return Reply(
                200, json.dumps(self.oversized(path, body)).encode(), {"Transfer-Encoding": "chunked"}
            )
        if kind == "error":
            return self.error_reply(200 if not arg else int(arg), "upstream tool failed")
        raise ValueError(f"unknown behaviour {behaviour!r}")

    def _send(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json")
            chunked = reply.headers.get("Transfer-Encoding") == "chunked"
            if not chunked:
                handler.send_header("Content-Length", str(len(reply.body)))
            for k, v in reply.headers.items():
                handler.send_header(k, v)
            handler.end_headers()
            if not chunked:
                handler.wfile.write(reply.body)
                return
            for i in range(0, len(reply.body), 65536):
                piece = reply.body[i : i + 65536]
                handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): what a real server sees too


def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
