"""`jax serve`'s reflection schedule: a live service on loopback reflects on its interval and says
when in /status; the reflection is in the audit trail."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from tests.api.helpers import serve, wait_for_run

from jax_assistant.api import create_app
from jax_assistant.config import Settings
from jax_assistant.learning import service as learning

pytestmark = pytest.mark.usefixtures("api_auth_off")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(learning.last_reflection, "at", None)


async def test_service_reflects_on_its_schedule(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}",
            "learning": {"reflect_interval_s": 0.3},
        }
    )
    async with serve(create_app(settings)) as svc:
        before = (await svc.client.get("/status")).json()["learning"]
        assert before["lastReflection"] is None
        run_id = (await svc.client.post("/process", json={})).json()["runId"]
        await wait_for_run(svc.client, run_id)
        deadline = time.monotonic() + 30
        status = before
        while time.monotonic() < deadline and status["lastReflection"] is None:
            await asyncio.sleep(0.1)
            status = (await svc.client.get("/status")).json()["learning"]
        assert status["lastReflection"] is not None and status["asOf"]
        audit = (await svc.client.get("/audit", params={"correlation_id": "learning.reflect"})).json()
        assert audit and audit[0]["action"] == "learning.reflect"
        assert "weights" in audit[0]["payload"]
