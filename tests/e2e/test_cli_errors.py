"""Every bad input of `jax run` ends the same way: one `error:` line naming what is wrong, exit 2, and
nothing stored (no run row that a later `jax serve` would try to resume)."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from tests.pgutil import admin_url
from typer.testing import CliRunner

from jax_assistant.cli import app

Setup = Callable[[Path, pytest.MonkeyPatch], list[str]]


def stored_runs(env: dict[str, str]) -> int:
    db = Path(env["JAX_DATA_DIR"]) / "jax.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
        return int(conn.execute("select count(*) from runs").fetchone()[0]) if "runs" in tables else 0


def assert_one_error_line(stderr: str, *fragments: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr


def _strategy_dir(tmp: Path, _: pytest.MonkeyPatch) -> list[str]:
    folder = tmp / "strategies"
    folder.mkdir()
    (folder / "broken.json").write_text('{"id": "broken", "name": "x"}')
    return ["--data-env", f"JAX_STRATEGIES_DIR={folder}"]


def _env(name: str, filename: str, text: str) -> Setup:
    def setup(tmp: Path, _: pytest.MonkeyPatch) -> list[str]:
        path = tmp / filename
        path.write_text(text)
        return ["--data-env", f"{name}={path}"]

    return setup


def _toml(text: str) -> Setup:
    def setup(tmp: Path, _: pytest.MonkeyPatch) -> list[str]:
        (tmp / "jax.toml").write_text(text)
        return []

    return setup


def _args(*args: str) -> Setup:
    return lambda _tmp, _mp: list(args)


def _truncated_gzip(tmp: Path, _: pytest.MonkeyPatch) -> list[str]:
    path = tmp / "bars.csv.gz"
    rows = "".join(f"AAA,2020-01-{d:02d},1,2,0.5,1.5,100\n" for d in range(1, 29))
    blob = gzip.compress(("symbol,date,open,high,low,close,volume\n" + rows * 50).encode())
    path.write_bytes(blob[: len(blob) // 2])
    return ["--data", str(path)]


CASES: dict[str, tuple[Setup, tuple[str, ...]]] = {
    "infinite account size": (_args("--account-size", "inf"), ("--account-size", "finite")),
    "nan risk percent": (_args("--risk-percent", "nan"), ("--risk-percent", "finite")),
    "negative account size": (_args("--account-size", "-5"), ("--account-size", "greater than 0")),
    "bad strategy file": (_strategy_dir, ("broken.json",)),
    "bad portfolio file": (_env("JAX_PORTFOLIO_PATH", "portfolio.json", "{"), ("portfolio.json",)),
    "bad constraints file": (
        _env("JAX_RISK_CONSTRAINTS_PATH", "limits.json", '{"max_positions": "many"}'),
        ("limits.json",),
    ),
    "unknown database driver": (_args("--db", "nosuch://x"), ("database URL", "nosuch://x")),
    "not a database URL": (_args("--db", "not a url"), ("database URL",)),
    "SQLite file in a missing folder": (
        _args("--db", "sqlite:////no/such/folder/jax.db"),
        ("cannot open the SQLite database", "/no/such/folder/jax.db"),
    ),
    "jax.toml is not TOML": (_toml("lookback = \n"), ("jax.toml", "not valid TOML")),
    "jax.toml bad value": (_toml('lookback = "x"\n'), ("jax.toml: lookback", "'x'")),
    "jax.toml unknown key": (_toml("acount_size = 5\n"), ("jax.toml: acount_size", "unknown setting")),
    "jax.toml unknown stage": (
        _toml("[stages.persit]\ntimeout_s = 3\n"),
        ("jax.toml: stages.persit", "not a stage of the pipeline"),
    ),
    "malformed JAX_WATCHLIST": (
        lambda _t, mp: (mp.setenv("JAX_WATCHLIST", '["AAPL",'), [])[1],
        ("JAX_WATCHLIST",),
    ),
    "truncated gzip": (_truncated_gzip, ("bars.csv.gz",)),
    "unknown stage in --policy": (
        _args("ACME.SIM", "--policy", "persit.timeout_s=3"),
        ("'persit'", "not a stage of the pipeline"),
    ),
    "bad policy value": (_args("ACME.SIM", "--policy", "persist.timeout_s=-1"), ("persist",)),
    "unknown symbol among known ones": (_args("ACME.SIM", "NOPE"), ("NOPE",)),
    "symbol with [brackets]": (_args("[bold]X"), ("[BOLD]X",)),  # printed, not read as markup
    "--resume with run inputs": (_args("--resume", "run_x", "ACME.SIM", "--lookback", "3"), ("SYMBOLS",)),
    "date after the data": (_args("--as-of", "2999-01-01"), ("2999-01-01",)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_stores_nothing(
    case: str,
    runner: CliRunner,
    jax_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup, fragments = CASES[case]
    args = setup(tmp_path, monkeypatch)
    if args[:1] == ["--data-env"]:  # a file given through its JAX_* variable
        name, _, value = args[1].partition("=")
        monkeypatch.setenv(name, value)
        args = ["ACME.SIM"]
    result = runner.invoke(app, ["run", *args])
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, *fragments)
    assert result.stdout == ""
    assert stored_runs(jax_env) == 0


@pytest.mark.postgres
def test_missing_postgres_database_says_how_to_create_it(runner: CliRunner, jax_env: dict[str, str]) -> None:
    url = make_url(admin_url()).set(drivername="postgresql", database="jax_no_such_database_e2e")
    result = runner.invoke(app, ["run", "--db", url.render_as_string(hide_password=True)])
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "'jax_no_such_database_e2e' does not exist", "createdb")


def test_unreachable_database_is_exit_1(runner: CliRunner, jax_env: dict[str, str]) -> None:
    """Not the caller's input: the same command may work once the server is up (documented exit 1)."""
    result = runner.invoke(app, ["run", "--db", "postgresql://127.0.0.1:1/jax"])
    assert result.exit_code == 1, result.output
    assert_one_error_line(result.stderr, "cannot open the database", "127.0.0.1:1")


