"""POST /ingest on a real uvicorn: a mixed batch, memory written, a run triggered, an idempotent re-send."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from tests.api.helpers import serve
from tests.ingest.batches import EXPECTED, SIGNIFICANT_SYMBOLS, mixed_batch, outcome_tuples

from jax_assistant.api import create_app
from jax_assistant.config import Settings
from jax_assistant.memory import open_memory
from jax_assistant.storage import open_database
from jax_assistant.storage.tables import IngestedObservationRow

pytestmark = pytest.mark.usefixtures("api_auth_off")


async def _stored_keys(url: str) -> list[str]:
    db = await open_database(url)
    try:
        async with db.engine.connect() as conn:
            return sorted((await conn.execute(sa.select(IngestedObservationRow.key))).scalars())
    finally:
        await db.close()


async def _memories(settings: Settings) -> dict[str, list[Any]]:
    async with await open_memory(settings) as memory:
        return {
            bank: await memory.recall({"tags": ["ingest"], "limit": 50}, bank=bank)
            for bank in ("signals", "market_events")
        }


async def _finished(client: Any, run_id: str) -> dict[str, Any]:
    for _ in range(600):
        run = (await client.get(f"/runs/{run_id}")).json()["run"]
        if run["status"] not in ("pending", "running"):
            return dict(run)
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish")


async def test_mixed_batch_outcomes_memory_processing_and_idempotent_resend(database_url: str) -> None:
    settings = Settings(database_url=database_url)
    app = create_app(settings, resume_on_startup=False)
    async with serve(app) as svc:
        resp = await svc.client.post(
            "/ingest", json=mixed_batch(), headers={"X-Correlation-ID": "corr_ingest_one"}
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert resp.headers["x-correlation-id"] == "corr_ingest_one" == body["correlation_id"]
        assert outcome_tuples(body["items"]) == EXPECTED
        assert (body["received"], body["accepted"], body["duplicates"], body["rejected"]) == (10, 4, 1, 5)
        assert body["items"][5]["errors"][0]["message"] == "Input should be less than or equal to 1"
        assert "required for type price_gap" in body["items"][7]["errors"][0]["message"]

        # Processing: one run of the significant symbols, under the request's correlation ID.
        processing = body["processing"]
        assert processing["symbols"] == SIGNIFICANT_SYMBOLS and processing["run_id"]
        run = await _finished(svc.client, processing["run_id"])
        assert run["correlationId"] == "corr_ingest_one" and run["symbols"] == SIGNIFICANT_SYMBOLS
        assert run["status"] == "completed"

        # Every observation audited under the correlation ID, with its outcome.
        audit = (await svc.client.get("/audit", params={"correlation_id": "corr_ingest_one"})).json()
        ingest_audit = [a for a in audit if a["action"] == "ingest.observation"]
        assert sorted((a["payload"]["index"], a["outcome"]) for a in ingest_audit) == [
            (0, "success"),
            (1, "success"),
            (2, "success"),
            (3, "success"),
            (4, "rejected"),
            (5, "rejected"),
            (6, "rejected"),
            (7, "rejected"),
            (8, "skipped"),
            (9, "rejected"),
        ]

        keys = await _stored_keys(database_url)
        assert keys == sorted(i["key"] for i in body["items"][:4])
        memories = await _memories(settings)
        assert [(m.symbol, m.type, m.source.ref) for m in memories["signals"]] == [
            ("ACME.SIM", "price_gap", body["items"][0]["key"])
        ]
        assert sorted((m.symbol, m.type) for m in memories["market_events"]) == [
            ("BOLT.SIM", "news_headline"),
            ("BYTE.SIM", "earnings"),
        ]
        gap = memories["signals"][0]
        assert (
            gap.data is not None
            and gap.data["impact_estimate"] == -0.8
            and gap.data["correlationId"] == "corr_ingest_one"
        )

        # The same batch again (another request): nothing stored twice, nothing re-run.
        again = (
            await svc.client.post(
                "/ingest", json=mixed_batch(), headers={"X-Correlation-ID": "corr_ingest_two"}
            )
        ).json()
        assert [i["status"] for i in again["items"]] == ["duplicate"] * 4 + ["rejected"] * 3 + [
            "rejected",
            "duplicate",
            "rejected",
        ]
        assert again["processing"] is None
        assert await _stored_keys(database_url) == keys
        assert {b: len(v) for b, v in (await _memories(settings)).items()} == {
            "signals": 1,
            "market_events": 2,
        }
        runs = (await svc.client.get("/runs")).json()
        assert len(runs if isinstance(runs, list) else runs["runs"]) == 1


async def test_bad_envelope_is_refused_naming_the_field(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url), resume_on_startup=False)
    async with serve(app) as svc:
        missing = await svc.client.post("/ingest", json={"observations": [{"type": "news"}]})
        assert missing.status_code == 400 and missing.json()["field"] == "generated_at"
        empty = await svc.client.post(
            "/ingest", json={"generated_at": "2026-11-27T00:00:00Z", "observations": []}
        )
        assert empty.status_code == 400 and empty.json()["field"] == "observations"
        garbage = await svc.client.post(
            "/ingest", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert garbage.status_code == 400 and garbage.json()["field"] == "body"
        assert await _stored_keys(database_url) == []
