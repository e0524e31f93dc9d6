"""The SQLite schema at the head revision, as the DDL statements that build it, shipped with the package.

A new SQLite database (every first `jax run`, every fresh test database) would otherwise import Alembic
and replay every migration, ~0.3 s of a run that needs ~2 s. ``storage.db.migrate`` creates an *empty*
SQLite database from these statements instead, in one locked transaction, and stamps the head revision;
anything else (an older schema, PostgreSQL, an explicit revision) still goes through Alembic.

The statements are generated from the migrations themselves, never written by hand:

    python -m jax_assistant.storage.snapshot          # rewrites migrations/sqlite_head.json

A test rebuilds them from the migrations and fails when the shipped file differs (a new migration
must regenerate it), and compares the full dump of both databases.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from functools import cache
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict

SNAPSHOT_PATH: Final = Path(__file__).resolve().with_name("migrations") / "sqlite_head.json"


class SchemaSnapshot(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    revision: str
    statements: tuple[str, ...]


@cache
def load_snapshot() -> SchemaSnapshot:
    return SchemaSnapshot.model_validate_json(SNAPSHOT_PATH.read_bytes())


def schema_statements(path: Path) -> list[str]:
    """The DDL that rebuilds the schema of the SQLite file ``path``, in creation order.

    ``sqlite_master`` keeps each object's creating statement verbatim (columns added later are part of
    the table's text). Objects SQLite makes by itself are left out: automatic indexes (no SQL) and the
    shadow tables of an FTS5 table, which its ``CREATE VIRTUAL TABLE`` creates again.
    """
    con = sqlite3.connect(path)
    try:
        query = "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
        rows = con.execute(query).fetchall()
    finally:
        con.close()
    scratch = sqlite3.connect(":memory:")
    try:
        out: list[str] = []
        for name, sql in rows:
            made = scratch.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone()
            if made is None:
                scratch.execute(sql)
                out.append(str(sql))
        return out
    finally:
        scratch.close()


async def _alembic_head(path: Path) -> str:
    from jax_assistant.storage.db import _migrate_with, build_engine

    engine = build_engine(f"sqlite+aiosqlite:///{path}", for_migrations=True)
    try:
        await _migrate_with(engine, "head")
    finally:
        await engine.dispose()
    con = sqlite3.connect(path)
    try:
        (revision,) = con.execute("SELECT version_num FROM alembic_version").fetchone()
    finally:
        con.close()
    return str(revision)


def build_snapshot() -> SchemaSnapshot:
    """Run every migration (Alembic) on a new SQLite file and read back the schema it made."""
    with tempfile.TemporaryDirectory(prefix="jax-schema-") as tmp:
        path = Path(tmp) / "head.db"
        revision = asyncio.run(_alembic_head(path))
        return SchemaSnapshot(revision=revision, statements=tuple(schema_statements(path)))


def render(snapshot: SchemaSnapshot) -> str:
    return json.dumps(snapshot.model_dump(), indent=1) + "\n"


def main() -> None:
    snapshot = build_snapshot()
    SNAPSHOT_PATH.write_text(render(snapshot), encoding="utf-8")
    print(f"wrote {SNAPSHOT_PATH} ({snapshot.revision}, {len(snapshot.statements)} statements)")


if __name__ == "__main__":
    main()
