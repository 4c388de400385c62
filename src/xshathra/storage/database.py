"""Opening the database: URL mapping, connection setup, migrations at start, and the stores.

Migrations run under a lock (a PostgreSQL advisory lock, an exclusive SQLite transaction) so
several nodes starting at once migrate once and safely. No other module creates an engine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from xshathra.accounts.models import AccountStore
from xshathra.analytics import AnalyticsStore
from xshathra.storage.access import SqlAccessStore
from xshathra.storage.accounts import SqlAccountStore
from xshathra.storage.analytics import SqlAnalyticsStore
from xshathra.storage.apps import SqlAppStore
from xshathra.storage.deliveries import SqlDeliveryStore
from xshathra.storage.members import SqlMemberStore
from xshathra.storage.server_state import ServerStateStore, SqlServerStateStore
from xshathra.storage.webhooks import SqlWebhookStore
from xshathra.tenancy.access import AccessStore
from xshathra.tenancy.apps import AppStore
from xshathra.tenancy.members import MemberStore
from xshathra.webhooks.store import DeliveryStore, WebhookStore

log = logging.getLogger("xshathra.storage")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x58534D47  # "XSMG": the advisory lock id that serialises migrations
_BUSY_TIMEOUT_MS = 5_000
# A node that finds another one migrating waits for it rather than failing its start.
_MIGRATION_WAIT_MS = 120_000
_PG_CONNECT_TIMEOUT_S = 10  # asyncpg's default (60 s) would stall a start or a health check
_EXPECTED = "expected sqlite:///path or postgresql://user@host:port/db"


class DatabaseUnavailableError(RuntimeError):
    """The database could not be reached or migrated at open. The message names no password."""


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        # The text may be a mistyped URL that still holds a password: never echo it.
        raise ValueError(f"XSHATHRA_DATABASE_URL is not a database URL ({_EXPECTED})") from None


def async_url(url: str) -> URL:
    """Map the user's URL to the async driver SQLAlchemy needs; ValueError if unsupported."""
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError(f"XSHATHRA_DATABASE_URL: SQLite needs a file path ({_EXPECTED})")
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(f"XSHATHRA_DATABASE_URL: unsupported database '{backend}' ({_EXPECTED})")


@dataclass(slots=True)
class Database:
    """The opened database: one engine and the stores built on it."""

    engine: AsyncEngine
    apps: AppStore
    webhooks: WebhookStore
    server_state: ServerStateStore
    deliveries: DeliveryStore
    analytics: AnalyticsStore
    accounts: AccountStore
    access: AccessStore
    members: MemberStore

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.engine.dialect.name

    async def ping(self) -> None:
        """One round trip on a pooled connection; raises if the database cannot answer."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        """Close every pooled connection. The stores must not be used afterwards."""
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # busy_timeout first: switching to WAL on a new file can meet another node's lock.
    cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    # SQLite leaves foreign keys off per connection; ON DELETE CASCADE needs them on.
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL lets readers proceed while one writer commits; NORMAL is durable enough under WAL.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the packaged migrations (no alembic.ini), bound to `connection`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(conn: Connection) -> None:
    command.upgrade(alembic_config(conn), "head")


# Alembic keeps the running migration's context in module globals (`alembic.context`,
# `alembic.op`), and `run_sync` lets other tasks run while a migration awaits the database:
# two migrations in one process, even of different databases, must not interleave.
_in_process_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _in_process_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _in_process_locks.get(loop)
    if lock is None:
        lock = _in_process_locks[loop] = asyncio.Lock()
    return lock


async def _migrate(engine: AsyncEngine) -> None:
    """Upgrade to head in one transaction that holds the migration lock until it commits.

    The in-process lock is taken first: the database lock is only ever awaited by a task that
    holds it, so the two cannot deadlock.
    """
    async with _in_process_lock(), engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            # A transaction-scoped lock is released by COMMIT or ROLLBACK, even when the
            # upgrade fails, so a failed node never leaves the lock behind.
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        else:
            await conn.exec_driver_sql(f"PRAGMA busy_timeout={_MIGRATION_WAIT_MS}")
            # EXCLUSIVE: a second node blocks here until the first has committed the schema,
            # then finds it at head. Alembic joins this transaction (env.py).
            await conn.exec_driver_sql("BEGIN EXCLUSIVE")
        try:
            await conn.run_sync(_upgrade)
            await conn.commit()
        finally:
            if engine.dialect.name == "sqlite":
                await conn.exec_driver_sql(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")


def _private_sqlite_file(path: Path) -> None:
    """The file holds every app's secret and the server's HMAC secret: create it readable and
    writable by the owner only, before SQLite does (SQLite gives its -wal and -shm files the
    database file's mode), and tighten a file an earlier version created world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.name != "posix":
        return
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))  # never truncates an existing file
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if stat.S_IMODE(file.stat().st_mode) & 0o077:
                file.chmod(0o600)
        except FileNotFoundError:
            continue
        except OSError as exc:  # another owner's file: say so, but the start need not fail
            log.warning("could not make %s private (mode 0600): %s", file, exc.strerror)


def _create_engine(url: URL) -> AsyncEngine:
    if url.get_backend_name() == "sqlite":
        _private_sqlite_file(Path(url.database or ""))
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_size=10,
        max_overflow=20,
        # A restarted PostgreSQL leaves dead connections in the pool; test each on checkout.
        pool_pre_ping=True,
        connect_args={"timeout": _PG_CONNECT_TIMEOUT_S},
    )


def _describe(exc: BaseException, url: URL) -> str:
    detail = f"{type(exc).__name__}: {exc}"[:300]
    if url.password:
        detail = detail.replace(str(url.password), "***")
    return detail


async def open_database(url: str) -> Database:
    """Connect, migrate to the newest schema, and return the stores.

    Raises `ValueError` for a URL that is not SQLite or PostgreSQL and
    `DatabaseUnavailableError` when the database cannot be reached or migrated.
    """
    engine_url = async_url(url)
    engine = _create_engine(engine_url)
    try:
        await _migrate(engine)
    except Exception as exc:
        await engine.dispose()
        where = engine_url.render_as_string(hide_password=True)
        raise DatabaseUnavailableError(
            f"database {where} is unavailable: {_describe(exc, engine_url)}"
        ) from None
    return Database(
        engine=engine,
        apps=SqlAppStore(engine),
        webhooks=SqlWebhookStore(engine),
        server_state=SqlServerStateStore(engine),
        deliveries=SqlDeliveryStore(engine),
        analytics=SqlAnalyticsStore(engine),
        accounts=SqlAccountStore(engine),
        access=SqlAccessStore(engine),
        members=SqlMemberStore(engine),
    )
