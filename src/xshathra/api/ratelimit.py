"""Rate limits (SPEC §6): per app at its `rate_limit` per minute on the HTTP API, and per
client IP on the token endpoints. Where the counts live is a `WindowCounter`: in memory on one
node, the `limits` library on a shared Redis (`async+redis://...`), or JetStream when the nodes
share NATS (`xshathra.api.ratelimit_nats`), so limits hold across nodes."""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Protocol

from limits import RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from xshathra.tenancy.apps import Application

log = logging.getLogger("xshathra.ratelimit")


class WindowCounter(Protocol):
    async def hit(self, per_minute: int, *keys: str) -> int | None:
        """Count one request against `per_minute` under `keys`: None when allowed, else the
        whole seconds until a request would be allowed again."""

    async def close(self) -> None: ...


WINDOW = 60  # seconds: limits are per minute


def sliding_window_wait(per_minute: int, count: int, previous: int, elapsed: float) -> int | None:
    """The sliding-window counter's verdict on one more request: None when allowed, else
    whole seconds to wait. `count` is this minute's requests so far, `previous` the last
    minute's, weighted by how much of that minute still lies in the last 60 seconds
    (`elapsed`: seconds into this minute), as Cloudflare's and `limits`' counters do."""
    if previous * (WINDOW - elapsed) / WINDOW + count + 1 <= per_minute:
        return None
    if count + 1 > per_minute or previous == 0:
        return max(1, math.ceil(WINDOW - elapsed))  # only the next minute helps
    # Until enough of the previous minute has slid out of the window.
    return max(1, math.ceil(WINDOW - elapsed - (per_minute - count - 1) * WINDOW / previous))


class MemoryWindowCounter:
    """A sliding-window counter for one node: per key, this minute's count and the previous
    minute's, the previous weighted by how much of it still lies inside the last 60 seconds
    (as the NATS counter does). `limits`' own memory storage hands every hit to a worker
    thread to expire old entries, which costs more than the request it limits."""

    def __init__(self) -> None:
        # key -> (minute, count in it, count in the minute before)
        self._counts: dict[tuple[str, ...], tuple[int, int, int]] = {}
        self._swept = 0

    async def hit(self, per_minute: int, *keys: str) -> int | None:
        now = time.time()
        minute = int(now // WINDOW)
        if minute != self._swept:
            self._sweep(minute)
        at, count, previous = self._counts.get(keys, (minute, 0, 0))
        if at != minute:  # the key's last minute is over: it becomes the previous one
            at, count, previous = minute, 0, count if at == minute - 1 else 0
        wait = sliding_window_wait(per_minute, count, previous, now - minute * WINDOW)
        self._counts[keys] = (at, count if wait is not None else count + 1, previous)
        return wait

    def _sweep(self, minute: int) -> None:
        """Once a minute: forget keys idle for two minutes, so memory follows live keys."""
        self._swept = minute
        for key in [k for k, (at, _, _) in self._counts.items() if at < minute - 1]:
            del self._counts[key]

    async def close(self) -> None:
        self._counts.clear()


class LimitsCounter:
    """A moving window in a `limits` storage (memory, or Redis shared by every node)."""

    def __init__(self, storage_uri: str = "async+memory://") -> None:
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

    async def hit(self, per_minute: int, *keys: str) -> int | None:
        item = RateLimitItemPerMinute(per_minute)
        if await self._limiter.hit(item, *keys):
            return None
        stats = await self._limiter.get_window_stats(item, *keys)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def close(self) -> None:
        return None


class RateLimiter:
    def __init__(self, counter: WindowCounter, *, token_per_minute: int = 100) -> None:
        self._counter = counter
        self._token_per_minute = token_per_minute

    async def _hit(self, per_minute: int, *keys: str) -> int | None:
        """If the shared storage is unreachable the request is allowed (and logged): a broker
        outage must not take the whole HTTP API down with it."""
        try:
            return await self._counter.hit(max(1, per_minute), *keys)
        except (ConnectionError, OSError, TimeoutError) as exc:
            log.warning("rate limit storage unavailable (%s): allowing", type(exc).__name__)
            return None
        except Exception as exc:
            if not type(exc).__module__.startswith(("redis", "nats")):
                raise
            log.warning("rate limit storage unavailable (%s): allowing", type(exc).__name__)
            return None

    async def hit_app(self, app: Application) -> int | None:
        return await self._hit(app.rate_limit, "app", app.app_id)

    async def hit_ip(self, ip: str) -> int | None:
        return await self._hit(self._token_per_minute, "token-ip", ip or "unknown")

    async def close(self) -> None:
        await self._counter.close()
