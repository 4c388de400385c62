"""Storage contract fixtures: every test runs on SQLite and on PostgreSQL, each on a database
of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.services import async_postgres_database
from xshathra.storage.database import Database, open_database


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database that nothing has opened yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'contract.db'}"
    else:
        async with async_postgres_database() as url:
            yield url


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """The database at `database_url`, opened (migrated) and closed after the test."""
    db = await open_database(database_url)
    try:
        yield db
    finally:
        await db.close()
