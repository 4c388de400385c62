"""Per-app usage analytics: connections, events and users, by period; the store contract the
recorder writes to (implemented in SQL by `storage.analytics`)."""

from __future__ import annotations

from typing import Protocol

import msgspec

PERIODS: dict[str, int] = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


class AnalyticsPoint(msgspec.Struct, frozen=True):
    timestamp: int  # start of the bucket, unix seconds
    connections: int
    events: int
    broadcasts: int
    # Distinct users active (connected at some time) in the bucket; users are kept per hour,
    # so a point shorter than an hour has its hour's figure.
    users: int = 0


class AnalyticsSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    connections_total: int
    connections_current: int
    events_total: int
    events_broadcasts: int
    users_online: int
    users_total: int
    series: list[AnalyticsPoint] = []


class AnalyticsReader(Protocol):
    async def snapshot(self, app_id: str, period_seconds: int) -> AnalyticsSnapshot: ...


class AnalyticsStore(Protocol):
    """Counters shared by every node: each node adds its flushes, so figures hold across nodes
    and restarts. Buckets are unix seconds (minutes for counts, hours for users)."""

    async def flush(
        self,
        counts: dict[tuple[str, int], list[int]],
        users: set[tuple[str, int, str]],
        node_id: str,
        online: dict[str, tuple[int, list[str]]],
        now: int,
    ) -> None:
        """Add counters, record users, and replace this node's picture of what is open now, in
        one transaction."""

    async def totals(self, app_id: str, since: int) -> tuple[int, int, int]:
        """(connections, events, broadcasts) counted since `since`."""

    async def buckets(self, app_id: str, since: int) -> list[tuple[int, int, int, int]]:
        """(bucket, connections, events, broadcasts) per bucket since `since`, in no order."""

    async def users_since(self, app_id: str, since_hour: int) -> set[str]: ...

    async def users_per_bucket(self, app_id: str, since_hour: int, step: int) -> dict[int, int]:
        """Distinct users per `step` seconds (an hour or more; a multiple of an hour), by the
        bucket's start, since `since_hour`."""

    async def online(self, app_id: str, fresh_since: int, skip_node: str) -> tuple[int, set[str]]:
        """Connections and users open on other live nodes (this node counts its own live)."""

    async def prune(self, before: int) -> None:
        """Forget counters and users of buckets before `before`."""