def test_errors_do_not_wrap_on_a_pipe(jax_env: dict[str, str], tmp_path: Path) -> None:
    """A real process with stderr on a pipe (rich would fold at 80 columns there)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    long_name = "X" * 30
    symbols = [f"{long_name}{i}" for i in range(6)]
    proc = subprocess.run(
        [sys.executable, "-m", "jax_assistant", "run", *symbols],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert_one_error_line(proc.stderr, *symbols)
    assert len(proc.stderr.splitlines()[0]) > 200


def test_json_run_that_cannot_start_prints_nothing_and_stores_nothing(
    runner: CliRunner, jax_env: dict[str, str], tmp_path: Path
) -> None:
    """The same validation serves `jax run --json`: nothing on stdout, no row."""
    result = runner.invoke(app, ["run", "--json", "--account-size", "inf"])
    assert result.exit_code == 2
    assert result.stdout == "" and stored_runs(jax_env) == 0
    ok = runner.invoke(app, ["run", "--json", "ACME.SIM"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["run"]["symbols"] == ["ACME.SIM"] and stored_runs(jax_env) == 1


def test_serve_with_a_bad_database_is_one_line_not_a_server_traceback(
    runner: CliRunner, jax_env: dict[str, str]
) -> None:
    bad = runner.invoke(app, ["serve", "--port", "1", "--db", "sqlite:////no/such/folder/jax.db"])
    assert bad.exit_code == 2, bad.output
    assert_one_error_line(bad.stderr, "/no/such/folder")
    down = runner.invoke(app, ["serve", "--port", "1", "--db", "postgresql://127.0.0.1:1/jax"])
    assert down.exit_code == 1, down.output
    assert_one_error_line(down.stderr, "cannot open the database")
