"""Database location, engine set-up and schema migrations.

``open_database`` is the one entry point: it builds the async engine, brings the schema to the
newest Alembic revision and hands back a ``Database``. Migrations ship inside the package and are
driven programmatically, so an installed wheel needs no ``alembic.ini``.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import sqlite3
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
    suppress,
)
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, pool, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from jax_assistant.domain.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR: Final = Path(__file__).resolve().with_name("migrations")
# The newest migration's revision id (a test keeps it equal to Alembic's head): a start-up that finds
# the schema already there needs neither Alembic's import nor a migration pass (~0.3 s of `jax run`).
HEAD_REVISION: Final = "0008_outcomes"
DEFAULT_DATA_DIR: Final = "~/.local/share/jax-assistant"
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
# The writer thread polls for the write lock itself, from this pause doubling to the maximum, instead
# of SQLite's busy handler, which sleeps 1, 2, 5, 10, ... 100 ms: a lock another process (the executor)
# held for 3 ms then cost the waiting request 8 ms, and 50-120 ms tails under load.
LOCK_POLL_MIN_S: Final = 0.00005
LOCK_POLL_MAX_S: Final = 0.001

# Connection execution option read by the SQLite "begin" hook: which BEGIN flavour to emit.
_SQLITE_BEGIN_OPTION: Final = "jax_sqlite_begin"
# Any fixed bigint works; deriving it from a name keeps it stable and unlikely to collide.
_MIGRATION_LOCK_KEY: Final = zlib.crc32(b"jax_assistant.storage.migrations")

_SCHEME_ALIASES: Final = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


# --------------------------------------------------------------------------- URL resolution


def _data_dir() -> Path:
    path = Path(os.environ.get("JAX_DATA_DIR") or DEFAULT_DATA_DIR).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def normalise_database_url(url: str) -> str:
    """Rewrite sync driver schemes to the async drivers this package uses.

    ``postgres://``/``postgresql://`` become ``postgresql+asyncpg://`` and ``sqlite://`` becomes
    ``sqlite+aiosqlite://``. URLs that already name a driver are left alone, as are other schemes.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    scheme = _SCHEME_ALIASES.get(scheme.lower(), scheme)
    normalised = f"{scheme}{sep}{rest}"
    if scheme == "postgresql+asyncpg" and "sslmode=" in rest:
        # Hosted DATABASE_URLs carry libpq's ``sslmode``; asyncpg spells that option ``ssl``.
        parsed = make_url(normalised)
        query = dict(parsed.query)
        query["ssl"] = query.pop("sslmode")
        normalised = parsed.set(query=query).render_as_string(hide_password=False)
    return normalised


def resolve_database_url(explicit: str | None = None) -> str:
    """The database to use: ``explicit``, else ``$JAX_DATABASE_URL``, else ``$DATABASE_URL``,
    else a SQLite file ``jax.db`` in ``$JAX_DATA_DIR`` (default ``~/.local/share/jax-assistant``,
    created if missing). Empty values count as unset. The result is normalised to an async driver.
    """
    for candidate in (explicit, os.environ.get("JAX_DATABASE_URL"), os.environ.get("DATABASE_URL")):
        if candidate:
            return normalise_database_url(candidate)
    return f"sqlite+aiosqlite:///{_data_dir() / 'jax.db'}"


def mask_url(url: str | URL) -> str:
    """The URL with any password replaced by ``***`` (safe for logs)."""
    return make_url(url).render_as_string(hide_password=True)


# --------------------------------------------------------------------------- engines


