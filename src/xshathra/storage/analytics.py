"""Analytics in SQL: counters added up from every node's flushes, distinct users per hour, and
each node's open connections, so figures hold across nodes and restarts."""

from __future__ import annotations

import msgspec
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from xshathra.analytics import AnalyticsStore
from xshathra.storage._dialect import insert_for
from xshathra.storage.tables import analytics_counts, analytics_online, analytics_users

_users_decoder = msgspec.json.Decoder(list[str])


class SqlAnalyticsStore(AnalyticsStore):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def flush(
        self,
        counts: dict[tuple[str, int], list[int]],
        users: set[tuple[str, int, str]],
        node_id: str,
        online: dict[str, tuple[int, list[str]]],
        now: int,
    ) -> None:
        """Add counters, record users, and replace this node's picture of what is open now."""
        async with self._engine.begin() as conn:
            if counts:
                insert = insert_for(self._engine, analytics_counts)
                stmt = insert.on_conflict_do_update(
                    index_elements=["app_id", "bucket"],
                    set_={
                        "connections": analytics_counts.c.connections + insert.excluded.connections,
                        "events": analytics_counts.c.events + insert.excluded.events,
                        "broadcasts": analytics_counts.c.broadcasts + insert.excluded.broadcasts,
                    },
                )
                await conn.execute(
                    stmt,
                    [
                        {
                            "app_id": a,
                            "bucket": b,
                            "connections": c[0],
                            "events": c[1],
                            "broadcasts": c[2],
                        }
                        for (a, b), c in counts.items()
                    ],
                )
            if users:
                insert = insert_for(self._engine, analytics_users)
                await conn.execute(
                    insert.on_conflict_do_nothing(),
                    [{"app_id": a, "bucket": b, "user_id": u} for a, b, u in users],
                )
            await conn.execute(
                delete(analytics_online).where(analytics_online.c.node_id == node_id)
            )
            if online:
                await conn.execute(
                    analytics_online.insert(),
                    [
                        {
                            "node_id": node_id,
                            "app_id": app_id,
                            "connections": n,
                            "users": msgspec.json.encode(u).decode(),
                            "updated_at": now,
                        }
                        for app_id, (n, u) in online.items()
                    ],
                )

    async def totals(self, app_id: str, since: int) -> tuple[int, int, int]:
        query = select(
            func.coalesce(func.sum(analytics_counts.c.connections), 0),
            func.coalesce(func.sum(analytics_counts.c.events), 0),
            func.coalesce(func.sum(analytics_counts.c.broadcasts), 0),
        ).where(analytics_counts.c.app_id == app_id, analytics_counts.c.bucket >= since)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).one()
        return int(row[0]), int(row[1]), int(row[2])

    async def buckets(self, app_id: str, since: int) -> list[tuple[int, int, int, int]]:
        query = select(
            analytics_counts.c.bucket,
            analytics_counts.c.connections,
            analytics_counts.c.events,
            analytics_counts.c.broadcasts,
        ).where(analytics_counts.c.app_id == app_id, analytics_counts.c.bucket >= since)
        async with self._engine.connect() as conn:
            return [(int(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in await conn.execute(query)]

    async def users_since(self, app_id: str, since_hour: int) -> set[str]:
        query = (
            select(analytics_users.c.user_id)
            .where(analytics_users.c.app_id == app_id, analytics_users.c.bucket >= since_hour)
            .distinct()
        )
        async with self._engine.connect() as conn:
            return {str(r[0]) for r in await conn.execute(query)}

    async def users_per_bucket(self, app_id: str, since_hour: int, step: int) -> dict[int, int]:
        # Counted by the database (an app's users over 30 days can be many rows); the integer
        # division groups hours into days.
        group = (
            (analytics_users.c.bucket // step) * step if step > 3600 else analytics_users.c.bucket
        )
        query = (
            select(group.label("b"), func.count(analytics_users.c.user_id.distinct()))
            .where(analytics_users.c.app_id == app_id, analytics_users.c.bucket >= since_hour)
            .group_by(group)
        )
        async with self._engine.connect() as conn:
            return {int(r[0]): int(r[1]) for r in await conn.execute(query)}

    async def online(self, app_id: str, fresh_since: int, skip_node: str) -> tuple[int, set[str]]:
        """Connections and users open on other live nodes (this node counts its own live)."""
        query = select(analytics_online.c.connections, analytics_online.c.users).where(
            analytics_online.c.app_id == app_id,
            analytics_online.c.updated_at >= fresh_since,
            analytics_online.c.node_id != skip_node,
        )
        total, users = 0, set()
        async with self._engine.connect() as conn:
            for row in await conn.execute(query):
                total += int(row[0])
                users.update(_users_decoder.decode(row[1]))
        return total, users

    async def prune(self, before: int) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(analytics_counts).where(analytics_counts.c.bucket < before))
            await conn.execute(delete(analytics_users).where(analytics_users.c.bucket < before))
