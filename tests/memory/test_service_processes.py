"""Two processes: the orchestrator with the ``remote`` backend pointing at a real `jax memory serve`.

- Both as subprocesses: a ``/process`` run retains and recalls over HTTP, and the audit of BOTH
  processes carries the request's correlation id.
- Memory killed mid-run (SIGKILL while the symbols wait at a gate): symbols end degraded, the outbox
  fills, and after a restart `jax serve`'s background drain delivers it with nothing lost or doubled.

The memory service runs with its shipped defaults (API keys required): the keys are made with
`jax keys create --db <memory db>` and the orchestrator holds a write key as ``memory.api_key``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from tests.api.helpers import GateStage, LiveServer, wait_for_run

from jax_assistant.api import create_app
from jax_assistant.config import DEFAULT_PIPELINE, MemoryConfig, Settings
from jax_assistant.pipeline import plugins
from jax_assistant.pipeline.stages import BUILTIN_STAGES

pytestmark = pytest.mark.slow

SYMBOLS = ["ACME.SIM", "BOLT.SIM", "BYTE.SIM", "MEDX.SIM"]
START_TIMEOUT_S = 60.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k not in ("DATABASE_URL", "PORT")
    }
    env.update({"JAX_DATA_DIR": str(tmp_path / "data"), **extra})
    return env


def wait_healthy(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not start"
        time.sleep(0.1)


@contextmanager
def jax_process(args: list[str], env: dict[str, str], cwd: Path, url: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "jax_assistant", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_healthy(url, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def memory_db(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'memory-service.db'}"


def memory_key(tmp_path: Path, scope: str) -> str:
    """A key of the memory service, made the documented way (`jax keys create --db <memory db>`)."""
    args = ["keys", "create", "--name", f"test-{scope}", "--scope", scope, "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "jax_assistant", *args, "--db", memory_db(tmp_path)],
        env=clean_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    key: str = json.loads(done.stdout)["key"]
    return key


def memory_serve(tmp_path: Path, port: int) -> Any:
    db = memory_db(tmp_path)
    return jax_process(
        ["memory", "serve", "--port", str(port), "--db", db],
        clean_env(tmp_path),
        tmp_path,
        f"http://127.0.0.1:{port}",
    )


def all_decisions(memory_url: str, key: str) -> list[dict[str, Any]]:
    r = httpx.post(
        f"{memory_url}/tools",
        json={"tool": "memory.recall", "input": {"bank": "trade_decisions", "query": {"limit": 1000}}},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["output"]["items"]
    return items


def test_two_processes_share_the_correlation_id_in_both_audits(tmp_path: Path) -> None:
    mem_port, orch_port = free_port(), free_port()
    memory_url, orch_url = f"http://127.0.0.1:{mem_port}", f"http://127.0.0.1:{orch_port}"
    write_key, admin_key = memory_key(tmp_path, "write"), memory_key(tmp_path, "admin")
    admin = {"Authorization": f"Bearer {admin_key}"}
    env = clean_env(
        tmp_path,
        JAX_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'orchestrator.db'}",
        JAX_LOOKBACK="20",
        JAX_MEMORY__BACKEND="remote",
        JAX_MEMORY__URL=memory_url,
        JAX_MEMORY__TIMEOUT_S="10",
        JAX_MEMORY__API_KEY=write_key,
        # The orchestrator's own keys are tests/api/test_auth.py's subject; memory's are this one's.
        JAX_API__AUTH="off",
    )
    with (
        memory_serve(tmp_path, mem_port),
        jax_process(["serve", "--port", str(orch_port), "--no-resume"], env, tmp_path, orch_url),
        httpx.Client(base_url=orch_url, timeout=30) as client,
    ):
        cid = "corr_two_processes_1"
        r = client.post("/process", json={"symbols": SYMBOLS}, headers={"X-Correlation-ID": cid})
        assert r.status_code == 202, r.text
        run = asyncio.run(_wait(orch_url, r.json()["runId"]))
        assert run["run"]["status"] == "completed"
        assert {s["status"] for s in run["symbols"]} == {"succeeded"}, run["symbols"]

        retained = all_decisions(memory_url, write_key)
        expected = {f"decision:{s['symbol']}:{e['id']}" for s in run["symbols"] for e in s["events"]}
        assert expected and expected <= {d["id"] for d in retained}

        mem_audit = httpx.get(f"{memory_url}/audit", params={"correlationId": cid}, headers=admin).json()
        actions = [(e["action"], e["outcome"]) for e in mem_audit]
        assert ("memory.retain", "success") in actions
        assert {e["correlationId"] for e in mem_audit} == {cid}
        orch_audit = client.get("/audit", params={"correlation_id": cid}).json()
        assert orch_audit and {e["correlationId"] for e in orch_audit} == {cid}
        assert any(e["action"] == "api.process" for e in orch_audit)

        # A second run recalls what the first retained (over HTTP) into the work item.
        r = client.post("/process", json={"symbols": SYMBOLS}, headers={"X-Correlation-ID": "corr_two_2"})
        second = asyncio.run(_wait(orch_url, r.json()["runId"]))
        # Memory now holds decisions: every symbol recalled them, audited under the second request's id.
        second_audit = httpx.get(
            f"{memory_url}/audit", params={"correlationId": "corr_two_2"}, headers=admin
        ).json()
        second_actions = [(e["action"], e["outcome"]) for e in second_audit]
        recalled_decisions = [
            e["payload"]["query"].get("symbol")
            for e in second_audit
            if (e["action"], e["outcome"]) == ("memory.recall", "success")
            and e["payload"].get("bank") == "trade_decisions"
        ]
        # Each symbol's decisions recalled once (research recalls trade_outcomes on top of that).
        assert sorted(recalled_decisions) == sorted(SYMBOLS)
        assert ("memory.retain", "success") in second_actions
        by_symbol = {s["symbol"]: s for s in second["symbols"]}
        for symbol in SYMBOLS:
            mine = {d["id"] for d in retained if d["symbol"] == symbol}
            recalled = {d["id"] for d in by_symbol[symbol]["extras"]["recall_memory"]["decisions"]}
            if len(mine) <= 5:  # the stage recalls five
                assert recalled == mine
            else:
                assert len(recalled) == 5 and recalled <= mine
        assert len(all_decisions(memory_url, write_key)) == len(retained)  # idempotent: nothing added twice


async def _wait(url: str, run_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await wait_for_run(client, run_id, timeout_s=120)


@pytest.mark.usefixtures("api_auth_off")
async def test_memory_killed_mid_run_degrades_fills_the_outbox_and_drains_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    GateStage.reset()
    monkeypatch.setattr(plugins, "discover_stage_factories", lambda: {**BUILTIN_STAGES, "gate": GateStage})
    pipeline = list(DEFAULT_PIPELINE)
    pipeline.insert(pipeline.index("detect_events") + 1, "gate")
    mem_port = free_port()
    memory_url = f"http://127.0.0.1:{mem_port}"
    write_key = memory_key(tmp_path, "write")
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'orchestrator.db'}",
        lookback=20,
        pipeline=pipeline,
        memory=MemoryConfig(
            backend="remote",
            url=memory_url,
            timeout_s=5.0,
            outbox_drain_s=0.3,
            api_key=SecretStr(write_key),
        ),
    )
    memory = memory_serve(tmp_path, mem_port)
    proc = memory.__enter__()
    server = LiveServer(create_app(settings, resume_on_startup=False))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            r = await client.post(
                "/process", json={"symbols": SYMBOLS}, headers={"X-Correlation-ID": "corr_kill"}
            )
            assert r.status_code == 202, r.text
            await GateStage.wait_entered(len(SYMBOLS), timeout_s=60)  # recall done, memory still up
            proc.kill()  # SIGKILL: no goodbye
            proc.communicate()
            GateStage.opened.set()
            run = await wait_for_run(client, r.json()["runId"], timeout_s=120)
            assert {s["status"] for s in run["symbols"]} == {"degraded"}, run["symbols"]
            for s in run["symbols"]:
                stages = {st["stage"]: st for st in s["stages"]}
                assert stages["recall_memory"]["status"] == "ok"
                assert stages["persist"]["status"] == "ok"
                assert stages["retain_memory"]["status"] == "degraded"
            expected = {f"decision:{s['symbol']}:{e['id']}" for s in run["symbols"] for e in s["events"]}
            expected |= {
                f"decision:{s['symbol']}:{run['run']['asOf']}"
                for s in run["symbols"]
                if any(t["setup"].get("eventId") is None for t in s["trades"])
            }
            # /status refreshes what it reads from the database at most every second.
            deadline = time.monotonic() + 5.0
            depth = None
            while depth != len(expected) and time.monotonic() < deadline:
                depth = (await client.get("/status")).json()["memoryOutbox"]["depth"]
                await asyncio.sleep(0.1)
            assert depth == len(expected) > 0

            memory = memory_serve(tmp_path, mem_port)  # restart on the same port and store
            memory.__enter__()
            deadline = time.monotonic() + 60
            while (await client.get("/status")).json()["memoryOutbox"]["depth"]:
                assert time.monotonic() < deadline, "the outbox did not drain"
                await asyncio.sleep(0.2)
            retained = await asyncio.to_thread(all_decisions, memory_url, write_key)
            ids = [d["id"] for d in retained]
            assert len(ids) == len(set(ids))  # nothing twice
            assert set(ids) == expected  # nothing lost
    finally:
        GateStage.opened.set()
        await server.stop()
        memory.__exit__(None, None, None)
