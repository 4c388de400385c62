"""Broker and presence backends for the contract suites: memory and Redis, each test under a
unique Redis key prefix whose keys are deleted afterwards."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.support.services import REDIS_HOST, REDIS_PORT, ensure_service
from xshathra.brokers import Broker, BrokerPublication, ClientInfoData
from xshathra.engine.channels import ChannelRef
from xshathra.presence import PresenceStore

REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
BACKENDS = ["memory", "redis"]


class Collector:
    """A BrokerEventHandler that queues what it hears, to be awaited under a deadline."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[tuple[str, ChannelRef | None, Any]] = asyncio.Queue()
        self.reconnects = asyncio.Event()

    def on_publication(self, ref: ChannelRef, pub: BrokerPublication) -> None:
        self.events.put_nowait(("pub", ref, pub))

    def on_join(self, ref: ChannelRef, info: ClientInfoData) -> None:
        self.events.put_nowait(("join", ref, info))

    def on_leave(self, ref: ChannelRef, info: ClientInfoData) -> None:
        self.events.put_nowait(("leave", ref, info))

    def on_control(self, data: bytes) -> None:
        self.events.put_nowait(("control", None, data))

    def on_reconnect(self) -> None:
        self.reconnects.set()

    async def next(self, timeout: float = 5.0) -> tuple[str, ChannelRef | None, Any]:
        return await asyncio.wait_for(self.events.get(), timeout)


def redis_admin() -> Any:
    """A plain client of the test Redis (for inspecting or breaking things), caller closes it."""
    from redis.asyncio import Redis

    return Redis.from_url(REDIS_URL)


async def _delete_prefix(prefix: str) -> None:
    client = redis_admin()
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}.*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


class BrokerBackend:
    """Brokers of one backend sharing one namespace: each `make()` is another node (on memory,
    where there is only one node, the same broker)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.prefix = f"xs_test_{secrets.token_hex(6)}"
        self._made: list[Broker] = []
        self._memory: Broker | None = None

    def make(self, node_id: str | None = None) -> Broker:
        broker: Broker
        if self.kind == "memory":
            from xshathra.brokers.memory import MemoryBroker

            if self._memory is None:
                self._memory = MemoryBroker()
            broker = self._memory
        else:
            from xshathra.brokers.redis import RedisBroker

            node_id = node_id or f"node-{len(self._made)}-{secrets.token_hex(3)}"
            broker = RedisBroker(REDIS_URL, prefix=self.prefix, node_id=node_id)
        self._made.append(broker)
        return broker

    async def lose_state(self) -> None:
        """The broker's storage forgets everything: Redis restarted empty, or the one memory
        node restarted. Brokers made afterwards see the new state."""
        if self.kind == "memory":
            self._memory = None
        else:
            await _delete_prefix(self.prefix)

    async def aclose(self) -> None:
        for broker in self._made:
            await broker.close()
        if self.kind == "redis":
            await _delete_prefix(self.prefix)


@asynccontextmanager
async def broker_backend(kind: str) -> AsyncIterator[BrokerBackend]:
    if kind == "redis":
        ensure_service("redis", REDIS_HOST, REDIS_PORT)
    backend = BrokerBackend(kind)
    try:
        yield backend
    finally:
        await backend.aclose()


@asynccontextmanager
async def presence_backend(kind: str, ttl: int = 60) -> AsyncIterator[PresenceStore]:
    store: PresenceStore
    prefix = f"xs_test_{secrets.token_hex(6)}"
    if kind == "memory":
        from xshathra.presence.memory import MemoryPresenceStore

        store = MemoryPresenceStore()
    else:
        ensure_service("redis", REDIS_HOST, REDIS_PORT)
        from xshathra.presence.redis import RedisPresenceStore

        store = RedisPresenceStore(REDIS_URL, prefix=prefix, ttl=ttl)
    try:
        yield store
    finally:
        await store.close()
        if kind == "redis":
            await _delete_prefix(prefix)
