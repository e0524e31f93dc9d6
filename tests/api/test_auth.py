"""API keys against a real uvicorn on loopback, on both storage backends: who may do what."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.api.helpers import Service, serve, wait_for_run
from tests.pgutil import backend_url

from jax_assistant.api import create_app
from jax_assistant.config import ApiConfig, Settings
from jax_assistant.service import auth
from jax_assistant.service.auth import ApiKeyStore, ApiScope
from jax_assistant.storage import open_database

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with backend_url(request.param, tmp_path) as url:
        yield url


async def make_keys(url: str) -> dict[str, str]:
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


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def secured(db_url: str) -> AsyncIterator[tuple[Service, dict[str, str]]]:
    keys = await make_keys(db_url)
    settings = Settings(database_url=db_url, api=ApiConfig(auth="required"))
    async with serve(create_app(settings)) as svc:
        yield svc, keys


async def test_mutating_routes_need_a_write_key(secured: tuple[Service, dict[str, str]]) -> None:
    svc, keys = secured
    client = svc.client
    body = {"symbols": ["ACME.SIM"]}

    missing = await client.post("/process", json=body)
    assert missing.status_code == 401
    assert "Bearer" in missing.json()["error"] and missing.json()["requiredScope"] == "write"
    assert missing.headers["www-authenticate"].startswith("Bearer")

    for bad in ({"Authorization": "Basic dXNlcjpwdw=="}, bearer("nonsense"), bearer(keys["revoked"])):
        resp = await client.post("/process", json=body, headers=bad)
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"]

    forbidden = await client.post("/process", json=body, headers=bearer(keys["read"]))
    assert forbidden.status_code == 403
    assert "read" in forbidden.json()["error"] and "write" in forbidden.json()["error"]

    runs_before = (await client.get("/runs")).json()
    assert runs_before == []  # nothing refused left a run behind

    for scope in ("write", "admin"):
        accepted = await client.post("/process", json=body, headers=bearer(keys[scope]))
        assert accepted.status_code == 202, accepted.text
        done = await wait_for_run(client, accepted.json()["runId"])
        assert done["run"]["status"] == "completed"

    via_header = await client.post("/process", json=body, headers={"X-API-Key": keys["write"]})
    assert via_header.status_code == 202


async def test_reads_open_by_default_probes_always_and_the_audit_needs_admin(
    secured: tuple[Service, dict[str, str]],
) -> None:
    svc, keys = secured
    client = svc.client
    for path in ("/health", "/status", "/runs", "/trades", "/openapi.json"):
        assert (await client.get(path)).status_code == 200, path
    assert (await client.get("/audit")).status_code == 401
    assert (await client.get("/audit", headers=bearer(keys["write"]))).status_code == 403
    assert (await client.get("/audit", headers=bearer(keys["admin"]))).status_code == 200


async def test_read_auth_keys_the_reads_too(db_url: str) -> None:
    keys = await make_keys(db_url)
    settings = Settings(database_url=db_url, api=ApiConfig(auth="required", read_auth=True))
    async with serve(create_app(settings)) as svc:
        assert (await svc.client.get("/runs")).status_code == 401
        assert (await svc.client.get("/runs", headers=bearer(keys["read"]))).status_code == 200
        assert (await svc.client.get("/runs", headers=bearer(keys["write"]))).status_code == 200
        assert (await svc.client.get("/health")).status_code == 200  # a probe has no key


async def test_a_revoked_key_is_refused_by_the_running_service(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "CACHE_TTL_S", 0.0)
    keys = await make_keys(db_url)
    settings = Settings(database_url=db_url, api=ApiConfig(auth="required"))
    async with serve(create_app(settings)) as svc:
        headers = bearer(keys["write"])
        ok = await svc.client.post("/process", json={"symbols": ["ACME.SIM"]}, headers=headers)
        assert ok.status_code == 202
        await wait_for_run(svc.client, ok.json()["runId"])
        key_id = keys["write"].split("_")[1]
        store = ApiKeyStore(svc.app.state.orchestrator.db)
        assert await store.revoke(key_id)
        again = await svc.client.post("/process", json={"symbols": ["ACME.SIM"]}, headers=headers)
        assert again.status_code == 401


async def test_openapi_declares_the_bearer_scheme(secured: tuple[Service, dict[str, str]]) -> None:
    svc, _ = secured
    spec = (await svc.client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    process = spec["paths"]["/process"]["post"]
    assert process["security"] == [{"bearerAuth": []}]
    assert {"401", "403"} <= set(process["responses"])
    assert "security" not in spec["paths"]["/health"]["get"]
    assert "security" not in spec["paths"]["/runs"]["get"]  # reads are open with these settings
    assert spec["paths"]["/audit"]["get"]["security"] == [{"bearerAuth": []}]


async def test_auth_off_serves_without_keys(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'off.db'}", api=ApiConfig(auth="off"))
    async with serve(create_app(settings)) as svc:
        resp = await svc.client.post("/process", json={"symbols": ["ACME.SIM"]})
        assert resp.status_code == 202
        await wait_for_run(svc.client, resp.json()["runId"])
        spec = (await svc.client.get("/openapi.json")).json()
        assert "security" not in spec["paths"]["/process"]["post"]


def jax(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jax_assistant", *args], capture_output=True, text=True, env=env, timeout=120
    )


async def test_jax_keys_cli_makes_a_key_the_service_accepts(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "JAX_DATABASE_URL": url}
    made = jax("keys", "create", "--name", "ci", "--scope", "write", "--json", env=env)
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["scopes"] == ["write"] and created["key"].startswith("jaxk_")

    listed = jax("keys", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["id"] == created["id"] and row["revoked_at"] is None
    assert created["key"] not in listed.stdout

    bad = jax("keys", "create", "--name", "x", "--scope", "root", env=env)
    assert bad.returncode == 2 and "scope 'root'" in bad.stderr

    settings = Settings(database_url=url, api=ApiConfig(auth="required"))
    async with serve(create_app(settings)) as svc:
        resp = await svc.client.post("/process", json={}, headers=bearer(created["key"]))
        assert resp.status_code == 202, resp.text
        await wait_for_run(svc.client, resp.json()["runId"])

    revoked = jax("keys", "revoke", created["id"], env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert jax("keys", "revoke", created["id"], env=env).returncode == 2
    (row,) = json.loads(jax("keys", "list", "--json", env=env).stdout)
    assert row["revoked_at"] is not None
