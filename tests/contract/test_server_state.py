"""The ServerStateStore contract, identical on SQLite and PostgreSQL: the first value written
wins, also when several calls or several nodes race."""

from __future__ import annotations

import asyncio

from xshathra.storage.database import Database, open_database


async def test_absent_key(database: Database) -> None:
    """A key never created reads as None."""
    assert await database.server_state.get("absent") is None


async def test_first_value_is_kept(database: Database) -> None:
    """get_or_create stores once; later calls return the stored value, not theirs."""
    assert await database.server_state.get_or_create("token_secret", "first") == "first"
    assert await database.server_state.get_or_create("token_secret", "second") == "first"
    assert await database.server_state.get("token_secret") == "first"
    assert await database.server_state.get_or_create("other", "x") == "x"


async def test_concurrent_calls_agree(database: Database) -> None:
    """Racing calls on one node all get the same single stored value."""
    values = await asyncio.gather(
        *(database.server_state.get_or_create("race", f"v{i}") for i in range(10))
    )
    assert len(set(values)) == 1
    assert await database.server_state.get("race") == values[0]


async def test_two_nodes_starting_at_once_agree(database: Database, database_url: str) -> None:
    """Two nodes (two engines on one database) racing for a key end with the same value."""
    other = await open_database(database_url)
    try:
        values = await asyncio.gather(
            *(
                db.server_state.get_or_create("admin_key_hash", f"{name}{i}")
                for i in range(5)
                for name, db in (("a", database), ("b", other))
            )
        )
        assert len(set(values)) == 1
        assert await other.server_state.get("admin_key_hash") == values[0]
        assert await database.server_state.get("admin_key_hash") == values[0]
    finally:
        await other.close()
