"""A fault-injecting plugin (tests/plugins/faults), installed and discovered like any third-party
stage, run through a real `jax run` and a real `jax serve` on loopback.

Stages that raise SystemExit / KeyboardInterrupt / GeneratorExit / a custom BaseException, return
garbage or unserialisable extras, or scribble on their input only fail (required) or degrade
(optional) the symbols they hit: the process exits 0, the run is `completed`, dead letters hold the
untouched items and `--json` is valid JSON. SIGTERM drains in-flight stages and leaves a resumable run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.plugins.install import install_plugin

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "tests" / "plugins" / "faults"
PROCESS_TIMEOUT_S = 120.0

# One symbol per fault, plus two clean ones.
TARGETS = {
    "fault_exit": "ACME.SIM",
    "fault_interrupt": "BOLT.SIM",
    "fault_genexit": "BREW.SIM",
    "fault_base": "BYTE.SIM",
    "fault_garbage": "CURA.SIM",
    "fault_unserialisable": "DRIL.SIM",
    "fault_mutate": "FLUX.SIM",
}
REASONS = {
    "fault_exit": "SystemExit: fault_exit for ACME.SIM",
    "fault_interrupt": "KeyboardInterrupt: fault_interrupt for BOLT.SIM",
    "fault_genexit": "GeneratorExit: fault_genexit for BREW.SIM",
    "fault_base": "CustomFault: fault_base for BYTE.SIM",
    "fault_garbage": "bad output: returned a dict, not a StageOutput",
    "fault_unserialisable": "bad output: item of 'DRIL.SIM' is not JSON-serialisable",
    "fault_mutate": "RuntimeError: fault_mutate broke FLUX.SIM after scribbling on it",
}
CLEAN = ["GEAR.SIM", "GENE.SIM"]
SYMBOLS = [*TARGETS.values(), *CLEAN]
PIPELINE = ["detect_events", *TARGETS, "generate_trades", "calculate_risk", "persist"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the fault plugin (not the project it depends on) into a private site folder."""
    return install_plugin(PLUGIN, tmp_path_factory.mktemp("site"), "jax_fault_stages")


def env_for(site: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "DATABASE_URL"}
    # Prepend: whatever PYTHONPATH points at (e.g. a worktree's src) must stay importable.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env["JAX_DATA_DIR"] = str(tmp_path / "data")
    env["JAX_PIPELINE"] = json.dumps(PIPELINE)
    env.update({f"JAX_FAULT_SYMBOLS_{stage.upper()}": sym for stage, sym in TARGETS.items()})
    env.update(extra)
    return env


def jax(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jax_assistant", *args],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        env=env,
        cwd=cwd,
    )


