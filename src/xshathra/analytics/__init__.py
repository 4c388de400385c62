"""Per-app usage analytics: connections, events and users, by period."""

from __future__ import annotations

from typing import Protocol

import msgspec

PERIODS: dict[str, int] = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


class AnalyticsPoint(msgspec.Struct, frozen=True):
    timestamp: int  # start of the bucket, unix seconds
    connections: int
    events: int
    broadcasts: int


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
