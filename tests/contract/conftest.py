"""Storage contract fixtures: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.services import postgres_database
from xshathra.storage.database import Database, open_database


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        db = await open_database(f"sqlite:///{tmp_path / 'contract.db'}")
        yield db
        await db.close()
    else:
        with postgres_database() as url:
            db = await open_database(url)
            yield db
            await db.close()
