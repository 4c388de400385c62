"""Presence in Redis, shared by every node: per channel a hash of client infos and a sorted set
of their expiry times. A node refreshes its own clients' entries; those of a node that died
expire after `ttl` seconds and are dropped on the next read."""

from __future__ import annotations

import time
from importlib import resources

import msgspec
from redis.asyncio import Redis

from xshathra.brokers import ClientInfoData
from xshathra.brokers.redis import redis_client
from xshathra.engine.channels import ChannelRef

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(tuple[str, str, bytes, bytes]).decode


def _script(name: str) -> str:
    return resources.files("xshathra.presence.lua").joinpath(name).read_text()


class RedisPresenceStore:
    def __init__(self, url: str, *, prefix: str = "xs", ttl: int = 60) -> None:
        self._redis: Redis = redis_client(url)
        self._prefix = prefix
        self.ttl = ttl
        self._add = self._redis.register_script(_script("add.lua"))
        self._remove = self._redis.register_script(_script("remove.lua"))
        self._read = self._redis.register_script(_script("read.lua"))

    def _keys(self, ref: ChannelRef) -> list[str]:
        ident = f"{len(ref.app_id)}:{ref.app_id}:{ref.name}"
        return [f"{self._prefix}.ph.{ident}", f"{self._prefix}.pz.{ident}"]

    async def add_presence(self, ref: ChannelRef, info: ClientInfoData) -> None:
        encoded = _encode((info.user, info.client, info.conn_info, info.chan_info))
        now = int(time.time())
        await self._add(
            keys=self._keys(ref), args=[info.client, encoded, now + self.ttl, self.ttl * 2]
        )

    async def remove_presence(self, ref: ChannelRef, client_id: str) -> None:
        await self._remove(keys=self._keys(ref), args=[client_id])

    async def presence(self, ref: ChannelRef) -> dict[str, ClientInfoData]:
        flat = await self._read(keys=self._keys(ref), args=[int(time.time())])
        result: dict[str, ClientInfoData] = {}
        for i in range(0, len(flat), 2):
            result[bytes(flat[i]).decode()] = ClientInfoData(*_decode(flat[i + 1]))
        return result

    async def presence_stats(self, ref: ChannelRef) -> tuple[int, int]:
        clients = await self.presence(ref)
        return len(clients), len({c.user for c in clients.values()})

    async def close(self) -> None:
        await self._redis.aclose()
