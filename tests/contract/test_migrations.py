"""Opening a database: URL handling, migrations at open (once, also when nodes race), and the
health ping, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from tests.support.services import async_postgres_database, drop_postgres_database
from xshathra.storage.database import (
    Database,
    DatabaseUnavailableError,
    alembic_config,
    async_url,
    open_database,
)
from xshathra.storage.tables import metadata
from xshathra.tenancy.apps import generate_app

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


async def _schema(db: Database) -> tuple[list[str], set[str]]:
    """The rows of alembic_version and the names of the tables."""

    def read(conn: Connection) -> tuple[list[str], set[str]]:
        versions = list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
        return versions, set(inspect(conn).get_table_names())

    async with db.engine.connect() as conn:
        return await conn.run_sync(read)


async def test_engines_opening_a_new_database_at_once_migrate_it_once(database_url: str) -> None:
    """Three engines in one process opening one empty database together all succeed and share
    one schema."""
    dbs = await asyncio.gather(*(open_database(database_url) for _ in range(3)))
    try:
        versions, tables = await _schema(dbs[0])
        assert versions == [HEAD]
        assert tables == set(metadata.tables) | {"alembic_version"}
        app, _ = generate_app(name="shared", app_id="shared")
        await dbs[1].apps.create_app(app)
        assert await dbs[2].apps.get_app("shared") == app
    finally:
        for db in dbs:
            await db.close()


# A node in its own process: imports first (the slow part), then opens the database when the
# test writes a line, so that all nodes reach the migration together.
_NODE = """
import asyncio, sys
from xshathra.storage.database import open_database

async def main() -> None:
    sys.stdin.readline()
    db = await open_database(sys.argv[1])
    await db.close()
    print("opened", flush=True)

