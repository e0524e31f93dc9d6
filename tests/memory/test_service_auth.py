"""jax-memory behind the orchestrator's API keys and request limits (``service.harden``), on a real
uvicorn on loopback; its key store on SQLite and PostgreSQL. And the ``remote`` backend with and
without ``memory.api_key``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from tests.memory.svc import MemoryService, decision, memory_service
from tests.pgutil import backend_url

from jax_assistant.config import ApiConfig, MemoryConfig, Settings
from jax_assistant.domain import SymbolStatus
from jax_assistant.domain.errors import ConfigError
from jax_assistant.memory import Memory
from jax_assistant.memory.base import MemoryUnavailableError
from jax_assistant.memory.remote import MemoryAuthError, RemoteBackend, open_backend
from jax_assistant.orchestrator import Orchestrator, RunRequest
from jax_assistant.service.auth import ApiKeyStore, ApiScope
from jax_assistant.storage import open_database

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
BANK = "trade_decisions"
SYMBOLS = ["ACME.SIM", "BOLT.SIM", "BYTE.SIM", "MEDX.SIM"]
MAX_BODY = 200_000  # above a four-symbol run's retain_many, below the shipped 1 MB


@dataclass
class Secured:
    svc: MemoryService
    keys: dict[str, str]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def make_keys(url: str) -> dict[str, str]:
    """A key of each scope and a revoked admin key, in the service's own database."""
    db = await open_database(url)
    try:
        store = ApiKeyStore(db)
        keys = {s.value: (await store.create(f"{s.value}-key", [s]))[1] for s in ApiScope}
        row, revoked = await store.create("old", [ApiScope.ADMIN])
        await store.revoke(row.id)
        keys["revoked"] = revoked
        return keys
    finally:
        await db.close()


@pytest.fixture(params=BACKENDS)
async def secured(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Secured]:
    async with backend_url(request.param, tmp_path, prefix="jax_memauth") as url:
        keys = await make_keys(url)
        # Explicit settings win over the suite's JAX_API__AUTH=off: these are the shipped defaults
        # (auth required, reads open), with a small body limit so the 413 is cheap to provoke.
        settings = Settings(api=ApiConfig(auth="required", max_body_bytes=MAX_BODY))
        async with memory_service(url, settings) as svc:
            yield Secured(svc, keys)


async def recall_ids(s: Secured) -> list[str]:
    r = await s.svc.tool("memory.recall", {"bank": BANK, "query": {"limit": 100}}, **bearer(s.keys["write"]))
    assert r.status_code == 200, r.text
    return [i["id"] for i in r.json()["output"]["items"]]


async def test_tools_need_a_write_key(secured: Secured) -> None:
    svc, keys = secured.svc, secured.keys
    retain = {"bank": BANK, "item": decision("AAPL", 1)}

    missing = await svc.tool("memory.retain", retain)
    assert missing.status_code == 401, missing.text
    assert missing.json()["requiredScope"] == "write"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.headers["x-correlation-id"]  # the refusal still carries the request's id

    for bad in ("nonsense", keys["revoked"]):
        resp = await svc.tool("memory.retain", retain, **bearer(bad))
        assert resp.status_code == 401, resp.text

    forbidden = await svc.tool("memory.retain", retain, **bearer(keys["read"]))
    assert forbidden.status_code == 403, forbidden.text
    assert "read" in forbidden.json()["error"] and "write" in forbidden.json()["error"]
    assert await recall_ids(secured) == []  # nothing refused was stored

    ok = await svc.tool("memory.retain", retain, **bearer(keys["write"]))
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"output": {"id": "decision:AAPL:1"}}
    # Recall and reflect are POSTs too: a write key (what the orchestrator's remote backend holds).
    assert (await svc.tool("memory.recall", {"bank": BANK, "query": {}})).status_code == 401
    assert await recall_ids(secured) == ["decision:AAPL:1"]
    admin = await svc.tool("memory.recall", {"bank": BANK, "query": {}}, **bearer(keys["admin"]))
    assert admin.status_code == 200  # admin covers write


async def test_hindsight_routes_are_guarded_the_same_way(secured: Secured) -> None:
    client, keys = secured.svc.client, secured.keys
    path = f"/v1/default/banks/{BANK}/memories"
    body = {"items": [{"content": "AAPL gap up, long allowed", "metadata": {"symbol": "AAPL"}}]}
    assert (await client.post(path, json=body)).status_code == 401
    assert (await client.post(path, json=body, headers=bearer(keys["read"]))).status_code == 403
    r = await client.post(path, json=body, headers=bearer(keys["write"]))
    assert r.status_code == 200, r.text
    patch = await client.patch(f"{path}/some-id", json={"state": "invalidated"})
    assert patch.status_code == 401


async def test_probes_are_open_reads_open_audit_is_admin(secured: Secured) -> None:
    client, keys = secured.svc.client, secured.keys
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/ready")).status_code == 200
    banks = await client.get("/v1/memory/banks")
    assert banks.status_code == 200 and BANK in banks.json()  # api.read_auth is off by default

    assert (await client.get("/audit")).status_code == 401
    assert (await client.get("/audit", headers=bearer(keys["write"]))).status_code == 403
    audit = await client.get("/audit", headers=bearer(keys["admin"]))
    assert audit.status_code == 200 and isinstance(audit.json(), list)


