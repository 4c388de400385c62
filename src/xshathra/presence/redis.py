"""Presence in Redis, shared by every node: per channel a hash of client infos, a sorted set of
their expiry times (Redis's clock) and a hash of their user ids, kept by Lua scripts.

Entries expire `ttl` seconds after their last `add_presence`, so the clients of a node that
died vanish by themselves; a live node must therefore re-add its clients' presence well within
`ttl`. Only this module turns a `ChannelRef` into presence keys.
"""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis

from xshathra.links.keys import channel_ident
from xshathra.links.packing import decode_info, encode_info, pack_info, unpack_info
from xshathra.links.redis import redis_client
from xshathra.model import ChannelRef, ClientInfoData, PresenceStats
from xshathra.presence import PresenceStore


def _script(name: str) -> str:
    return resources.files("xshathra.presence.lua").joinpath(name).read_text(encoding="utf-8")


class RedisPresenceStore(PresenceStore):
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
        ident = channel_ident(ref)  # the broker's too: ("a:b", "c") never meets ("a", "b:c")
        return [f"{self._prefix}.{kind}.{ident}" for kind in ("ph", "pz", "pu")]

    async def add_presence(self, ref: ChannelRef, info: ClientInfoData) -> None:
        encoded = encode_info(pack_info(info))
        await self._add(
            keys=self._keys(ref), args=[info.client, encoded, info.user, self.ttl * 1000]
        )

    async def remove_presence(self, ref: ChannelRef, client_id: str) -> None:
        await self._remove(keys=self._keys(ref), args=[client_id])

    async def presence(self, ref: ChannelRef) -> dict[str, ClientInfoData]:
        flat = await self._read(keys=self._keys(ref), args=["list"])
        return {
            bytes(flat[i]).decode(): unpack_info(decode_info(flat[i + 1]))
            for i in range(0, len(flat), 2)
        }

    async def presence_stats(self, ref: ChannelRef) -> PresenceStats:
        clients, users = await self._read(keys=self._keys(ref), args=["stats"])
        return PresenceStats(int(clients), int(users))

    async def close(self) -> None:
        await self._redis.aclose()
