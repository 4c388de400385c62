"""Rate limits (SPEC §6): per app at its `rate_limit` per minute on the HTTP API, and per
client IP on the token endpoints. A request counts the work it asks for (`cost`: each channel
of a broadcast, each command of a batch), all or nothing. Where the counts live is a
`WindowCounter`: in memory on one node, the `limits` library on a shared Redis
(`async+redis://...`), or JetStream when the nodes share NATS (`xshathra.api.ratelimit_nats`),
so limits hold across nodes.

Failed key attempts are counted per client address on this node only (`AuthFailures`): the
check runs before every authentication, so it must cost a dict lookup, not a round trip."""

from __future__ import annotations

import itertools
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
    async def hit(self, per_minute: int, *keys: str, cost: int = 1) -> int | None:
        """Count `cost` units against `per_minute` under `keys`, all or none: None when
        allowed (all counted), else the whole seconds until they would be (none counted)."""

    async def close(self) -> None: ...


WINDOW = 60  # seconds: limits are per minute


def sliding_window_wait(
    per_minute: int, count: int, previous: int, elapsed: float, cost: int = 1
) -> int | None:
    """The sliding-window counter's verdict on `cost` more units: None when allowed, else
    whole seconds to wait. `count` is this minute's units so far, `previous` the last
    minute's, weighted by how much of that minute still lies in the last 60 seconds
    (`elapsed`: seconds into this minute), as Cloudflare's and `limits`' counters do."""
    if previous * (WINDOW - elapsed) / WINDOW + count + cost <= per_minute:
        return None
    if count + cost > per_minute or previous == 0:
        return max(1, math.ceil(WINDOW - elapsed))  # only the next minute helps
    # Until enough of the previous minute has slid out of the window.
    return max(1, math.ceil(WINDOW - elapsed - (per_minute - count - cost) * WINDOW / previous))


