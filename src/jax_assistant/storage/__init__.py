"""Persistence: SQLite or PostgreSQL through SQLAlchemy's async engine, schema managed by Alembic.

``db = await open_database()`` resolves the URL, migrates to head and returns a ``Database``;
``Repository(db)`` stores and loads the domain objects.
"""

from jax_assistant.storage.db import Database, open_database, resolve_database_url
from jax_assistant.storage.repository import CheckpointRow, DeadLetter, DeadLetterStatus, Repository

__all__ = [
    "CheckpointRow",
    "Database",
    "DeadLetter",
    "DeadLetterStatus",
    "Repository",
    "open_database",
    "resolve_database_url",
]
