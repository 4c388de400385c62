"""A moving window in a `limits` storage: Redis shared by every node (`async+redis://...`), or
the library's own memory storage."""

from __future__ import annotations

import math
import time
from typing import Any

from limits import RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string


class LimitsCounter:
    """A moving window in a `limits` storage (memory, or Redis shared by every node)."""

    def __init__(self, storage_uri: str = "async+memory://") -> None:
        options: dict[str, Any] = {}
        if storage_uri.startswith("async+redis"):
            from xshathra.links.redis import redis_client

            # The backends' own client settings: a blocking pool (the library's default pool
            # refused the command past 100 in flight, MaxConnectionsError, and a counter that
            # fails allows the request: a burst went past the limit) and retries on a stale
            # connection after a Redis restart.
            pool = redis_client(storage_uri.removeprefix("async+")).connection_pool
            options = {"implementation": "redispy", "connection_pool": pool}
        self._storage = storage_from_string(storage_uri, **options)
        self._limiter = MovingWindowRateLimiter(self._storage)

    async def hit(self, per_minute: int, *keys: str, cost: int = 1) -> int | None:
        item = RateLimitItemPerMinute(per_minute)
        # The moving window adds `cost` entries in one atomic step (a Lua script on Redis),
        # or none when they do not all fit.
        if await self._limiter.hit(item, *keys, cost=cost):
            return None
        stats = await self._limiter.get_window_stats(item, *keys)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def first_use(self, key: str, ttl: int) -> bool:
        # INCR with an expiry set on creation, one atomic step on Redis: only one caller of
        # any node sees 1.
        storage: Any = self._storage  # an async storage: "async+" URIs only
        count: int = await storage.incr(f"once/{key}", ttl)
        return count == 1

    async def close(self) -> None:
        return None
