"""Per-run stage policy overrides and the dead-letter commands, through the CLI."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from jax_assistant.cli import _parse_policies, app


def invoke_json(runner: CliRunner, *args: str) -> Any:
    result = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_parse_policies_nests_and_types_values() -> None:
    assert _parse_policies(["persist.timeout_s=5", "persist.retry.attempts=3", "x.breaker=memory"]) == {
        "persist": {"timeout_s": 5, "retry": {"attempts": 3}},
        "x": {"breaker": "memory"},
    }
    assert _parse_policies([]) is None


def test_run_override_applies_to_that_run_only_and_failures_reach_the_dlq(
    runner: CliRunner, jax_env: dict[str, str]
) -> None:
    # A timeout no real scan can meet: detect_events (required) times out for every symbol.
    failed = invoke_json(
        runner, "run", "ACME.SIM", "ZEST.SIM", "--policy", "detect_events.timeout_s=0.000001"
    )
    assert [s["status"] for s in failed["symbols"]] == ["failed", "failed"]
    stage = next(s for s in failed["symbols"][0]["stages"] if s["stage"] == "detect_events")
    assert stage["status"] == "timed_out"
    assert "timed out" in stage["reason"]
    assert failed["run"]["params"]["stageOverrides"] == {"detect_events": {"timeout_s": 0.000001}}

    letters = invoke_json(runner, "dlq", "list")
    assert sorted(d["symbol"] for d in letters) == ["ACME.SIM", "ZEST.SIM"]
    assert {d["stage"] for d in letters} == {"detect_events"}
    assert all(d["run_id"] == failed["run"]["id"] and d["status"] == "open" for d in letters)

    # The next run without the override is unaffected.
    ok = invoke_json(runner, "run", "ACME.SIM")
    assert ok["symbols"][0]["status"] == "succeeded"

    # Retrying the dead letters re-runs them as a new run (the original run's override still applies,
    # so they fail again and stay retriable); the table lists them under the retry run.
    retried = invoke_json(runner, "dlq", "retry", "--run", failed["run"]["id"])
    assert retried["run"]["params"]["retryOf"] == failed["run"]["id"]
    assert sorted(retried["run"]["symbols"]) == ["ACME.SIM", "ZEST.SIM"]
    statuses = {d["status"] for d in invoke_json(runner, "dlq", "list", "--status", "all")}
    assert "retried" in statuses


def test_dlq_retry_needs_a_target(runner: CliRunner, jax_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["dlq", "retry"])
    assert result.exit_code == 2 and "give dead-letter ids or --run" in result.output
    none = runner.invoke(app, ["dlq", "retry", "999"])
    assert none.exit_code == 2 and "no dead letter(s) 999" in none.output


def test_bad_policy_is_a_clear_error(runner: CliRunner, jax_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["run", "ACME.SIM", "--policy", "detect_events.timeout_s=-1"])
    assert result.exit_code == 2
    assert "bad policy for stage 'detect_events': timeout_s" in result.output
    result = runner.invoke(app, ["run", "ACME.SIM", "--policy", "nonsense"])
    assert result.exit_code == 2 and "expected STAGE.FIELD=VALUE" in result.output
