"""POST /process with the allocate barrier: the same decisions at concurrency 1 and 8, run after run.

Needs the engine's run-level stage support (the barrier) merged."""

from __future__ import annotations

import json
from pathlib import Path

from tests.api.helpers import serve, wait_for_run

from jax_assistant.api import create_app
from jax_assistant.config import EngineConfig, Settings


async def test_api_runs_at_concurrency_1_and_8_give_identical_decisions(tmp_path: Path) -> None:
    limits = tmp_path / "risk-constraints.json"
    limits.write_text(json.dumps({"portfolio_constraints": {"max_positions": 3}}), encoding="utf-8")
    outs = []
    for i, concurrency in enumerate((1, 8, 8)):
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / f'api{i}.db'}",
            engine=EngineConfig(concurrency=concurrency),
            risk_constraints_path=limits,
        )
        async with serve(create_app(settings)) as svc:
            run_id = (await svc.client.post("/process", json={})).json()["runId"]
            body = await wait_for_run(svc.client, run_id)
        assert body["run"]["status"] == "completed"
        trades = {t["setup"]["id"]: t["risk"] for s in body["symbols"] for t in s["trades"]}
        assert sum(1 for r in trades.values() if r["constraints"]["allowed"]) == 3
        outs.append(json.dumps(trades, sort_keys=True))
    assert outs[0] == outs[1] == outs[2]