class MemoryWindowCounter:
    """A sliding-window counter for one node: per key, this minute's count and the previous
    minute's, the previous weighted by how much of it still lies inside the last 60 seconds
    (as the NATS counter does). `limits`' own memory storage hands every hit to a worker
    thread to expire old entries, which costs more than the request it limits."""

    def __init__(self) -> None:
        # key -> (minute, count in it, count in the minute before)
        self._counts: dict[tuple[str, ...], tuple[int, int, int]] = {}
        self._swept = 0

    async def hit(self, per_minute: int, *keys: str, cost: int = 1) -> int | None:
        return self.add(per_minute, *keys, cost=cost)

    def add(self, per_minute: int, *keys: str, cost: int = 1) -> int | None:
        """`hit` without the await: nothing here waits."""
        now = time.time()
        minute = int(now // WINDOW)
        if minute != self._swept:
            self._sweep(minute)
        at, count, previous = self._counts.get(keys, (minute, 0, 0))
        if at != minute:  # the key's last minute is over: it becomes the previous one
            at, count, previous = minute, 0, count if at == minute - 1 else 0
        wait = sliding_window_wait(per_minute, count, previous, now - minute * WINDOW, cost)
        self._counts[keys] = (at, count if wait is not None else count + cost, previous)
        return wait

    def peek(self, per_minute: int, *keys: str) -> int | None:
        """What `hit` would answer for one more unit, counting nothing."""
        now = time.time()
        minute = int(now // WINDOW)
        at, count, previous = self._counts.get(keys, (minute, 0, 0))
        if at != minute:
            count, previous = 0, count if at == minute - 1 else 0
        return sliding_window_wait(per_minute, count, previous, now - minute * WINDOW)

    def forget_oldest(self, n: int) -> None:
        """Forget the `n` keys counted first (dicts keep insertion order)."""
        for key in list(itertools.islice(self._counts, n)):
            del self._counts[key]

    def __len__(self) -> int:
        return len(self._counts)

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

    async def hit(self, per_minute: int, *keys: str, cost: int = 1) -> int | None:
        item = RateLimitItemPerMinute(per_minute)
        # The moving window adds `cost` entries in one atomic step (a Lua script on Redis),
        # or none when they do not all fit.
        if await self._limiter.hit(item, *keys, cost=cost):
            return None
        stats = await self._limiter.get_window_stats(item, *keys)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def close(self) -> None:
        return None


class AuthFailures:
    """Failed key attempts per client address in the last minute, on this node. Keys are 192
    bits of randomness, so this is not what keeps them secret; it keeps a guesser from
    costing key lookups at line rate. Only distinct wrong keys count: the same wrong key sent
    again (a backend still using a rotated key, say) is remembered for a minute and answered
    without a lookup, so it costs nothing and never locks its address out. Bounded: past
    `max_clients` addresses (or wrong keys) the oldest are forgotten (a guesser with that many
    addresses is throttled per address by the token limits and the app limits anyway)."""

    def __init__(self, per_minute: int, *, max_clients: int = 100_000) -> None:
        self._per_minute = per_minute
        self._max_clients = max_clients
        self._counts = MemoryWindowCounter()
        self._known_bad: dict[str, float] = {}  # hash of a wrong key -> until when it is known

    def blocked(self, client: str) -> int | None:
        """None when `client` may try a key, else the seconds until it may again."""
        if self._per_minute <= 0 or not len(self._counts):
            return None
        return self._counts.peek(self._per_minute, client or "unknown")

    def known_bad(self, secret_hash: str) -> bool:
        """Whether this key (by its hash) failed in the last minute: refuse it without a lookup.
        A wrong key never becomes right: new keys are fresh random values."""
        until = self._known_bad.get(secret_hash)
        return until is not None and until > time.monotonic()

    def failed(self, client: str, secret_hash: str) -> None:
        if self._per_minute <= 0:
            return
        now = time.monotonic()
        if self._known_bad.get(secret_hash, 0.0) > now:
            return  # the same wrong key again: not a new guess
        if len(self._known_bad) >= self._max_clients:
            for stale in list(itertools.islice(self._known_bad, self._max_clients // 10)):
                del self._known_bad[stale]
        self._known_bad[secret_hash] = now + WINDOW
        if len(self._counts) >= self._max_clients:
            self._counts.forget_oldest(self._max_clients // 10)
        self._counts.add(self._per_minute, client or "unknown")


class RateLimiter:
    def __init__(
        self,
        counter: WindowCounter,
        *,
        token_per_minute: int = 100,
        auth_failures_per_minute: int = 30,
    ) -> None:
        self._counter = counter
        self._token_per_minute = token_per_minute
        self._auth_failures = AuthFailures(auth_failures_per_minute)

    async def _hit(self, per_minute: int, *keys: str, cost: int = 1) -> int | None:
        """If the shared storage is unreachable the request is allowed (and logged): a broker
        outage must not take the whole HTTP API down with it."""
        try:
            return await self._counter.hit(max(1, per_minute), *keys, cost=cost)
        except (ConnectionError, OSError, TimeoutError) as exc:
            log.warning("rate limit storage unavailable (%s): allowing", type(exc).__name__)
            return None
        except Exception as exc:
            if not type(exc).__module__.startswith(("redis", "nats")):
                raise
            log.warning("rate limit storage unavailable (%s): allowing", type(exc).__name__)
            return None

    async def hit_app(self, app: Application, *, cost: int = 1) -> int | None:
        """Count `cost` units of work against the app's per-minute `rate_limit`."""
        return await self._hit(app.rate_limit, "app", app.app_id, cost=cost)

    async def hit_ip(self, ip: str) -> int | None:
        return await self._hit(self._token_per_minute, "token-ip", ip or "unknown")

    def auth_blocked(self, client: str) -> int | None:
        """Seconds `client` must wait before trying a key again (too many failures), or None."""
        return self._auth_failures.blocked(client)

    def auth_known_bad(self, secret_hash: str) -> bool:
        """Whether this key failed on this node in the last minute (answer 401, no lookup)."""
        return self._auth_failures.known_bad(secret_hash)

    def auth_failed(self, client: str, secret_hash: str) -> None:
        """A wrong key (by its hash) from `client`; only distinct wrong keys count."""
        self._auth_failures.failed(client, secret_hash)

    async def close(self) -> None:
        await self._counter.close()
