"""One owner per run, across real processes: two `jax serve` and a `jax run` on one database.

The database holds a run whose executor died (its lease expired). A `jax serve` that cannot bind its
port must not touch it; of two services starting beside a live `jax run`, exactly one resumes it,
and neither touches the live run. A throwaway plugin stage (found through PYTHONPATH, like an
installed one) appends "run symbol pid" to a file each time it executes, so any double execution
shows up, whoever did it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from jax_assistant.config import DEFAULT_PIPELINE, Settings
from jax_assistant.domain import Run, RunStatus, utc_now
from jax_assistant.orchestrator import Orchestrator
from jax_assistant.storage.tables import RunRow

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("api_auth_off")]

# "trace" right after detect_events, wherever that stands in the default pipeline.
PIPELINE = [n for name in DEFAULT_PIPELINE for n in ([name, "trace"] if name == "detect_events" else [name])]
TIMEOUT_S = 120.0

TRACE_STAGE = """
import asyncio, os
from typing import ClassVar

from jax_assistant.pipeline.base import BaseStage, StageContext, StageOutput, WorkItem
from jax_assistant.pipeline.policy import StagePolicy


class TraceStage(BaseStage):
    name = "trace"
    default_policy: ClassVar[StagePolicy] = StagePolicy(timeout_s=30.0, after=["detect_events"])

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        with open(os.environ["TRACE_FILE"], "a", encoding="utf-8") as f:
            f.write(f"{item.run_id} {item.symbol} {os.getpid()}\\n")
        await asyncio.sleep(0.25)
        return StageOutput(item=item)
