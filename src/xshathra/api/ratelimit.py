"""Rate limits (SPEC §6) with the `limits` library: per app at its `rate_limit` per minute on
the HTTP API, and per client IP on the token endpoints. The storage is memory on one node and
can be a shared Redis (`async+redis://...`) so limits hold across nodes."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from limits import RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from xshathra.tenancy.apps import Application

log = logging.getLogger("xshathra.ratelimit")


class RateLimiter:
    def __init__(
        self, storage_uri: str = "async+memory://", *, token_per_minute: int = 100
    ) -> None:
        options: dict[str, Any] = {}
        if storage_uri.startswith("async+redis"):
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError
            from redis.exceptions import TimeoutError as RedisTimeoutError

            options = {
                "implementation": "redispy",
                # A stale pooled connection after a Redis restart is retried, not surfaced.
                "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
                "retry_on_error": [RedisConnectionError, RedisTimeoutError],
            }
        self._storage = storage_from_string(storage_uri, **options)
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._token_item = RateLimitItemPerMinute(token_per_minute)

    async def _hit(self, item: RateLimitItemPerMinute, *keys: str) -> int | None:
        """None when allowed; else whole seconds until a request would be allowed again.

        If the shared storage is unreachable the request is allowed (and logged): a broker
        outage must not take the whole HTTP API down with it."""
        try:
            if await self._limiter.hit(item, *keys):
                return None
        except (ConnectionError, OSError, TimeoutError) as exc:
            log.warning("rate limit storage unavailable (%s): allowing", type(exc).__name__)
            return None
        except Exception as exc:
            if "redis" not in type(exc).__module__:
                raise
            log.warning("rate limit storage unavailable (%s): allowing", type(exc).__name__)
            return None
        stats = await self._limiter.get_window_stats(item, *keys)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def hit_app(self, app: Application) -> int | None:
        return await self._hit(RateLimitItemPerMinute(max(1, app.rate_limit)), "app", app.app_id)

    async def hit_ip(self, ip: str) -> int | None:
        return await self._hit(self._token_item, "token-ip", ip or "unknown")
