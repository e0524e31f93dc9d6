"""The loop through the real command line: `jax run` stores setups, `jax reflect` settles them and
records beliefs, the next `jax run` cites them in its setups, `jax trades list` shows outcomes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jax_assistant.cli import app
from jax_assistant.config import Settings
from jax_assistant.memory.facade import open_memory
from jax_assistant.memory.models import MemoryItem

pytestmark = [pytest.mark.realdata]

SYMBOLS = ["AAPL", "MSFT", "XOM", "JPM", "GE", "KO"]


async def _bank_contents(url: str, banks: list[str]) -> dict[str, list[MemoryItem]]:
    settings = Settings(database_url=url)
    memory = await open_memory(settings)
    try:
        return {b: await memory.recall({"limit": 1000}, bank=b) for b in banks}
    finally:
        await memory.close()


def test_run_reflect_run(shared_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"JAX_DATA_DIR": str(tmp_path), "COLUMNS": "250"}
    common = [
        "--data",
        str(shared_data / "daily_ohlcv_stooq_sp500.csv.gz"),
        "--db",
        f"sqlite+aiosqlite:///{tmp_path}/j.db",
    ]

    def jax(*args: str) -> str:
        out = runner.invoke(app, list(args), env=env)
        assert out.exit_code == 0, out.output
        return out.stdout

    first = json.loads(jax("run", "--as-of", "2015-06-30", "--lookback", "120", "--json", *common, *SYMBOLS))
    assert not any("beliefs:" in t["setup"]["notes"] for r in first["symbols"] for t in r["trades"])

    summary = json.loads(jax("reflect", "--as-of", "2015-09-30", "--json", *common))
    assert summary["settled"]["settled"] > 20
    assert {b["belief_type"] for b in summary["beliefs"]} == {
        "strategy_track_record",
        "strategy_event_track_record",
        "symbol_track_record",
    }
    weights = summary["weights"]
    assert weights and all("belief_id" in w for w in weights.values())
    # What was learned is remembered: outcomes and beliefs in their banks, once however often reflected.
    assert summary["retained"]["trade_outcomes"] > 20
    assert summary["retained"]["strategy_beliefs"] == len(summary["beliefs"])
    again = json.loads(jax("reflect", "--as-of", "2015-09-30", "--json", *common))
    assert again["retained"] == summary["retained"]
    banks = asyncio.run(_bank_contents(common[3], ["trade_outcomes", "strategy_beliefs"]))
    assert len(banks["trade_outcomes"]) == summary["retained"]["trade_outcomes"]
    assert {i.data["outcome"] for i in banks["trade_outcomes"]} <= {"win", "loss", "flat"}
    assert len(banks["strategy_beliefs"]) == summary["retained"]["strategy_beliefs"]
    assert all(i.type == "belief" and i.data["belief_type"] for i in banks["strategy_beliefs"])

    trades = json.loads(jax("trades", "list", "--json", "--limit", "1000", "--db", common[3]))
    settled = [t for t in trades if "outcome" in t]
    assert settled and {t["outcome"]["status"] for t in settled} <= {"target", "stop", "expired", "unfilled"}
    table = jax("trades", "list", "--limit", "5", "--db", common[3])
    assert "outcome" in table and ("R" in table.split("outcome", 1)[1])
    assert any(s in table for s in ("target +", "stop -", "stop +", "expired ", "unfilled "))

    later = json.loads(jax("run", "--as-of", "2015-10-01", "--lookback", "5", "--json", *common, *SYMBOLS))
    notes = [t["setup"]["notes"] for r in later["symbols"] for t in r["trades"]]
    cited = [n for n in notes if "beliefs: belief belief_" in n]
    assert cited, "setups of a strategy with a belief must cite it"
    assert all(any(w["belief_id"] in n for w in weights.values()) for n in cited)
    suspended = {sid for sid, w in weights.items() if w["suspended"]}
    gated = [t for r in later["symbols"] for t in r["trades"] if t["setup"]["strategyId"] in suspended]
    for t in gated:  # paper-tracked: stored, never allocated room
        assert t["risk"]["positionSize"] == 0 and not t["risk"]["constraints"]["allowed"]
        assert "STRATEGY_SUSPENDED" in [v["code"] for v in t["risk"]["constraints"]["violations"]]
        assert t["risk"]["constraints"]["reason"].startswith("strategy ")
    assert gated, "this period suspends ma_crossover_v1 (323 paper trades, negative expectancy)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--from", "2016-02-01", "--to", "2016-01-01", "AAPL"],
            "--to 2016-01-01 is before --from 2016-02-01",
        ),
        (["--from", "2016-13-01", "--to", "2016-02-01", "AAPL"], "--from '2016-13-01' is not a date"),
        (["--from", "2016-01-04", "--to", "2016-02-01", "NOPE"], "unknown symbol(s)"),
    ],
)
def test_replay_bad_input_is_one_clear_line(
    args: list[str], message: str, shared_data: Path, tmp_path: Path
) -> None:
    data = ["--data", str(shared_data / "daily_ohlcv_stooq_sp500.csv.gz"), "--state-dir", str(tmp_path)]
    out = CliRunner().invoke(
        app, ["replay", *data, *args], env={"JAX_DATA_DIR": str(tmp_path), "COLUMNS": "250"}
    )
    assert out.exit_code == 2
    assert message in out.output
    assert not list(tmp_path.glob("replay_*.json"))  # nothing started, nothing checkpointed
