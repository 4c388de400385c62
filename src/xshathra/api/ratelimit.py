"""Rate limits (SPEC §6): per app at its `rate_limit` per minute on the HTTP API, and per
client IP on the token endpoints. A request counts the work it asks for (`cost`: each channel
of a broadcast, each command of a batch), all or nothing. Where the counts live is a
`WindowCounter` (package `xshathra.ratelimit`): in memory on one node, the `limits` library
on a shared Redis (`async+redis://...`), or JetStream when the nodes share NATS, so limits
hold across nodes. This module is the policy: what is counted, under which keys.

Failed key attempts are counted per client address on this node only (`AuthFailures`): the
check runs before every authentication, so it must cost a dict lookup, not a round trip."""

from __future__ import annotations

import itertools
import logging
import time
from typing import Literal

from xshathra.ratelimit import WINDOW, WindowCounter
from xshathra.ratelimit.memory import MemoryWindowCounter
from xshathra.tenancy.apps import Application

log = logging.getLogger("xshathra.ratelimit")


# What a key was offered as: the admin key, an app's API key, or an app's secret.
KeyKind = Literal["admin", "app", "secret"]


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

    async def first_use(self, key: str, ttl: int) -> bool:
        """Whether `key` is new to every node sharing the storage (see `WindowCounter`). As
        with limits, an unreachable storage allows (and logs): the broker is away then too."""
        try:
            return await self._counter.first_use(key, ttl)
        except (ConnectionError, OSError, TimeoutError) as exc:
            log.warning("shared storage unavailable for a once-only mark (%s)", type(exc).__name__)
            return True
        except Exception as exc:
            if not type(exc).__module__.startswith(("redis", "nats")):
                raise
            log.warning("shared storage unavailable for a once-only mark (%s)", type(exc).__name__)
            return True

    async def hit_app(self, app: Application, *, cost: int = 1) -> int | None:
        """Count `cost` units of work against the app's per-minute `rate_limit`."""
        return await self._hit(app.rate_limit, "app", app.app_id, cost=cost)

    async def hit_ip(self, ip: str) -> int | None:
        return await self._hit(self._token_per_minute, "token-ip", ip or "unknown")

    def auth_blocked(self, client: str) -> int | None:
        """Seconds `client` must wait before trying a key again (too many failures), or None."""
        return self._auth_failures.blocked(client)

    def auth_known_bad(self, kind: KeyKind, secret_hash: str) -> bool:
        """Whether this key failed on this node in the last minute as a key of `kind` (answer
        401, no lookup). Kinds are apart: an app key sent as the admin key is wrong as the
        admin key only."""
        return self._auth_failures.known_bad(f"{kind}:{secret_hash}")

    def auth_failed(self, client: str, kind: KeyKind, secret_hash: str) -> None:
        """A wrong key of `kind` (by its hash) from `client`; only distinct wrong keys count."""
        self._auth_failures.failed(client, f"{kind}:{secret_hash}")

    async def close(self) -> None:
        await self._counter.close()
