"""Small server-wide values (generated secrets) that every node must agree on.

`get_or_create` is the only way to write: the first value stored wins and is never replaced.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from xshathra.storage._dialect import insert_for
from xshathra.storage.tables import server_state


class ServerStateStore(Protocol):
    """Key/value text shared by all nodes of a deployment."""

    async def get(self, key: str) -> str | None:
        """The stored value, or None if the key was never created."""

    async def get_or_create(self, key: str, value: str) -> str:
        """Store `value` unless the key exists; return what is stored (first writer wins)."""


class SqlServerStateStore:
    """`ServerStateStore` in the `server_state` table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, key: str) -> str | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(server_state.c.value).where(server_state.c.key == key))
            ).first()
        return None if row is None else str(row.value)

    async def get_or_create(self, key: str, value: str) -> str:
        # Not "SELECT, then INSERT if missing": two nodes could both miss and both insert.
        # ON CONFLICT DO NOTHING waits for a concurrent insert of the key to commit, so the
        # SELECT that follows sees the winner's value on every node.
        insert = insert_for(self._engine, server_state).values(key=key, value=value)
        async with self._engine.begin() as conn:
            await conn.execute(insert.on_conflict_do_nothing(index_elements=["key"]))
            row = (
                await conn.execute(select(server_state.c.value).where(server_state.c.key == key))
            ).one()
        return str(row.value)