async def test_openapi_declares_the_bearer_scheme(secured: Secured) -> None:
    doc = (await secured.svc.client.get("/openapi.json")).json()
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert doc["paths"]["/tools"]["post"]["security"] == [{"bearerAuth": []}]
    assert "security" not in doc["paths"]["/health"]["get"]


async def test_body_over_the_limit_is_413_and_stores_nothing(secured: Secured) -> None:
    item = decision("AAPL", 1)
    item["summary"] = "x" * 400
    items = [{**item, "id": f"decision:AAPL:big{n}"} for n in range(400)]  # ~400 KB, over MAX_BODY
    r = await secured.svc.tool(
        "memory.retain_many", {"bank": BANK, "items": items}, **bearer(secured.keys["write"])
    )
    assert r.status_code == 413, r.text
    assert r.json()["limit"] == MAX_BODY
    assert await recall_ids(secured) == []


async def test_deep_json_is_422_naming_the_rule_and_stores_nothing(secured: Secured) -> None:
    nested: Any = "leaf"
    for _ in range(40):  # the default api.max_json_depth is 32
        nested = {"d": nested}
    item = {**decision("AAPL", 1), "data": nested}
    body = json.dumps({"tool": "memory.retain", "input": {"bank": BANK, "item": item}})
    r = await secured.svc.client.post(
        "/tools",
        content=body,
        headers={"Content-Type": "application/json", **bearer(secured.keys["write"])},
    )
    assert r.status_code == 422, r.text
    assert "max_json_depth" in r.text
    assert await recall_ids(secured) == []


async def test_untrusted_host_is_refused(secured: Secured) -> None:
    r = await secured.svc.client.get("/health", headers={"Host": "evil.example"})
    assert r.status_code in (400, 421), r.text


async def test_remote_backend_with_api_key_works(secured: Secured) -> None:
    settings = Settings(
        memory=MemoryConfig(
            backend="remote", url=secured.svc.url, timeout_s=10.0, api_key=SecretStr(secured.keys["write"])
        )
    )
    assert secured.keys["write"] not in repr(settings) + str(settings.model_dump())  # never logged
    memory = Memory(await open_backend(settings))
    try:
        assert await memory.retain(decision("MSFT", 2), bank=BANK) == "decision:MSFT:2"
        [hit] = await memory.recall({"symbol": "MSFT"}, bank=BANK)
        assert hit.id == "decision:MSFT:2"
        assert (await memory.health()).ok
    finally:
        await memory.close()


@pytest.mark.parametrize(
    ("key", "status", "hint"), [(None, 401, "set memory.api_key"), ("read", 403, "scope")]
)
async def test_remote_backend_refused_key_is_a_config_error(
    secured: Secured, key: str | None, status: int, hint: str
) -> None:
    api_key = secured.keys[key] if key else None
    memory = Memory(RemoteBackend(secured.svc.url, timeout_s=10.0, api_key=api_key))
    try:
        with pytest.raises(MemoryAuthError) as caught:
            await memory.retain(decision("AAPL", 1), bank=BANK)
        err = caught.value
        assert isinstance(err, ConfigError) and not isinstance(err, MemoryUnavailableError)
        assert err.status == status and err.key == "memory.api_key"
        assert f"HTTP {status}" in str(err) and hint in str(err)
        if api_key:
            assert api_key not in str(err)
    finally:
        await memory.close()
    assert await recall_ids(secured) == []


async def test_remote_backend_down_is_still_unavailable_not_auth() -> None:
    # Distinct failure: nothing listening (port 9, discard) is MemoryUnavailableError (the outbox
    # retries it), key or no key.
    memory = Memory(RemoteBackend("http://127.0.0.1:9", timeout_s=1.0, api_key="jaxk_000000000000_secret"))
    try:
        with pytest.raises(MemoryUnavailableError):
            await memory.retain(decision("AAPL", 1), bank=BANK)
    finally:
        await memory.close()


async def test_a_run_without_the_key_keeps_its_decisions_in_the_outbox_until_the_key_is_set(
    secured: Secured, tmp_path: Path
) -> None:
    def settings(key: str | None) -> Settings:
        return Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'orchestrator.db'}",
            lookback=20,
            memory=MemoryConfig(
                backend="remote",
                url=secured.svc.url,
                timeout_s=10.0,
                api_key=SecretStr(key) if key else None,
            ),
        )

    async with Orchestrator(settings(None)) as orch:
        outcome = await orch.start_run(RunRequest(symbols=SYMBOLS))
        assert orch.memory_outbox is not None
        kept = await orch.memory_outbox.depth()
    assert {r.status for r in outcome.results} == {SymbolStatus.DEGRADED}
    for result in outcome.results:
        retain = next(s for s in result.stages if s.stage == "retain_memory")
        assert retain.status == "degraded", retain
        assert "outbox" in (retain.reason or "") and "memory.api_key" in (retain.reason or "")
        assert next(s for s in result.stages if s.stage == "persist").status == "ok"
    assert kept > 0 and await recall_ids(secured) == []

    async with Orchestrator(settings(secured.keys["write"])) as orch:
        again = await orch.start_run(RunRequest(symbols=SYMBOLS))
        assert orch.memory_outbox is not None
        assert await orch.memory_outbox.depth() == 0
    assert all(r.status is SymbolStatus.SUCCEEDED for r in again.results)
    assert len(await recall_ids(secured)) >= kept  # what the first run kept arrived
