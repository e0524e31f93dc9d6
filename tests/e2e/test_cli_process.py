"""The CLI as a real process: what a command imports, and what Ctrl-C leaves the operator with."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.engines.test_sigkill_resume import count_or_zero, jax, jax_env, make_plugin, rows


def imported_by(env: dict[str, str], cwd: Path, *args: str) -> set[str]:
    """Modules loaded once the command has run, read from inside the same interpreter."""
    code = (
        "import sys\n"
        "from jax_assistant.cli import app\n"
        "try:\n"
        f"    app({list(args)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stderr.write('MODULES ' + ' '.join(sorted(sys.modules)) + '\\n')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=180
    )
    line = next(x for x in proc.stderr.splitlines() if x.startswith("MODULES "))
    return {m.split(".")[0] for m in line.split()[1:]} | set(line.split()[1:])


def test_help_and_run_import_only_what_they_use(jax_env_vars: dict[str, str], tmp_path: Path) -> None:
    help_modules = imported_by(jax_env_vars, tmp_path, "--help")
    assert not help_modules & {"sqlalchemy", "alembic", "polars", "fastapi", "uvicorn", "structlog"}
    assert "jax_assistant.orchestrator" not in help_modules
    run_modules = imported_by(jax_env_vars, tmp_path, "run", "ACME.SIM", "--json")
    assert "jax_assistant.orchestrator" in run_modules  # the run did happen in this interpreter
    assert not run_modules & {"fastapi", "uvicorn", "starlette", "jax_assistant.api"}
    # A first run on a new SQLite file builds its schema from the shipped snapshot; the calendar ships
    # as data; no HTTP client unless a service is configured; no PostgreSQL dialect on SQLite.
    assert not run_modules & {"alembic", "holidays", "httpx", "sqlalchemy.dialects.postgresql"}
    assert not {m for m in run_modules if m.startswith("opentelemetry.exporter")}
    # Nothing scrapes a CLI run's metrics (it runs with NullMetrics), and tracing is off by default:
    # neither Prometheus' client nor the OpenTelemetry SDK is loaded.
    assert not run_modules & {"prometheus_client", "opentelemetry.sdk"}
    assert "jax_assistant.research.dexter" not in run_modules  # not a configured research provider


@pytest.fixture
def jax_env_vars(tmp_path: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "DATABASE_URL"}
    env["JAX_DATA_DIR"] = str(tmp_path / "data")
    return env


@pytest.mark.slow
def test_ctrl_c_drains_and_prints_the_resume_command(tmp_path: Path) -> None:
    plugin = make_plugin(tmp_path / "plugin")
    db = tmp_path / "db" / "jax.db"
    db.parent.mkdir()
    proc = subprocess.Popen(
        jax("run"),
        env={**jax_env(tmp_path, plugin, db), "JAX_ENGINE__CONCURRENCY": "1"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while count_or_zero(db, "select count(*) from stage_checkpoints") < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before Ctrl-C"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    (run_id,) = rows(db, "select id from runs")[0]
    assert f"resume with: jax run --resume {run_id}" in stderr
    assert re.search(r"cancelling: finishing in-flight stages", stderr)
