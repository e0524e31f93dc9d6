"""``jax serve``: the real command, in its own process, on the port named by the environment."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    # A subprocess cannot report back a port 0 binding simply; the tiny reuse race is acceptable here.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("env_name", ["PORT", "JAX_PORT"])
def test_jax_serve_listens_on_the_env_port_and_stops_cleanly(tmp_path: Path, env_name: str) -> None:
    port = free_port()
    env = {**os.environ, env_name: str(port), "JAX_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jax_assistant", "serve", "--no-resume"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                resp = httpx.get(
                    f"http://127.0.0.1:{port}/health", headers={"X-Flow-ID": "flow-cli"}, timeout=2
                )
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "jax serve did not come up"
                time.sleep(0.1)
        assert resp.status_code == 200
        assert resp.json()["service"] == "jax-orchestrator"
        assert resp.headers["X-Flow-ID"] == "flow-cli"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert f"listening on http://127.0.0.1:{port}" in output
    assert "Application startup complete" in output
    assert (tmp_path / "data").is_dir()  # the default SQLite file went to the data dir


@pytest.mark.parametrize(("configured", "mode"), [(None, "process"), ("inline", "inline")])
def test_jax_serve_executes_runs_in_the_executor_process_unless_configured(
    tmp_path: Path, configured: str | None, mode: str
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "JAX_API__EXECUTOR"}
    env |= {"JAX_PORT": str(port), "JAX_DATA_DIR": str(tmp_path / "data")}
    if configured is not None:
        env["JAX_API__EXECUTOR"] = configured
    proc = subprocess.Popen(
        [sys.executable, "-m", "jax_assistant", "serve", "--no-resume"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/status", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, "jax serve exited"
                assert time.monotonic() < deadline, "jax serve did not come up"
                time.sleep(0.1)
        assert resp.status_code == 200
        assert resp.json()["runs"]["executor"]["mode"] == mode
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
