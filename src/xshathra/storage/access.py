"""Access rules in SQL: `SqlAccessStore` implements `tenancy.access.AccessStore`.

Each write is one upsert; expired rows of the app are deleted in the same transaction, so the
tables hold only what can still refuse someone.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Table, and_, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from xshathra.model import AppId
from xshathra.storage._dialect import insert_for
from xshathra.storage.tables import (
    blocked_users,
    channel_token_invalidations,
    revoked_tokens,
    user_token_invalidations,
)
from xshathra.tenancy.access import AccessRules


def _live(table: Table, now: int) -> Any:
    return (table.c.expire_at == 0) | (table.c.expire_at > now)


class SqlAccessStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def load_rules(self, app_id: AppId) -> AccessRules:
        now = int(time.time())
        async with self._engine.connect() as conn:
            blocked = await conn.execute(
                select(blocked_users.c.user_id, blocked_users.c.expire_at).where(
                    blocked_users.c.app_id == app_id, _live(blocked_users, now)
                )
            )
            revoked = await conn.execute(
                select(revoked_tokens.c.token_id, revoked_tokens.c.expire_at).where(
                    revoked_tokens.c.app_id == app_id, _live(revoked_tokens, now)
                )
            )
            invalidated = await conn.execute(
                select(
                    user_token_invalidations.c.user_id,
                    user_token_invalidations.c.issued_before,
                    user_token_invalidations.c.expire_at,
                ).where(
                    user_token_invalidations.c.app_id == app_id,
                    _live(user_token_invalidations, now),
                )
            )
            per_channel = await conn.execute(
                select(
                    channel_token_invalidations.c.user_id,
                    channel_token_invalidations.c.channel,
                    channel_token_invalidations.c.issued_before,
                    channel_token_invalidations.c.expire_at,
                ).where(
                    channel_token_invalidations.c.app_id == app_id,
                    _live(channel_token_invalidations, now),
                )
            )
            return AccessRules(
                blocked={r.user_id: int(r.expire_at) for r in blocked},
                revoked={r.token_id: int(r.expire_at) for r in revoked},
                invalidated={
                    r.user_id: (int(r.issued_before), int(r.expire_at)) for r in invalidated
                },
                channel_invalidated={
                    (r.user_id, r.channel): (int(r.issued_before), int(r.expire_at))
                    for r in per_channel
                },
            )

    async def _upsert(
        self, table: Table, keys: list[str], values: dict[str, Any], app_id: AppId
    ) -> None:
        statement = insert_for(self._engine, table).values(app_id=app_id, **values)
        updates = {k: v for k, v in values.items() if k not in keys}
        statement = statement.on_conflict_do_update(index_elements=["app_id", *keys], set_=updates)
        async with self._engine.begin() as conn:
            await _purge(conn, table, app_id)
            await conn.execute(statement)

    async def block_user(self, app_id: AppId, user: str, expire_at: int) -> None:
        await self._upsert(
            blocked_users, ["user_id"], {"user_id": user, "expire_at": expire_at}, app_id
        )

    async def unblock_user(self, app_id: AppId, user: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(blocked_users).where(
                    blocked_users.c.app_id == app_id, blocked_users.c.user_id == user
                )
            )

    async def revoke_token(self, app_id: AppId, token_id: str, expire_at: int) -> None:
        await self._upsert(
            revoked_tokens, ["token_id"], {"token_id": token_id, "expire_at": expire_at}, app_id
        )

    async def invalidate_user_tokens(
        self, app_id: AppId, user: str, issued_before: int, expire_at: int, channel: str = ""
    ) -> None:
        if channel:
            await self._upsert(
                channel_token_invalidations,
                ["user_id", "channel"],
                {
                    "user_id": user,
                    "channel": channel,
                    "issued_before": issued_before,
                    "expire_at": expire_at,
                },
                app_id,
            )
            return
        await self._upsert(
            user_token_invalidations,
            ["user_id"],
            {"user_id": user, "issued_before": issued_before, "expire_at": expire_at},
            app_id,
        )


async def _purge(conn: AsyncConnection, table: Table, app_id: AppId) -> None:
    now = int(time.time())
    await conn.execute(
        delete(table).where(
            and_(table.c.app_id == app_id, table.c.expire_at != 0, table.c.expire_at <= now)
        )
    )
