"""Broker and presence backends for the contract suites: memory, Redis and NATS, each test under
a unique prefix whose Redis keys or JetStream streams are deleted afterwards."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.support.services import NATS_HOST, NATS_PORT, REDIS_HOST, REDIS_PORT, ensure_service
from xshathra.brokers import ClusterBroker
from xshathra.model import BrokerPublication, ChannelRef, ClientInfoData
from xshathra.presence import PresenceStore

REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
NATS_URL = f"nats://{NATS_HOST}:{NATS_PORT}"
BACKENDS = ["memory", "redis", "nats"]
SHARED = ["redis", "nats"]


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


async def delete_streams(prefix: str) -> None:
    """Delete the JetStream streams a test's brokers and presence stores created."""
    import nats

    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        # STREAM.LIST answers one page (256 streams); a suite run leaves more than that on
        # the server, so a stream past the first page was never deleted and a test that
        # "lost the broker's state" still read the old epoch. Collect every page first:
        # deleting while paging would shift the offsets.
        names: list[str] = []
        while page := await js.streams_info(offset=len(names)):
            names.extend(info.config.name or "" for info in page)
        for name in names:
            if name.startswith(f"{prefix}_"):
                await js.delete_stream(name)
    finally:
        await nc.close()


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
        self._made: list[ClusterBroker] = []
        self._memory: ClusterBroker | None = None
        self.url: str | None = None  # another server than the shared one (outage tests)

    def make(self, node_id: str | None = None) -> ClusterBroker:
        broker: ClusterBroker
        if self.kind == "memory":
            from xshathra.brokers.memory import MemoryBroker

            if self._memory is None:
                self._memory = MemoryBroker()
            broker = self._memory
        elif self.kind == "nats":
            from xshathra.brokers.nats import NatsBroker
            from xshathra.links.nats import NatsLink

            node_id = node_id or f"node-{len(self._made)}-{secrets.token_hex(3)}"
            link = NatsLink(self.url or NATS_URL, name=f"{self.prefix}.{node_id}")
            broker = NatsBroker(link, prefix=self.prefix, node_id=node_id)
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
        elif self.kind == "nats":
            await delete_streams(self.prefix)
        else:
            await _delete_prefix(self.prefix)

    async def aclose(self) -> None:
        for broker in self._made:
            await broker.close()
        if self.kind == "redis":
            await _delete_prefix(self.prefix)
        elif self.kind == "nats" and self.url is None:
            await delete_streams(self.prefix)


@asynccontextmanager
async def broker_backend(kind: str) -> AsyncIterator[BrokerBackend]:
    if kind == "redis":
        ensure_service("redis", REDIS_HOST, REDIS_PORT)
    elif kind == "nats":
        ensure_service("nats", NATS_HOST, NATS_PORT)
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
    elif kind == "nats":
        ensure_service("nats", NATS_HOST, NATS_PORT)
        from xshathra.links.nats import NatsLink
        from xshathra.presence.nats import NatsPresenceStore

        store = NatsPresenceStore(NatsLink(NATS_URL, name=prefix), prefix=prefix, ttl=ttl)
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
        elif kind == "nats":
            await delete_streams(prefix)
