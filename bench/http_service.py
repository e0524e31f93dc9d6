"""HTTP service throughput and accept latency, each beside a minimal FastAPI app on the same core.

    python bench/http_service.py                 # 2 rounds x 5 s per req/s figure, 300 accepts per latency
    python bench/http_service.py --seconds 3 --accepts 200 --out bench/results/http.json
    python bench/http_service.py --seconds 2 --no-accept --generator wrk   # req/s only, wrk only

Two servers run as subprocesses pinned to the same CPU core (``os.sched_setaffinity``), one after the
other for each figure: ``jax serve`` (auth on, a write key made with ``jax keys create``, defaults
otherwise: sample data, SQLite file in a fresh temporary ``JAX_DATA_DIR``) and a minimal FastAPI app
(``--minimal-server``: the same routes answering a constant, no middleware) served by uvicorn with the
same protocol and settings as ``jax serve``. The load generator runs in this process on another core:
raw asyncio sockets, HTTP/1.1 keep-alive, far cheaper per request than an HTTP client library. Near
5 000 req/s that Python generator may itself be what limits the figure, so when ``wrk`` is installed
(Debian package ``wrk``; bench only, nothing else needs it) the req/s figures are also taken with it
(one thread, the same connections, on the generator's core): ``--generator both`` (the default when
wrk is found), ``python`` or ``wrk``.

- req/s: ``/status``, ``/health`` and ``/metrics`` with ``--connections`` keep-alive connections for
  ``--seconds`` (after a 1 s warm-up), responses counted;
- accept latency: ``POST /process {"symbols": ["ACME.SIM"]}`` (a real one-symbol run starts for every
  202 and executes while the next requests arrive) from 1 client and from 20 clients, p50/p99 of the
  202s; refusals (429 once the run queue is full) are counted and shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import git_revision, write_results  # bench/ is sys.path[0] when run as a script
from rich.console import Console
from rich.table import Table

SERVER_CORE = 0


# --------------------------------------------------------------------------- the minimal server


def minimal_server(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    from jax_assistant.service.server import header_deadline_protocol

    app = FastAPI()

    @app.get("/status")
    async def status() -> dict[str, Any]:
        return {"service": "minimal", "ok": True}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "healthy"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(b"# minimal\n", media_type="text/plain")

    @app.post("/process", status_code=202)
    async def process(body: dict[str, Any]) -> JSONResponse:
        return JSONResponse(status_code=202, content={"runId": "x", "status": "running"})

    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, http=header_deadline_protocol(10)
    )
    uvicorn.Server(config).run()


# --------------------------------------------------------------------------- load generator


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def post(path: str, body: dict[str, Any], key: str | None) -> bytes:
    data = json.dumps(body).encode()
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (Linux /proc): what a request costs the server,
    whatever else shares its core (wall req/s on a loaded machine mostly measures the neighbours)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_cpu(fig: dict[str, Any], requests: int, cpu_s: float) -> dict[str, Any]:
    per_req = round(cpu_s / requests * 1e6, 1) if requests else None
    return {**fig, "requests": requests, "cpu_us_per_req": per_req}


async def throughput(port: int, pid: int, raw: bytes, connections: int, seconds: float) -> dict[str, Any]:
    conns = [await Conn.open(port) for _ in range(connections)]
    counts = {"ok": 0, "other": 0}
    stop_at = 0.0
    counting = False

    async def worker(c: Conn) -> None:
        while time.perf_counter() < stop_at:
            status = await c.request(raw)
            if counting:
                counts["ok" if status == 200 else "other"] += 1

    stop_at = time.perf_counter() + 1.0  # warm-up
    await asyncio.gather(*(worker(c) for c in conns))
    counting = True
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu
    for c in conns:
        c.close()
    fig = {"rps": round(counts["ok"] / elapsed), "non200": counts["other"]}
    return with_cpu(fig, counts["ok"] + counts["other"], cpu)


def wrk_throughput(port: int, pid: int, path: str, connections: int, seconds: float) -> dict[str, Any]:
    """req/s measured by wrk (a C load generator that saturates a Python server with one thread)."""
    url = f"http://127.0.0.1:{port}{path}"

    def wrk(duration_s: int) -> str:
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", url]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration_s + 30).stdout

    wrk(1)  # warm-up, as for the Python generator
    cpu = cpu_seconds(pid)
    out = wrk(max(1, round(seconds)))  # wrk takes whole seconds
    cpu = cpu_seconds(pid) - cpu  # includes wrk's connect and close: a few ms in seconds
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    fig = {"rps": round(float(rps.group(1))), "non200": int(non2xx.group(1)) if non2xx else 0}
    return with_cpu(fig, int(total.group(1)), cpu)


async def accept_latency(port: int, key: str | None, clients: int, total: int) -> dict[str, Any]:
    conns = [await Conn.open(port) for _ in range(clients)]
    raw = post("/process", {"symbols": ["ACME.SIM"]}, key)
    latencies: list[float] = []
    refused: dict[int, int] = {}
    remaining = total

    async def worker(c: Conn) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t = time.perf_counter()
            status = await c.request(raw)
            if status == 202:
                latencies.append((time.perf_counter() - t) * 1000)
            else:
                refused[status] = refused.get(status, 0) + 1

    await asyncio.gather(*(worker(c) for c in conns))
    for c in conns:
        c.close()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 2 else [float("nan")] * 99
    return {
        "accepted": len(latencies),
        "refused": refused,
        "p50_ms": round(q[49], 2),
        "p99_ms": round(q[98], 2),
    }


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin_to_server_core() -> None:
    os.sched_setaffinity(0, {SERVER_CORE})


def start(cmd: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin_to_server_core
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {' '.join(cmd)}") from None
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError("server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--accepts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="req/s rounds (best kept)")
    parser.add_argument(
        "--generator",
        choices=("both", "python", "wrk"),
        default="both" if shutil.which("wrk") else "python",
        help="req/s load generator(s) (default: both when wrk is installed, else python)",
    )
    parser.add_argument("--no-accept", action="store_true", help="skip the POST /process latencies")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--executor",
        choices=["inline", "process"],
        default="process",  # what `jax serve` uses unless [api] executor says otherwise
        help="where `jax serve` executes runs ([api] executor; process, the default: a niced child "
        "on the same core)",
    )
    parser.add_argument(
        "--jax-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for `jax serve` only, e.g. JAX_API__MAX_QUEUED_RUNS=1000 (every request accepted, "
        "so the CPU per request is that of an accepted one); repeatable. Inherited JAX_* are dropped",
    )
    parser.add_argument("--minimal-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    extra_env = dict(item.partition("=")[::2] for item in args.jax_env)
    if any(not k.startswith("JAX_") for k in extra_env):
        parser.error("--jax-env takes JAX_* settings (KEY=VALUE)")
    if args.minimal_server:
        minimal_server(args.minimal_server)
        return
    if args.generator != "python" and shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk), use --generator python")
    generators = ("python", "wrk") if args.generator == "both" else (args.generator,)

    console = Console()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus) - {SERVER_CORE})  # the generator never shares the server's core
    tmp = Path(tempfile.mkdtemp(prefix="jax-bench-http-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "DATABASE_URL"}
    env["JAX_DATA_DIR"] = str(tmp)
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "jax_assistant",
            "keys",
            "create",
            "--name",
            "bench",
            "--scope",
            "write",
            "--json",
        ],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        check=True,
    )
    key = json.loads(made.stdout)["key"]

    jax_port, min_port = free_port(), free_port()
    jax_cmd = [sys.executable, "-m", "jax_assistant", "serve", "--no-resume", "--port", str(jax_port)]
    min_cmd = [sys.executable, str(Path(__file__).resolve()), "--minimal-server", str(min_port)]
    env_jax = {**env, "JAX_LOG_LEVEL": "WARNING", "JAX_API__EXECUTOR": args.executor, **extra_env}
    servers: dict[str, subprocess.Popen[bytes]] = {}
    ports = {"jax": jax_port, "minimal": min_port}
    results: dict[str, Any] = {
        "revision": git_revision(),
        "cpus": cpus,
        "server_core": SERVER_CORE,
        "load_average": os.getloadavg(),
        "generators": list(generators),
        "executor": args.executor,
        "jax_env": extra_env,
    }
    reads = ("/status", "/health", "/metrics")
    # (path, generator, key in results): the python generator's under the path (the keys earlier
    # runs wrote), wrk's under "<path> wrk".
    figures = [(p, g, p if g == "python" else f"{p} wrk") for g in generators for p in reads]
    try:
        # One at a time inside the try: a server that fails to start still stops the one before it.
        servers["jax"] = start(jax_cmd, env_jax, jax_port)
        servers["minimal"] = start(min_cmd, env, min_port)

        async def measure() -> None:
            # Interleaved rounds, best kept: noise from other processes hits both servers alike.
            for _ in range(args.rounds):
                for path, gen, label in figures:
                    for name in ("minimal", "jax"):
                        pid = servers[name].pid
                        if gen == "wrk":
                            fig = wrk_throughput(ports[name], pid, path, args.connections, args.seconds)
                        else:
                            fig = await throughput(
                                ports[name], pid, get(path), args.connections, args.seconds
                            )
                        best = results.setdefault(label, {}).get(name)
                        if best is None or fig["rps"] > best["rps"]:
                            results[label][name] = fig
                        cheapest = results[label].get(f"{name}_cpu_us_per_req")
                        if fig["cpu_us_per_req"] and (cheapest is None or fig["cpu_us_per_req"] < cheapest):
                            results[label][f"{name}_cpu_us_per_req"] = fig["cpu_us_per_req"]
            for clients in () if args.no_accept else (1, 20):
                for name in ("minimal", "jax"):
                    # The API process's CPU per request (in process mode the executor's is not in
                    # it): what the accept path costs, whatever else shares the core.
                    cpu = cpu_seconds(servers[name].pid)
                    fig = await accept_latency(
                        ports[name], key if name == "jax" else None, clients, args.accepts
                    )
                    fig = with_cpu(fig, args.accepts, cpu_seconds(servers[name].pid) - cpu)
                    results.setdefault(f"accept_{clients}", {})[name] = fig
                    await asyncio.sleep(3 if name == "jax" else 0)  # let the runs just started finish

        asyncio.run(measure())
    finally:
        for proc in servers.values():
            stop(proc)

    table = Table(title=f"HTTP on core {SERVER_CORE} (generator on {sorted(os.sched_getaffinity(0))})")
    for col in ("figure", "minimal FastAPI", "jax serve", "jax / minimal"):
        table.add_column(col, justify="right" if col != "figure" else "left")
    for path, gen, label in figures:
        m, j = results[label]["minimal"], results[label]["jax"]
        results[label]["ratio"] = round(j["rps"] / m["rps"], 3) if m["rps"] else None
        bad = m["non200"] + j["non200"]
        table.add_row(
            f"{path} req/s" + (" (wrk)" if gen == "wrk" else ""),
            f"{m['rps']:,}",
            f"{j['rps']:,}",
            f"{results[label]['ratio']:.2f}x" + (f" ({bad} non-200!)" if bad else ""),
        )
    for path, gen, label in figures:
        # Server CPU per request: the req/s ratio a saturated, otherwise idle core would show.
        mc, jc = results[label].get("minimal_cpu_us_per_req"), results[label].get("jax_cpu_us_per_req")
        results[label]["cpu_ratio"] = round(mc / jc, 3) if mc and jc else None
        table.add_row(
            f"{path} server CPU µs/request" + (" (wrk)" if gen == "wrk" else ""),
            f"{mc}",
            f"{jc}",
            f"{results[label]['cpu_ratio']:.2f}x req/s" if results[label]["cpu_ratio"] else "-",
        )
    for clients in () if args.no_accept else (1, 20):
        fig = results[f"accept_{clients}"]
        m, j = fig["minimal"], fig["jax"]
        table.add_row(
            f"POST /process, {clients} client(s): p50 / p99 ms",
            f"{m['p50_ms']} / {m['p99_ms']}",
            f"{j['p50_ms']} / {j['p99_ms']}",
            f"{j['accepted']} accepted, refused {j['refused'] or 0}",
        )
        table.add_row(
            f"POST /process, {clients} client(s): server CPU µs/request (refused ones included)",
            f"{m['cpu_us_per_req']}",
            f"{j['cpu_us_per_req']}",
            "",
        )
    console.print(table)
    console.print(f"load average before the run: {' '.join(f'{x:.2f}' for x in results['load_average'])}")
    if extra_env:
        console.print(f"jax serve settings: {extra_env}")
    write_results(results, args.out, console)


if __name__ == "__main__":
    main()
