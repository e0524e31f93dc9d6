"""`jax data check` on real data: totals per rule, worst first, `--rule` and `--json`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from jax_assistant.cli import ACTION_SEVERITY, app

pytestmark = pytest.mark.realdata


def check(runner: CliRunner, *args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["data", "check", "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload


def test_totals_per_rule_worst_first_match_the_details(
    runner: CliRunner, jax_env: dict[str, str], real_subset: Path
) -> None:
    payload = check(runner, "--data", str(real_subset))
    details = payload["details"]
    assert details and payload["issues"] == len(details)
    counts = Counter(d["rule"] for d in details)
    assert {r["rule"]: r["count"] for r in payload["rules"]} == dict(counts)
    for r in payload["rules"]:
        assert r["symbols"] == len({d["symbol"] for d in details if d["rule"] == r["rule"]})
    keys = [(min(ACTION_SEVERITY.get(a, 2) for a in r["actions"]), -r["count"]) for r in payload["rules"]]
    assert keys == sorted(keys)  # rows dropped before rows only reported, bigger counts first

    rule = payload["rules"][-1]["rule"]
    only = check(runner, "--data", str(real_subset), "--rule", rule)
    assert [r["rule"] for r in only["rules"]] == [rule]
    assert {d["rule"] for d in only["details"]} == {rule} and only["issues"] == counts[rule]


def test_table_names_the_rules_and_an_unknown_rule_lists_the_real_ones(
    runner: CliRunner, jax_env: dict[str, str], real_subset: Path
) -> None:
    rules = [r["rule"] for r in check(runner, "--data", str(real_subset))["rules"]]
    text = runner.invoke(app, ["data", "check", "--data", str(real_subset)]).stdout
    positions = [text.index(r) for r in rules]
    assert positions == sorted(positions)  # the table lists them in the same, worst-first order
    typo = runner.invoke(app, ["data", "check", "--data", str(real_subset), "--rule", "bad_tik"]).stdout
    assert "no issue breaks rule 'bad_tik'" in typo and rules[0] in typo
