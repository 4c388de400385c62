"""The PresenceStore contract, identical on every backend (memory, Redis)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.backends import presence_backend
from xshathra.brokers import ClientInfoData
from xshathra.engine.channels import ChannelRef
from xshathra.tenancy.apps import AppId

REF = ChannelRef(AppId("app"), "public:room")


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_add_list_stats_remove(kind: str) -> None:
    async with presence_backend(kind) as store:
        a1 = ClientInfoData("alice", "c1", b'{"x":1}', b"")
        a2 = ClientInfoData("alice", "c2")
        b1 = ClientInfoData("bob", "c3")
        for info in (a1, a2, b1):
            await store.add_presence(REF, info)
        assert await store.presence(REF) == {"c1": a1, "c2": a2, "c3": b1}
        assert await store.presence_stats(REF) == (3, 2)
        other = ChannelRef(AppId("other-app"), "public:room")
        assert await store.presence(other) == {}
        await store.remove_presence(REF, "c2")
        assert await store.presence_stats(REF) == (2, 2)


async def test_redis_entries_of_a_dead_node_expire() -> None:
    async with presence_backend("redis", ttl=1) as store:
        await store.add_presence(REF, ClientInfoData("ghost", "c9"))
        assert await store.presence_stats(REF) == (1, 1)
        deadline = asyncio.get_running_loop().time() + 5
        while await store.presence_stats(REF) != (0, 0):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.2)  # expiry is time itself