asyncio.run(main())
"""


async def test_node_processes_starting_together_migrate_once(database_url: str) -> None:
    """Three node processes opening one empty database at the same moment all start, and the
    database ends with one schema at head (the cross-process migration lock)."""
    nodes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _NODE,
            database_url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    for node in nodes:
        assert node.stdin is not None
        node.stdin.write(b"go\n")
    outputs = await asyncio.wait_for(
        asyncio.gather(*(node.communicate() for node in nodes)), timeout=60
    )
    for node, (out, err) in zip(nodes, outputs, strict=True):
        assert (node.returncode, out) == (0, b"opened\n"), err.decode()[-2000:]
    db = await open_database(database_url)
    try:
        versions, tables = await _schema(db)
        assert versions == [HEAD]
        assert tables == set(metadata.tables) | {"alembic_version"}
    finally:
        await db.close()


async def test_one_process_opening_several_databases_at_once(tmp_path: Path) -> None:
    """Migrations of different databases started together in one process do not collide."""
    async with async_postgres_database() as pg_url:
        urls = [pg_url, *(f"sqlite:///{tmp_path / f'db{i}.db'}" for i in range(3))]
        dbs = await asyncio.gather(*(open_database(url) for url in urls))
        try:
            for db in dbs:
                assert (await _schema(db))[0] == [HEAD]
        finally:
            for db in dbs:
                await db.close()


async def test_reopening_a_migrated_database_is_a_no_op(database_url: str) -> None:
    """A second open finds the schema at head, changes nothing and keeps the data."""
    first = await open_database(database_url)
    app, _ = generate_app(name="kept", app_id="kept")
    await first.apps.create_app(app)
    before = await _schema(first)
    await first.close()
    second = await open_database(database_url)
    try:
        assert await _schema(second) == before == ([HEAD], before[1])
        assert await second.apps.list_apps() == [app]
    finally:
        await second.close()


async def test_migrations_build_exactly_the_tables_module(database: Database) -> None:
    """The migrated schema and `storage.tables` agree: columns, types, indexes, keys."""

    def diff(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with database.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_ping(database: Database) -> None:
    """ping() answers on a working database."""
    await database.ping()


async def test_ping_raises_when_the_database_is_gone() -> None:
    """ping() reaches the database: it raises once the database has been dropped."""
    async with async_postgres_database() as url:
        db = await open_database(url)
        try:
            await db.ping()
            await drop_postgres_database(url)
            with pytest.raises(SQLAlchemyError):
                await db.ping()
        finally:
            await db.close()


async def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path: Path) -> None:
    """Every SQLite connection has WAL, foreign keys on and a busy timeout."""
    db = await open_database(f"sqlite:///{tmp_path / 'pragmas.db'}")
    try:
        async with db.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 5000
    finally:
        await db.close()


async def test_relative_sqlite_path_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sqlite:///relative/path` is relative to the working directory; folders are created."""
    monkeypatch.chdir(tmp_path)
    db = await open_database("sqlite:///data/nested/x.db")
    await db.close()
    assert (tmp_path / "data" / "nested" / "x.db").is_file()


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///./xshathra.db", "sqlite+aiosqlite"),
        ("sqlite:////var/lib/xshathra.db", "sqlite+aiosqlite"),
        ("postgresql://u@db:5432/x", "postgresql+asyncpg"),
        ("postgres://u:pw@db/x", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@db/x", "postgresql+asyncpg"),
    ],
)
def test_urls_map_to_async_drivers(url: str, driver: str) -> None:
    """The user's URL schemes map to the async drivers, everything else kept."""
    mapped, given = async_url(url), make_url(url)
    assert mapped.drivername == driver
    assert (mapped.username, mapped.password, mapped.host, mapped.port, mapped.database) == (
        given.username,
        given.password,
        given.host,
        given.port,
        given.database,
    )


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root:hunter2@localhost/x",
        "redis://:hunter2@localhost:6379/0",
        "postgresql//user:hunter2@localhost/db",
        "postgresql:/user:hunter2@localhost/db",
        "nonsense hunter2",
        "",
        "sqlite://",
        "sqlite:///:memory:",
    ],
)
async def test_bad_urls_raise_value_error_without_the_password(url: str) -> None:
    """Unsupported or malformed URLs raise ValueError whose text holds no password."""
    with pytest.raises(ValueError, match="XSHATHRA_DATABASE_URL") as info:
        await open_database(url)
    assert "hunter2" not in str(info.value)


async def test_unreachable_database_names_no_password() -> None:
    """A database that cannot be reached fails the open, saying so without the password."""
    with pytest.raises(DatabaseUnavailableError) as info:
        await open_database("postgresql://user:hunter2@127.0.0.1:1/db")
    message = str(info.value)
    assert "unavailable" in message and "127.0.0.1:1" in message
    assert "hunter2" not in message and info.value.__cause__ is None


async def test_0003_registers_the_ids_of_apps_created_before_it(database_url: str) -> None:
    """An app created under revision 0002 is known to `app_ids` after the upgrade: its id is
    still 'taken' while it lives and retired once deleted."""
    from alembic import command
    from sqlalchemy.ext.asyncio import create_async_engine

    from xshathra.storage.apps import app_row
    from xshathra.storage.tables import applications
    from xshathra.tenancy.apps import AppExistsError, AppIdRetiredError

    old, _ = generate_app(name="from 0002", app_id="veteran")
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0002"))
            # Only the columns 0002 has (later revisions add some).
            row = {k: v for k, v in app_row(old).items() if k != "pusher_client_events"}
            await conn.execute(applications.insert().values(**row))
    finally:
        await engine.dispose()
    db = await open_database(database_url)
    try:
        with pytest.raises(AppExistsError) as taken:
            await db.apps.create_app(generate_app(name="twin", app_id="veteran")[0])
        assert not isinstance(taken.value, AppIdRetiredError)
        assert await db.apps.delete_app("veteran")
        with pytest.raises(AppIdRetiredError):
            await db.apps.create_app(generate_app(name="heir", app_id="veteran")[0])
    finally:
        await db.close()
