"""API keys: stored hashed, verified in constant time, scopes ordered read < write < admin."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from jax_assistant.domain.errors import InputError
from jax_assistant.service import auth
from jax_assistant.service.auth import ApiKeyStore, ApiScope, Authenticator, grants, hash_key, parse_scope
from jax_assistant.storage import Database
from jax_assistant.storage.tables import ApiKeyRow


async def test_create_stores_only_the_hash_and_lists_without_it(db: Database) -> None:
    store = ApiKeyStore(db)
    row, key = await store.create("ci", [ApiScope.WRITE, ApiScope.READ, ApiScope.WRITE])
    assert key.startswith(f"jaxk_{row.id}_")
    assert row.scopes == [ApiScope.READ, ApiScope.WRITE]  # deduplicated, ordered
    async with db.engine.connect() as conn:
        stored = (await conn.execute(select(ApiKeyRow.__table__))).one()._mapping
    assert stored["key_hash"] == hash_key(key)
    assert key not in {str(v) for v in stored.values()}
    (listed,) = await store.list()
    assert (listed.id, listed.name, listed.active) == (row.id, "ci", True)


async def test_verify_accepts_the_key_and_refuses_a_wrong_secret_or_a_revoked_key(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "CACHE_TTL_S", 0.0)  # every verify reads the row: revocation is seen at once
    store = ApiKeyStore(db)
    row, key = await store.create("bot", [ApiScope.READ])
    verifier = Authenticator(lambda: store)
    assert (await verifier.verify(key)) is not None
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert await verifier.verify(tampered) is None
    assert await verifier.verify("jaxk_000000000000_" + "x" * 43) is None  # unknown id
    assert await verifier.verify("not-a-key") is None
    assert await store.revoke(row.id) is True
    assert await store.revoke(row.id) is False  # already revoked
    assert await verifier.verify(key) is None
    (listed,) = await store.list()
    assert listed.revoked_at is not None


async def test_a_cached_key_is_read_again_after_the_ttl(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ApiKeyStore(db)
    row, key = await store.create("bot", [ApiScope.ADMIN])
    reads = 0

    class Counting:
        async def get(self, key_id: str) -> auth.ApiKey | None:
            nonlocal reads
            reads += 1
            return await store.get(key_id)

    verifier = Authenticator(Counting)
    for _ in range(5):
        assert await verifier.verify(key) is not None
    assert reads == 1
    monkeypatch.setattr(auth, "CACHE_TTL_S", -1.0)  # every entry is now stale
    await store.revoke(row.id)
    assert await verifier.verify(key) is None
    assert reads == 2


async def test_bad_name_or_no_scope_is_refused(db: Database) -> None:
    store = ApiKeyStore(db)
    with pytest.raises(InputError, match="name"):
        await store.create("  ", [ApiScope.READ])
    with pytest.raises(InputError, match="scope"):
        await store.create("x", [])
    assert await store.list() == []


def test_scopes_are_ordered_and_parsed() -> None:
    assert grants(["admin"], ApiScope.WRITE) and grants(["admin"], ApiScope.READ)
    assert grants(["write"], ApiScope.READ) and not grants(["write"], ApiScope.ADMIN)
    assert not grants(["read"], ApiScope.WRITE)
    assert not grants(["bogus"], ApiScope.READ)
    assert parse_scope(" Write ") is ApiScope.WRITE
    with pytest.raises(InputError) as info:
        parse_scope("root")
    assert info.value.field == "scope"


async def test_a_burst_that_finds_the_entry_stale_shares_one_read(db: Database) -> None:
    store = ApiKeyStore(db)
    _, key = await store.create("bot", [ApiScope.WRITE])
    reads = 0
    gate = asyncio.Event()

    class Slow:
        async def get(self, key_id: str) -> auth.ApiKey | None:
            nonlocal reads
            reads += 1
            await gate.wait()
            return await store.get(key_id)

    verifier = Authenticator(Slow)
    burst = [asyncio.create_task(verifier.verify(key)) for _ in range(20)]
    await asyncio.sleep(0.01)
    burst[0].cancel()  # one caller going away leaves the read to the rest
    gate.set()
    results = await asyncio.gather(*burst[1:])
    assert reads == 1 and all(r is not None for r in results)

    class Broken:
        async def get(self, key_id: str) -> auth.ApiKey | None:
            raise OSError("database gone")

    failing = Authenticator(Broken)
    outcomes = await asyncio.gather(*(failing.verify(key) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(o, OSError) for o in outcomes)  # each caller sees the failure, as before
