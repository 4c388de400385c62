"""The analytics recorder: counts in memory on the hot path, flushes to the database every few
seconds (and at shutdown), and answers snapshots from the database plus what is not yet flushed.

Counting never touches the database on the hot path; a crash loses at most one flush interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from xshathra.analytics import AnalyticsPoint, AnalyticsSnapshot, AnalyticsStore

log = logging.getLogger("xshathra.analytics")
KEEP_SECONDS = 31 * 86400


def _minute(t: float) -> int:
    return int(t // 60) * 60


def _hour(t: float) -> int:
    return int(t // 3600) * 3600


class AnalyticsRecorder:
    def __init__(self, store: AnalyticsStore, node_id: str, flush_interval: float = 2.0) -> None:
        self._store = store
        self._node_id = node_id
        self._interval = flush_interval
        self._counts: dict[tuple[str, int], list[int]] = {}
        self._users: set[tuple[str, int, str]] = set()
        # Users online at a flush, recorded once per hour as active in it (so a connection
        # opened hours ago counts in every hour it stays): those recorded this hour.
        self._active: set[tuple[str, int, str]] = set()
        self._online: Callable[[str], tuple[int, set[str]]] = lambda _app: (0, set())
        self._apps_online: Callable[[], list[str]] = list
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def bind_online(
        self,
        online: Callable[[str], tuple[int, set[str]]],
        apps_online: Callable[[], list[str]] | None = None,
    ) -> None:
        """Where this node's open connections and users of an app come from."""
        self._online = online
        if apps_online is not None:
            self._apps_online = apps_online

    # --- hot path: counting only ------------------------------------------------------------

    def _bucket(self, app_id: str) -> list[int]:
        key = (app_id, _minute(time.time()))
        bucket = self._counts.get(key)
        if bucket is None:
            bucket = self._counts[key] = [0, 0, 0]
        return bucket

    def connection_opened(self, app_id: str, user: str) -> None:
        self._bucket(app_id)[0] += 1
        if user:
            self._users.add((app_id, _hour(time.time()), user))

    def publication(self, app_id: str, *, broadcast: bool) -> None:
        bucket = self._bucket(app_id)
        bucket[1] += 1
        if broadcast:
            bucket[2] += 1

    # --- persistence ------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.flush(final=True)
        except Exception as exc:
            log.warning("final analytics flush failed: %s", type(exc).__name__)

    async def _run(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
                if time.time() - last_prune > 3600:
                    last_prune = time.time()
                    await self._store.prune(int(time.time()) - KEEP_SECONDS)
            except Exception as exc:  # the database may be away for a while: keep counting
                log.warning("analytics flush failed: %s", type(exc).__name__)

    async def flush(self, *, final: bool = False) -> None:
        async with self._lock:
            counts, self._counts = self._counts, {}
            users, self._users = self._users, set()
            online: dict[str, tuple[int, list[str]]] = {}
            if not final:
                hour = _hour(time.time())
                if any(seen[1] != hour for seen in self._active):
                    self._active = {seen for seen in self._active if seen[1] == hour}
                for app_id in self._apps_online():
                    n, who = self._online(app_id)
                    online[app_id] = (n, sorted(who))
                    for user in who:
                        active = (app_id, hour, user)
                        if user and active not in self._active:
                            self._active.add(active)
                            users.add(active)
            try:
                await self._store.flush(counts, users, self._node_id, online, int(time.time()))
            except Exception:
                # Put the counts back so the next flush carries them.
                for key, values in counts.items():
                    bucket = self._counts.setdefault(key, [0, 0, 0])
                    for i in range(3):
                        bucket[i] += values[i]
                self._users |= users
                self._active -= users  # recorded again at the next flush
                raise

    # --- reading ------------------------------------------------------------------------------

    async def snapshot(self, app_id: str, period_seconds: int) -> AnalyticsSnapshot:
        now = time.time()
        since = _minute(now - period_seconds)
        step = 60 if period_seconds <= 3600 else 3600 if period_seconds <= 7 * 86400 else 86400
        series: dict[int, list[int]] = {
            t: [0, 0, 0] for t in range(int(since // step) * step, int(now) + 1, step)
        }
        # Under the flush's lock: a flush takes the counts out of memory before its write
        # commits, and a snapshot read between the two saw them nowhere (a broadcast just
        # acknowledged was missing from /api/analytics).
        async with self._lock:
            rows = await self._store.buckets(app_id, since)
            rows += [
                (b, c[0], c[1], c[2])
                for (a, b), c in self._counts.items()
                if a == app_id and b >= since
            ]
            users = await self._store.users_since(app_id, _hour(now - period_seconds))
            users |= {
                u for (a, h, u) in self._users if a == app_id and h >= _hour(now - period_seconds)
            }
        totals = [0, 0, 0]
        for bucket, *values in rows:
            point = series.setdefault(int(bucket // step) * step, [0, 0, 0])
            for i in range(3):
                totals[i] += values[i]
                point[i] += values[i]
        here, online_here = self._online(app_id)
        elsewhere, online_elsewhere = await self._store.online(
            app_id, int(now - 3 * self._interval - 5), self._node_id
        )
        online = online_here | online_elsewhere
        user_step = max(step, 3600)
        per_bucket = await self._store.users_per_bucket(
            app_id, _hour(now - period_seconds), user_step
        )
        # This node's users not flushed yet (at most one flush interval old) are not in it;
        # the current bucket has at least the users online now.
        current = int(now // user_step) * user_step
        per_bucket[current] = max(per_bucket.get(current, 0), len(online))
        return AnalyticsSnapshot(
            connections_total=totals[0],
            connections_current=here + elsewhere,
            events_total=totals[1],
            events_broadcasts=totals[2],
            users_online=len(online),
            users_total=len(users | online),
            series=[
                AnalyticsPoint(t, c, e, b, per_bucket.get(t // user_step * user_step, 0))
                for t, (c, e, b) in sorted(series.items())
            ],
        )
