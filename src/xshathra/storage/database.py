"""Opening the database: URL mapping, connection setup, migrations at start, and the stores.

Migrations run under a lock (a PostgreSQL advisory lock, a file lock for SQLite) so several
nodes starting at once migrate once and safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from xshathra.storage.analytics import SqlAnalyticsStore
from xshathra.storage.apps import SqlAppStore
from xshathra.storage.deliveries import SqlDeliveryStore
from xshathra.storage.server_state import SqlServerStateStore
from xshathra.storage.webhooks import SqlWebhookStore

_MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x58534D47  # "XSMG": one advisory lock id for schema migrations


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@\s]+):[^@\s]*@", r"://\1:***@", url)


def async_url(url: str) -> str:
    """Map the user's URL to the async driver SQLAlchemy needs; ValueError if unsupported."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"XSHATHRA_DATABASE_URL is not a database URL: {_redact(url)}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("XSHATHRA_DATABASE_URL: SQLite needs a file path (sqlite:///path)")
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(
        f"XSHATHRA_DATABASE_URL: unsupported database '{backend}' (use sqlite or postgresql)"
    )


@dataclass
class Database:
    engine: AsyncEngine
    apps: SqlAppStore
    webhooks: SqlWebhookStore
    server_state: SqlServerStateStore
    deliveries: SqlDeliveryStore
    analytics: SqlAnalyticsStore

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _upgrade(conn: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def _migrate(engine: AsyncEngine) -> None:
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            try:
                await conn.commit()
                await conn.run_sync(_upgrade)
                await conn.commit()
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                await conn.commit()
        return
    database = engine.url.database or "xshathra.db"
    lock_path = Path(database + ".migrate.lock")
    # flock blocks: take it in a thread so the event loop keeps running meanwhile.
    lock = _file_lock(lock_path)
    await asyncio.to_thread(lock.__enter__)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_upgrade)
            await conn.commit()
    finally:
        lock.__exit__(None, None, None)


async def open_database(url: str) -> Database:
    """Connect, migrate to the newest schema, and return the stores."""
    engine_url = async_url(url)
    if engine_url.startswith("sqlite"):
        db_path = make_url(engine_url).database or ""
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(engine_url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        engine = create_async_engine(engine_url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    try:
        await _migrate(engine)
    except Exception as exc:
        await engine.dispose()
        raise RuntimeError(
            f"database {_redact(url)} is unavailable: {type(exc).__name__}"
        ) from None
    return Database(
        engine=engine,
        apps=SqlAppStore(engine),
        webhooks=SqlWebhookStore(engine),
        server_state=SqlServerStateStore(engine),
        deliveries=SqlDeliveryStore(engine),
        analytics=SqlAnalyticsStore(engine),
    )
