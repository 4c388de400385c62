"""Broker and presence backends for contract tests: memory and Redis, each test under a unique
key prefix."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from tests.support.services import REDIS_HOST, REDIS_PORT, ensure_service
from xshathra.brokers import Broker, BrokerPublication, ClientInfoData
from xshathra.engine.channels import ChannelRef
from xshathra.presence import PresenceStore

REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


class Collector:
    """A BrokerEventHandler that queues what it hears."""

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


async def _flush_prefix(prefix: str) -> None:
    from redis.asyncio import Redis

    client: Redis = Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{prefix}.*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@asynccontextmanager
async def broker_backend(kind: str) -> AsyncIterator[Callable[[], Broker]]:
    """Yields a factory of brokers that share one namespace (several 'nodes')."""
    if kind == "memory":
        from xshathra.brokers.memory import MemoryBroker

        shared = MemoryBroker()
        yield lambda: shared
        return
    ensure_service("redis", REDIS_HOST, REDIS_PORT)
    from xshathra.brokers.redis import RedisBroker

    prefix = f"xs_test_{secrets.token_hex(6)}"
    try:
        yield lambda: RedisBroker(REDIS_URL, prefix=prefix)
    finally:
        await _flush_prefix(prefix)


@asynccontextmanager
async def presence_backend(kind: str, ttl: int = 60) -> AsyncIterator[PresenceStore]:
    if kind == "memory":
        from xshathra.presence.memory import MemoryPresenceStore

        store = MemoryPresenceStore()
        yield store
        await store.close()
        return
    ensure_service("redis", REDIS_HOST, REDIS_PORT)
    from xshathra.presence.redis import RedisPresenceStore

    prefix = f"xs_test_{secrets.token_hex(6)}"
    redis_store = RedisPresenceStore(REDIS_URL, prefix=prefix, ttl=ttl)
    try:
        yield redis_store
    finally:
        await redis_store.close()
        await _flush_prefix(prefix)
