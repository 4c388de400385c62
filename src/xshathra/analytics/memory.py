"""Per-app usage counters kept in this process: minute buckets for counts, hour buckets for
distinct users. Good for one node; the durable, cross-node recorder replaces it when configured.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from xshathra.analytics import AnalyticsPoint, AnalyticsSnapshot

KEEP_SECONDS = 31 * 86400


class MemoryAnalytics:
    """Records events as they happen and answers `AnalyticsReader.snapshot`."""

    def __init__(
        self, online: Callable[[str], tuple[int, set[str]]] = lambda app_id: (0, set())
    ) -> None:
        # app -> minute -> [connections, events, broadcasts]
        self._counts: dict[str, dict[int, list[int]]] = defaultdict(dict)
        # app -> hour -> user ids seen connected during that hour
        self._users: dict[str, dict[int, set[str]]] = defaultdict(dict)
        self._online = online
        self._last_prune = time.time()

    def bind_online(self, online: Callable[[str], tuple[int, set[str]]]) -> None:
        """Where the current connection count and online users of an app come from."""
        self._online = online

    def _bucket(self, app_id: str) -> list[int]:
        now = time.time()
        if now - self._last_prune > 3600:
            self._prune(now)
        minute = int(now // 60) * 60
        buckets = self._counts[app_id]
        bucket = buckets.get(minute)
        if bucket is None:
            bucket = buckets[minute] = [0, 0, 0]
        return bucket

    def connection_opened(self, app_id: str, user: str) -> None:
        self._bucket(app_id)[0] += 1
        if user:
            hour = int(time.time() // 3600) * 3600
            self._users[app_id].setdefault(hour, set()).add(user)

    def publication(self, app_id: str, *, broadcast: bool) -> None:
        bucket = self._bucket(app_id)
        bucket[1] += 1
        if broadcast:
            bucket[2] += 1

    def forget_app(self, app_id: str) -> None:
        self._counts.pop(app_id, None)
        self._users.pop(app_id, None)

    def _prune(self, now: float) -> None:
        self._last_prune = now
        horizon = now - KEEP_SECONDS
        for counts in self._counts.values():
            for key in [k for k in counts if k < horizon]:
                del counts[key]
        for users in self._users.values():
            for key in [k for k in users if k < horizon]:
                del users[key]

    async def snapshot(self, app_id: str, period_seconds: int) -> AnalyticsSnapshot:
        now = time.time()
        since = now - period_seconds
        step = 60 if period_seconds <= 3600 else 3600 if period_seconds <= 7 * 86400 else 86400
        series: dict[int, list[int]] = {}
        start = int(since // step) * step
        for t in range(start, int(now) + 1, step):
            series[t] = [0, 0, 0]
        totals = [0, 0, 0]
        for minute, counts in self._counts.get(app_id, {}).items():
            if minute + 60 <= since:
                continue
            point = series.setdefault(int(minute // step) * step, [0, 0, 0])
            for i in range(3):
                totals[i] += counts[i]
                point[i] += counts[i]
        users: set[str] = set()
        for hour, seen in self._users.get(app_id, {}).items():
            if hour + 3600 > since:
                users |= seen
        current, online = self._online(app_id)
        users |= online
        return AnalyticsSnapshot(
            connections_total=totals[0],
            connections_current=current,
            events_total=totals[1],
            events_broadcasts=totals[2],
            users_online=len(online),
            users_total=len(users),
            series=[AnalyticsPoint(t, c, e, b) for t, (c, e, b) in sorted(series.items())],
        )