"""


def make_plugin(root: Path) -> Path:
    root.mkdir()
    (root / "tracestage.py").write_text(TRACE_STAGE, encoding="utf-8")
    info = root / "tracestage-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tracestage\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text("[jax_assistant.stages]\ntrace = tracestage:TraceStage\n", "utf-8")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def env_for(tmp_path: Path, database_url: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k not in ("DATABASE_URL", "PORT")
    }
    env.update(
        PYTHONPATH=os.pathsep.join(
            p for p in (str(tmp_path / "plugin"), os.environ.get("PYTHONPATH", "")) if p
        ),
        JAX_DATA_DIR=str(tmp_path / "data"),
        JAX_DATABASE_URL=database_url,
        JAX_PIPELINE=json.dumps(PIPELINE),
        JAX_ENGINE__CONCURRENCY="2",
        JAX_STORAGE__LEASE_TTL_S="2",
        JAX_STORAGE__HEARTBEAT_S="0.3",
        # Stages execute in the serving process itself, whose pid the trace is checked against
        # (`jax serve` defaults to the executor process).
        JAX_API__EXECUTOR="inline",
        TRACE_FILE=str(tmp_path / "trace.log"),
    )
    return env


async def dead_run(settings: Settings) -> Run:
    """A run whose process died: still `running`, with a lease that expired a while ago."""
    async with Orchestrator(settings) as orch:
        assert orch.repository is not None and orch.db is not None
        provider = orch.provider()
        run = Run(
            id="run_dead",
            correlation_id="flow-dead",
            as_of=provider.latest_date(),
            provider=provider.name,
            simulated=provider.simulated,
            symbols=provider.symbols(),
            pipeline=PIPELINE,
            params={
                "accountSize": settings.account_size,
                "riskPercent": settings.risk_percent,
                "lookback": 1,
                "provider": provider.name,
                "dataPath": None,
                "stageOverrides": {},
                "unknownSymbols": [],
            },
        )
        assert await orch.repository.create_run(run, lease_owner="dead-host:1:x", lease_ttl_s=60)
        async with orch.db.transaction() as conn:
            past = utc_now() - timedelta(seconds=30)
            await conn.execute(update(RunRow).where(RunRow.id == run.id).values(lease_expires_at=past))
        stored = await orch.repository.get_run(run.id)
        assert stored is not None and stored.status is RunStatus.INTERRUPTED
    return run


def wait_healthy(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "jax serve did not come up"
        time.sleep(0.1)


def traces(tmp_path: Path) -> list[tuple[str, str, int]]:
    path = tmp_path / "trace.log"
    if not path.exists():
        return []
    return [(r, s, int(p)) for r, s, p in (line.split() for line in path.read_text().splitlines())]


async def test_an_interrupted_run_is_resumed_exactly_once_and_a_live_one_never(
    database_url: str, tmp_path: Path
) -> None:
    make_plugin(tmp_path / "plugin")
    settings = Settings(database_url=database_url, provider="sample")
    dead = await dead_run(settings)
    env = env_for(tmp_path, database_url)
    jax = [sys.executable, "-m", "jax_assistant"]
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*jax, *args], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        procs.append(proc)
        return proc

    try:
        # 1. A service whose port is taken exits and touches no run.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            blocked = start("serve", "--port", str(taken.getsockname()[1]))
            output, _ = blocked.communicate(timeout=TIMEOUT_S)
        assert blocked.returncode != 0, output
        assert traces(tmp_path) == []
        async with Orchestrator(settings) as orch:
            assert orch.repository is not None
            assert (await orch.repository.lease_of(dead.id))[0] == "dead-host:1:x"

        # 2. A live `jax run`, then two services started together beside it.
        live = start("run", "--json")
        deadline = time.monotonic() + TIMEOUT_S
        while not any(r != dead.id for r, _, _ in traces(tmp_path)):
            assert live.poll() is None, live.communicate()[0][-3000:]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        ports = [free_port(), free_port()]
        services = [start("serve", "--port", str(p)) for p in ports]
        for port, proc in zip(ports, services, strict=True):
            wait_healthy(port, proc)

        live_out, _ = live.communicate(timeout=TIMEOUT_S)
        assert live.returncode == 0, live_out[-3000:]
        live_run = json.loads(live_out[live_out.index("{") :])["run"]
        assert live_run["status"] == "completed"

        statuses: list[dict[str, Any]] = []
        deadline = time.monotonic() + TIMEOUT_S
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                statuses = [
                    (await client.get(f"http://127.0.0.1:{p}/status")).json()["runs"]["startupResume"]
                    for p in ports
                ]
                body = (await client.get(f"http://127.0.0.1:{ports[0]}/runs/{dead.id}")).json()
                if body["run"]["status"] == "completed" and all(s["state"] == "done" for s in statuses):
                    break
                assert time.monotonic() < deadline, (statuses, body["run"]["status"])
                await asyncio.sleep(0.1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()

    # Exactly one service resumed the dead run; the other saw it too but lost the lease.
    assert sorted(len(s["finished"]) for s in statuses) == [0, 1]
    assert [run for s in statuses for run in s["finished"]] == [dead.id]
    seen = traces(tmp_path)
    dead_calls = [(s, pid) for r, s, pid in seen if r == dead.id]
    live_calls = [(s, pid) for r, s, pid in seen if r == live_run["id"]]
    assert Counter(s for s, _ in dead_calls) == Counter(dead.symbols)  # each symbol once, no more
    assert len({pid for _, pid in dead_calls}) == 1
    assert {pid for _, pid in dead_calls} <= {p.pid for p in services}
    assert Counter(s for s, _ in live_calls) == Counter(dead.symbols)
    assert {pid for _, pid in live_calls} == {live.pid}  # nobody else touched the live run
    assert {r for r, _, _ in seen} == {dead.id, live_run["id"]}
    async with Orchestrator(settings) as orch:
        assert orch.repository is not None
        for run_id in (dead.id, live_run["id"]):
            stored = await orch.repository.get_run(run_id)
            assert stored is not None and stored.status is RunStatus.COMPLETED
            assert await orch.repository.lease_of(run_id) == (None, None)
            assert len(await orch.repository.get_symbol_results(run_id)) == len(dead.symbols)