def _install_sqlite_hooks(
    engine: AsyncEngine | Engine, *, foreign_keys: bool, poll_lock: bool = False
) -> None:
    """Per-connection pragmas and explicit transaction control for SQLite.

    The file may be shared by several processes, so: WAL lets readers run beside the writer,
    ``busy_timeout`` makes a writer queue for the lock instead of failing at once, and foreign
    keys (off by default in SQLite) are switched on. The sqlite3 driver's own implicit BEGIN is
    disabled in favour of ours so DDL is transactional and write transactions can take the write
    lock up front (``BEGIN IMMEDIATE``), which avoids the unretryable deferred-lock upgrade error.
    With ``poll_lock`` (pysqlite only) that ``BEGIN IMMEDIATE`` waits by ``_begin_immediate_polling``.
    """

    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock another process may hold.
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL still survives a process crash or SIGKILL (committed pages are in the
            # WAL file); only an OS crash or power loss can drop the last commits. It cuts a commit
            # from ~0.4 ms to ~0.03 ms, and every write here is idempotent and replayable on resume.
            cursor.execute("PRAGMA synchronous = NORMAL")
            # FAST: deleted content is still zeroed where that costs no extra I/O (within b-tree pages),
            # but freed pages are not rewritten with zeros. This SQLite build defaults to ON, under which
            # compacting a run (emptying its checkpoint items, 48 MB at lookback 60) wrote every freed
            # overflow page again: 0.21 s of the end of `jax run`, 0.06-0.10 s with FAST.
            cursor.execute("PRAGMA secure_delete = FAST")
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(_SQLITE_BEGIN_OPTION, "DEFERRED")
        if poll_lock and mode == "IMMEDIATE":
            _begin_immediate_polling(connection.connection.dbapi_connection)
        else:
            connection.exec_driver_sql(f"BEGIN {mode}")


def _begin_immediate_polling(dbapi_connection: Any) -> None:
    """``BEGIN IMMEDIATE``, waiting for the write lock by short sleeps (LOCK_POLL_MIN_S doubling to
    LOCK_POLL_MAX_S) up to the busy timeout, so a waiter gets the lock within a millisecond of its
    release. Only the BEGIN polls: once it holds the lock, the transaction's statements keep the busy
    handler for the rare waits left (a WAL recovery)."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = LOCK_POLL_MIN_S
    dbapi_connection.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                dbapi_connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() >= deadline:
                    # As SQLAlchemy wraps a failed statement, so callers see the usual error type.
                    raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc
            time.sleep(delay)  # releases the GIL: the event loop runs meanwhile
            delay = min(delay * 2, LOCK_POLL_MAX_S)
    finally:
        dbapi_connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")


class EncodedJson(str):
    """A JSON document already encoded (by pydantic's serializer, NaN/Infinity as null): a JSON column
    stores it as it is instead of encoding a parsed copy again. Used for the large work-item payloads
    of checkpoints and dead letters, where ``json.dumps`` was the writer's biggest cost."""

    __slots__ = ()


# What ``json.dumps(value, allow_nan=False)`` builds on every call, built once: the same encoder
# class and options, so the same text, without a JSONEncoder construction per document (a run
# encodes ~100 k of them: setups, memories, payloads). PostgreSQL rejects NaN/Infinity in JSON while
# SQLite would store them as invalid JSON; refusing them up front keeps both backends alike (the
# repository maps them to null). orjson is not used: its float format (0.00001, 1e16) and compact
# separators differ from the text already stored, and stored JSON must stay byte-identical.
_JSON_ENCODER: Final = json.JSONEncoder(allow_nan=False)


# What JSONEncoder(ensure_ascii=True) makes of a str: its JSON text.
encode_json_string: Final[Callable[[str], str]] = json.encoder.encode_basestring_ascii
# The C encoder JSONEncoder itself uses (None without the _json accelerator).
_make_encoder: Final[Callable[..., Callable[[Any, int], list[str]]] | None] = getattr(
    json.encoder, "c_make_encoder", None
)


def encode_json(value: Any) -> str:
    if isinstance(value, EncodedJson):
        return str.__str__(value)
    if isinstance(value, str) or _make_encoder is None:
        return _JSON_ENCODER.encode(value)
    # JSONEncoder.encode's own one-shot path (the C encoder, ": " and ", ", NaN refused, a fresh
    # circular-reference memo), without the Python frames around it: a quarter of its time for the
    # small documents a run writes most (stage results, audit payloads).
    encode = _make_encoder(
        {}, _JSON_ENCODER.default, encode_json_string, None, ": ", ", ", False, False, False
    )
    return "".join(encode(value, 0))


def build_engine(url: str, *, for_migrations: bool = False, **kwargs: Any) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url`` (normalised) with this package's SQLite settings applied.

    ``for_migrations`` gives a pool-less engine whose SQLite connections have foreign keys off,
    since table rebuilds in batch migrations would otherwise cascade deletes into child tables.
    """
    url = normalise_database_url(url)
    kwargs.setdefault("json_serializer", encode_json)
    if for_migrations:
        kwargs.setdefault("poolclass", pool.NullPool)
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _install_sqlite_hooks(engine, foreign_keys=not for_migrations)
    return engine


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction meant for writing; commits on success, rolls back on error.

    On SQLite the transaction starts with ``BEGIN IMMEDIATE`` so concurrent writers wait on
    ``busy_timeout`` for their turn rather than failing midway.
    """
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn = await conn.execution_options(**{_SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        async with conn.begin():
            yield conn


def build_sync_writer(url: str) -> Engine | None:
    """For a SQLite file: a synchronous engine the group-commit writer runs whole batches on, in one
    worker thread, so a batch costs one thread hop instead of several per statement (aiosqlite hops
    for every cursor call). None for other databases (asyncpg is natively async) and for in-memory
    SQLite (a second engine would open a different, empty database)."""
    parsed = make_url(normalise_database_url(url))
    if parsed.get_backend_name() != "sqlite" or _is_sqlite_memory(url):
        return None
    engine = create_engine(
        parsed.set(drivername="sqlite+pysqlite"),
        json_serializer=encode_json,
        # One connection, used only from the writer's own thread.
        poolclass=pool.QueuePool,
        pool_size=1,
        max_overflow=0,
        connect_args={"check_same_thread": False},
    )
    _install_sqlite_hooks(engine, foreign_keys=True, poll_lock=True)
    return engine


# --------------------------------------------------------------------------- migrations


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` pointing at the migrations bundled in this package (no ini file)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # Config values go through configparser interpolation; a literal '%' must be doubled.
        cfg.set_main_option("sqlalchemy.url", normalise_database_url(url).replace("%", "%%"))
    return cfg


def _upgrade_on(connection: Connection, cfg: Config, revision: str) -> None:
    from alembic import command

    # env.py runs the migrations on this connection instead of opening its own.
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


# Alembic keeps its migration context in module globals, so two upgrades interleaving on one
# event loop (even on different databases) would trample each other: serialise them per loop.
_loop_migration_locks: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = WeakKeyDictionary()


def _loop_migration_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _loop_migration_locks.get(loop)
    if lock is None:
        lock = _loop_migration_locks[loop] = asyncio.Lock()
    return lock


async def _migrate_with(engine: AsyncEngine, revision: str) -> None:
    async with _loop_migration_lock(), write_transaction(engine) as conn:
        if engine.dialect.name == "postgresql":
            # Held until commit: a second process blocks here, then finds the schema at head.
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        await conn.run_sync(_upgrade_on, alembic_config(), revision)


async def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the schema at ``url`` to ``revision``.

    Safe to call every start-up: at head it is a no-op. The whole upgrade runs in one transaction
    holding an exclusive lock (PostgreSQL advisory lock, SQLite ``BEGIN IMMEDIATE``), so processes
    starting together migrate one after the other and the later ones find nothing to do.
    """
    engine = build_engine(url, for_migrations=True)
    try:
        if revision == "head":
            stored = await _stored_revisions(engine)
            if stored == [HEAD_REVISION]:
                return
            if stored is None and engine.dialect.name == "sqlite" and await _create_from_snapshot(engine):
                return
        await _migrate_with(engine, revision)
    finally:
        await engine.dispose()


async def _create_from_snapshot(engine: AsyncEngine) -> bool:
    """Build an *empty* SQLite database's schema from the shipped head snapshot (storage/snapshot.py),
    without Alembic; False (nothing done) when the database holds anything or the snapshot is not
    of the head revision, and Alembic decides. Under the same lock as an upgrade, so of processes
    creating one file together one builds it and the others find it at head."""
    from jax_assistant.storage.snapshot import load_snapshot

    snapshot = load_snapshot()
    if snapshot.revision != HEAD_REVISION:
        return False

    def create(conn: Connection) -> bool:
        if conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar():
            return False
        for statement in snapshot.statements:
            conn.exec_driver_sql(statement)
        conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES (?)", (HEAD_REVISION,))
        return True

    async with _loop_migration_lock(), write_transaction(engine) as conn:
        return await conn.run_sync(create)


async def _stored_revisions(engine: AsyncEngine) -> list[str] | None:
    """The revision ids in ``alembic_version`` (what Alembic itself reads), None when unreadable.

    A read only: whenever it is not exactly the head, the locked upgrade decides (and re-reads under
    its lock), so processes starting together still migrate once.
    """
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
            return sorted(str(r[0]) for r in rows)
    except DBAPIError:  # no such table yet (an empty database), or anything else: let Alembic see it
        return None


def _is_sqlite_memory(url: str) -> bool:
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and (
        not parsed.database or ":memory:" in parsed.database or parsed.query.get("mode") == "memory"
    )


# --------------------------------------------------------------------------- Database

_T = TypeVar("_T")


@dataclass(slots=True, eq=False)
class _Job:
    fn: Callable[[Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    group: bool


def _settle(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """On the submitting loop: hand each job its result (a waiter cancelled meanwhile is skipped)."""
    for future, ok, value in outcomes:
        if not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


class _WriterThread:
    """The one SQLite writer thread, with a priority lane: an urgent transaction (a run's creation,
    which a 202 waits for) goes before queued ordinary ones (runs' group-commit batches), so accepting
    a run never waits behind the writes of the runs already executing, only behind the one batch in
    progress. FIFO within each lane.

    Urgent ``group`` jobs waiting one behind the other share one transaction (group commit): with 20
    requests accepted together, one commit (and one lock wait) instead of 20. Each runs in a savepoint
    of its own, so one that raises fails alone, and every result is handed back only after the commit.

    The hand-off is built for the accept path, where it was 15 % of a request's CPU: the loop appends
    to a deque (atomic under the GIL, no lock) and wakes the thread with a token on a ``SimpleQueue``;
    the thread answers with asyncio futures settled by one ``call_soon_threadsafe`` per transaction,
    not a ``concurrent.futures.Future`` per job wrapped by ``asyncio.wrap_future`` (a lock, a condition
    and a callback hop each). ``bench/writer_handoff.py`` measures it.
    """

    def __init__(self, transaction: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._transaction = transaction
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._urgent: deque[_Job] = deque()
        self._normal: deque[_Job] = deque()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="jax-sqlite-writer", daemon=True)
        self._thread.start()

    def submit(
        self, fn: Callable[[Connection], _T], *, urgent: bool, group: bool = False
    ) -> asyncio.Future[_T]:
        """Queue ``fn``; the future resolves on the calling (running) loop after the commit."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        (self._urgent if urgent else self._normal).append(_Job(fn, future, loop, group and urgent))
        self._wake.put(None)  # one token per job: the thread never sleeps with a job queued
        return future

    def shutdown(self) -> None:
        """Finish every queued transaction, then end the thread."""
        self._stopping = True
        self._wake.put(None)
        self._thread.join()

    def _next(self) -> list[_Job] | None:
        while True:
            if self._urgent:
                jobs = [self._urgent.popleft()]
                while jobs[0].group and self._urgent and self._urgent[0].group:
                    jobs.append(self._urgent.popleft())
                return jobs
            if self._normal:
                return [self._normal.popleft()]
            if self._stopping:
                return None
            self._wake.get()  # tokens outnumber jobs taken in groups: a spare one only loops again

    def _loop(self) -> None:
        while (jobs := self._next()) is not None:
            live = [job for job in jobs if not job.future.cancelled()]
            if len(live) == 1 and not live[0].group:
                self._run_alone(live[0])
            elif live:
                self._run_group(live)

    def _run_alone(self, job: _Job) -> None:
        try:
            with self._transaction() as conn:
                result = job.fn(conn)
        except BaseException as exc:
            self._hand_back([(job, False, exc)])
        else:
            self._hand_back([(job, True, result)])

    def _run_group(self, jobs: list[_Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self._transaction() as conn:
                for job in jobs:
                    savepoint = conn.begin_nested()
                    try:
                        value = job.fn(conn)
                    except Exception as exc:
                        savepoint.rollback()
                        outcomes.append((False, exc))
                    else:
                        savepoint.commit()
                        outcomes.append((True, value))
        except BaseException as exc:  # the commit (or a rollback) failed: nothing of the group is stored
            failed: list[tuple[_Job, bool, Any]] = []
            for i, job in enumerate(jobs):
                failed_alone = i < len(outcomes) and not outcomes[i][0]
                failed.append((job, False, outcomes[i][1] if failed_alone else exc))
            self._hand_back(failed)
            return
        self._hand_back([(job, ok, value) for job, (ok, value) in zip(jobs, outcomes, strict=True)])

    @staticmethod
    def _hand_back(results: list[tuple[_Job, bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for job, ok, value in results:
            by_loop.setdefault(job.loop, []).append((job.future, ok, value))
        for loop, outcomes in by_loop.items():
            # A loop closed while its write ran has no one waiting: the write stands, the answer is dropped.
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, outcomes)


class Database:
    """An open database: the engine, a session factory and the (password-masked) URL.

    On a SQLite file it also keeps ``sync_writer`` (see ``build_sync_writer``) with a one-thread
    executor: ``run_write`` runs a whole write transaction there in one hop.
    """

    def __init__(self, engine: AsyncEngine, *, sync_writer: Engine | None = None) -> None:
        self.engine = engine
        self.sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(
            engine, expire_on_commit=False
        )
        self.sync_writer = sync_writer
        self._executor = _WriterThread(self._sync_transaction) if sync_writer else None

    def write_engines(self) -> list[Engine]:
        """Every engine that writes (for event hooks: statement logs, fault injection in tests)."""
        return [self.engine.sync_engine, *([self.sync_writer] if self.sync_writer is not None else [])]

    async def run_write(
        self, fn: Callable[[Connection], _T], *, urgent: bool = False, group: bool = False
    ) -> _T:
        """``fn(conn)`` inside one ``BEGIN IMMEDIATE`` transaction on the writer thread (SQLite file);
        ``urgent`` ones go before the ordinary ones still queued, and urgent ``group`` ones waiting
        together share one transaction, each in a savepoint (see ``_WriterThread``)."""
        if self.sync_writer is None or self._executor is None:
            raise RuntimeError("run_write needs a SQLite file database")
        return await self._executor.submit(fn, urgent=urgent, group=group)

    @contextmanager
    def _sync_transaction(self) -> Iterator[Connection]:
        assert self.sync_writer is not None
        with self.sync_writer.connect() as conn:
            conn = conn.execution_options(**{_SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            with conn.begin():
                yield conn

    @property
    def url(self) -> URL:
        """The engine URL; ``str()``/``repr()`` of it hide the password."""
        return self.engine.url

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    def transaction(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """``async with db.transaction() as conn``: one write transaction (see ``write_transaction``)."""
        return write_transaction(self.engine)

    async def close(self) -> None:
        if self._executor is not None:
            # Lets a batch already handed to the thread finish (it is one transaction) before disposing.
            await asyncio.to_thread(self._executor.shutdown)
            self._executor = None
        if self.sync_writer is not None:
            self.sync_writer.dispose()
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Database(url={mask_url(self.url)!r})"

    __str__ = __repr__


async def open_database(
    url: str | None = None, *, migrate_schema: bool = True, **engine_kwargs: Any
) -> Database:
    """Open the database at ``url`` (see ``resolve_database_url``), migrated to head by default.

    Extra keyword arguments go to ``create_async_engine`` (pool sizes, ``echo``...).
    """
    resolved = resolve_database_url(url)
    if migrate_schema and not _is_sqlite_memory(resolved):
        await migrate(resolved)
    db = Database(build_engine(resolved, **engine_kwargs), sync_writer=build_sync_writer(resolved))
    if migrate_schema and _is_sqlite_memory(resolved):
        # A private in-memory database only exists on the engine's own connection.
        try:
            if not await _create_from_snapshot(db.engine):
                await _migrate_with(db.engine, "head")
        except BaseException:
            await db.close()
            raise
    return db


# --------------------------------------------------------------------------- `jax db init`


class DatabaseMissingError(ConfigError):
    """The configured PostgreSQL database does not exist (the server is up): it must be created first."""


async def current_revision(url: str) -> str | None:
    """The schema revision at ``url`` (None for an empty database)."""

    def read(conn: Connection) -> str | None:
        from alembic.migration import MigrationContext

        return MigrationContext.configure(conn).get_current_revision()

    engine = build_engine(url, for_migrations=True)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(read)
    finally:
        await engine.dispose()


async def init_database(url: str | None = None) -> tuple[str, str | None, str | None]:
    """Create (SQLite) or migrate the database; returns (masked URL, revision before, revision after).

    A PostgreSQL database that does not exist raises ``DatabaseMissingError`` saying how to create it:
    creating databases needs rights the application role should not have, so it is left to the operator.
    """
    resolved = resolve_database_url(url)
    parsed = make_url(resolved)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not _is_sqlite_memory(resolved):
        await asyncio.to_thread(_make_parent, parsed.database)
    try:
        before = await current_revision(resolved)
        await migrate(resolved)
        after = await current_revision(resolved)
    except Exception as exc:
        if parsed.get_backend_name() == "postgresql" and _is_missing_database(exc):
            name = parsed.database or "?"
            host = f"-h {parsed.host or 'localhost'} -p {parsed.port or 5432}"
            user = f" -U {parsed.username}" if parsed.username else ""
            raise DatabaseMissingError(
                f'database "{name}" does not exist on {parsed.host or "localhost"}:{parsed.port or 5432};'
                f" create it (as a role allowed to) with: createdb {host}{user} {name}"
                f'  (or in psql: CREATE DATABASE "{name}";), then run `jax db init` again',
                key="database_url",
            ) from exc
        raise
    return mask_url(resolved), before, after


def _make_parent(path: str) -> None:
    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _is_missing_database(exc: BaseException) -> bool:
    # asyncpg raises InvalidCatalogNameError (SQLSTATE 3D000), possibly wrapped by SQLAlchemy.
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "sqlstate", None) == "3D000" or type(seen).__name__ == "InvalidCatalogNameError":
            return True
        seen = seen.__cause__ or seen.__context__ or getattr(seen, "orig", None)
    return False
