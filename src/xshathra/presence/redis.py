"""Presence in Redis, shared by every node: per channel a hash of client infos, a sorted set of
their expiry times (Redis's clock) and a hash of their user ids, kept by Lua scripts.

Entries expire `ttl` seconds after their last `add_presence`, so the clients of a node that
died vanish by themselves; a live node must therefore re-add its clients' presence well within
`ttl`. Only this module turns a `ChannelRef` into presence keys.
"""

from __future__ import annotations

from importlib import resources

import msgspec
from redis.asyncio import Redis

from xshathra.brokers import ClientInfoData
from xshathra.brokers.redis import redis_client
from xshathra.engine.channels import ChannelRef

Info = tuple[str, str, bytes, bytes]

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Info).decode


def _script(name: str) -> str:
    return resources.files("xshathra.presence.lua").joinpath(name).read_text(encoding="utf-8")


class RedisPresenceStore:
    def __init__(self, url: str, *, prefix: str = "xs", ttl: int = 60) -> None:
        if ttl < 1:
            raise ValueError("presence ttl must be at least 1 second")
        self._redis: Redis = redis_client(url)
        self._prefix = prefix
        self.ttl = ttl
        self._add = self._redis.register_script(_script("add.lua"))
        self._remove = self._redis.register_script(_script("remove.lua"))
        self._read = self._redis.register_script(_script("read.lua"))

    def _keys(self, ref: ChannelRef) -> list[str]:
        # Length-prefixed app id, as in the broker: ("a:b", "c") and ("a", "b:c") never meet.
        ident = f"{len(ref.app_id)}:{ref.app_id}:{ref.name}"
        return [f"{self._prefix}.{kind}.{ident}" for kind in ("ph", "pz", "pu")]

    async def add_presence(self, ref: ChannelRef, info: ClientInfoData) -> None:
        encoded = _encode((info.user, info.client, info.conn_info, info.chan_info))
        await self._add(
            keys=self._keys(ref), args=[info.client, encoded, info.user, self.ttl * 1000]
        )

    async def remove_presence(self, ref: ChannelRef, client_id: str) -> None:
        await self._remove(keys=self._keys(ref), args=[client_id])

    async def presence(self, ref: ChannelRef) -> dict[str, ClientInfoData]:
        flat = await self._read(keys=self._keys(ref), args=["list"])
        return {
            bytes(flat[i]).decode(): ClientInfoData(*_decode(flat[i + 1]))
            for i in range(0, len(flat), 2)
        }

    async def presence_stats(self, ref: ChannelRef) -> tuple[int, int]:
        clients, users = await self._read(keys=self._keys(ref), args=["stats"])
        return int(clients), int(users)

    async def close(self) -> None:
        await self._redis.aclose()