def db_rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(tmp_path / "data" / "jax.db", timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_required_faults_fail_only_their_symbols(plugin_site: Path, tmp_path: Path) -> None:
    proc = jax(env_for(plugin_site, tmp_path), tmp_path, "run", *SYMBOLS, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(proc.stdout)  # valid JSON even with unserialisable extras in the run
    assert payload["run"]["status"] == "completed"
    by_symbol = {s["symbol"]: s for s in payload["symbols"]}
    assert sorted(by_symbol) == sorted(SYMBOLS)
    for stage, sym in TARGETS.items():
        assert by_symbol[sym]["status"] == "failed"
        assert REASONS[stage] in by_symbol[sym]["error"], by_symbol[sym]["error"]
    assert all(by_symbol[s]["status"] == "succeeded" for s in CLEAN)

    run_id = payload["run"]["id"]
    assert db_rows(tmp_path, f"select status from runs where id = '{run_id}'") == [("completed",)]
    letters = dict(db_rows(tmp_path, f"select symbol, stage from dead_letters where run_id = '{run_id}'"))
    assert letters == {sym: stage for stage, sym in TARGETS.items()}
    # The scribbling stage's dead letter holds the item as it was handed to it.
    (raw,) = db_rows(
        tmp_path, f"select input from dead_letters where symbol = 'FLUX.SIM' and run_id = '{run_id}'"
    )
    before = json.loads(raw[0]) if isinstance(raw[0], str) else raw[0]
    assert before["completed_stages"] == PIPELINE[: PIPELINE.index("fault_mutate")]
    assert "fault_mutate" not in before["extras"]
    stored = dict(db_rows(tmp_path, f"select symbol, status from symbol_results where run_id = '{run_id}'"))
    assert stored == {s: by_symbol[s]["status"] for s in SYMBOLS}


def test_optional_faults_degrade_their_symbols(plugin_site: Path, tmp_path: Path) -> None:
    optional = json.dumps({stage: {"required": False} for stage in TARGETS})
    proc = jax(env_for(plugin_site, tmp_path, JAX_STAGES=optional), tmp_path, "run", *SYMBOLS, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(proc.stdout)
    assert payload["run"]["status"] == "completed"
    by_symbol = {s["symbol"]: s for s in payload["symbols"]}
    for stage, sym in TARGETS.items():
        r = by_symbol[sym]
        assert r["status"] == "degraded", (sym, r["error"])
        (result,) = [s for s in r["stages"] if s["stage"] == stage]
        assert result["status"] == "failed" and REASONS[stage] in result["error"]
        assert [s["stage"] for s in r["stages"]] == PIPELINE  # it went on through the rest
        assert "handle" not in r["extras"] and "fault_mutate" not in r["extras"]
    assert db_rows(tmp_path, "select count(*) from dead_letters") == [(0,)]


def test_a_plugin_run_stage_ranks_the_watchlist_and_a_crashing_one_fails_it(
    plugin_site: Path, tmp_path: Path
) -> None:
    pipeline = ["detect_events", "fault_rank", "generate_trades", "calculate_risk", "persist"]
    env = env_for(plugin_site, tmp_path, JAX_PIPELINE=json.dumps(pipeline))
    listed = jax(env, tmp_path, "stages", "--json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    scopes = {r["name"]: r["scope"] for r in json.loads(listed.stdout)["pipeline"]}
    assert scopes["fault_rank"] == "run" and scopes["detect_events"] == "symbol"

    proc = jax(env, tmp_path, "run", *SYMBOLS, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = {s["symbol"]: s["extras"]["fault_rank"] for s in json.loads(proc.stdout)["symbols"]}
    assert sorted(r["rank"] for r in ranks.values()) == list(range(len(SYMBOLS)))

    crash = ["detect_events", "fault_barrier_exit", "generate_trades"]
    proc = jax({**env, "JAX_PIPELINE": json.dumps(crash)}, tmp_path, "run", *SYMBOLS, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(proc.stdout)
    assert payload["run"]["status"] == "completed"
    assert {s["status"] for s in payload["symbols"]} == {"failed"}
    assert all("SystemExit: fault_barrier_exit" in s["error"] for s in payload["symbols"])


def test_sigterm_drains_in_flight_stages_and_leaves_a_resumable_run(
    plugin_site: Path, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    env = env_for(
        plugin_site,
        tmp_path,
        JAX_PIPELINE=json.dumps(["detect_events", "fault_slow", "generate_trades"]),
        JAX_FAULT_SLOW_S="1.0",
        JAX_FAULT_STARTED=str(started),
        JAX_ENGINE__CONCURRENCY="2",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "jax_assistant", "run", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while not started.exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the slow stage never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    payload = json.loads(out)
    run_id = payload["run"]["id"]
    assert payload["run"]["status"] == "cancelled"
    assert {s["status"] for s in payload["symbols"]} == {"cancelled"}
    # Drained: the stages in flight when SIGTERM came finished and were checkpointed.
    drained = db_rows(
        tmp_path, f"select symbol from stage_checkpoints where run_id = '{run_id}' and stage = 'fault_slow'"
    )
    assert 1 <= len(drained) <= 2
    assert db_rows(tmp_path, f"select status from runs where id = '{run_id}'") == [("cancelled",)]

    resumed = jax({**env, "JAX_FAULT_SLOW_S": "0"}, tmp_path, "run", "--resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = json.loads(resumed.stdout)
    assert done["run"]["status"] == "completed"
    assert {s["status"] for s in done["symbols"]} == {"succeeded"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[str], httpx.Client]:
    """A real `jax serve` on a free loopback port, once it answers /health."""
    env = {"JAX_API__AUTH": "off", **env}  # these tests are about faults; tests/api/test_auth.py has keys
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "jax_assistant", "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while True:
        if server.poll() is not None:
            client.close()
            raise AssertionError(server.communicate()[1][-3000:])
        try:
            if client.get("/health").status_code == 200:
                return server, client
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "jax serve never became healthy"
        time.sleep(0.1)


def _stop(server: subprocess.Popen[str]) -> None:
    server.send_signal(signal.SIGTERM)
    server.communicate(timeout=PROCESS_TIMEOUT_S)
    # uvicorn shuts down gracefully, then re-raises the signal it captured (so -SIGTERM, not 0).
    assert server.returncode in (0, -signal.SIGTERM)


def test_jax_serve_survives_a_pipeline_of_faults(plugin_site: Path, tmp_path: Path) -> None:
    server, client = _serve(env_for(plugin_site, tmp_path, JAX_METRICS_ENABLED="false"), tmp_path)
    try:
        with contextlib.closing(client):
            accepted = client.post("/process", json={"symbols": SYMBOLS})
            assert accepted.status_code == 202, accepted.text
            run_id = accepted.json()["runId"]
            deadline = time.monotonic() + PROCESS_TIMEOUT_S
            while True:
                body = client.get(f"/runs/{run_id}").json()
                if body["run"]["status"] != "running":
                    break
                assert server.poll() is None, server.communicate()[1][-3000:]
                assert time.monotonic() < deadline, "the run never finished"
                time.sleep(0.1)
            assert body["run"]["status"] == "completed"
            statuses = {s["symbol"]: s["status"] for s in body["symbols"]}
            assert {statuses[s] for s in TARGETS.values()} == {"failed"}
            assert {statuses[s] for s in CLEAN} == {"succeeded"}
            assert client.get("/health").status_code == 200  # still serving
        _stop(server)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


def test_jax_serve_shutdown_drains_active_runs_and_keeps_them_resumable(
    plugin_site: Path, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    env = env_for(
        plugin_site,
        tmp_path,
        JAX_METRICS_ENABLED="false",
        JAX_PIPELINE=json.dumps(["detect_events", "fault_slow", "generate_trades"]),
        JAX_FAULT_SLOW_S="1.0",
        JAX_FAULT_STARTED=str(started),
        JAX_ENGINE__CONCURRENCY="2",
    )
    server, client = _serve(env, tmp_path)
    try:
        with contextlib.closing(client):
            run_id = client.post("/process", json={}).json()["runId"]
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while not started.exists():
            assert time.monotonic() < deadline, "the slow stage never started"
            time.sleep(0.05)
        _stop(server)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    # The stages in flight at SIGTERM finished and were checkpointed; the run is left for the next start.
    drained = db_rows(
        tmp_path, f"select symbol from stage_checkpoints where run_id = '{run_id}' and stage = 'fault_slow'"
    )
    assert 1 <= len(drained) <= 2
    assert db_rows(tmp_path, f"select status from runs where id = '{run_id}'") == [("running",)]
