"""The PresenceStore contract, identical on every backend (memory, Redis, NATS), then the expiry of
entries nobody refreshes, which only a shared store needs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.support.backends import BACKENDS, SHARED, presence_backend
from xshathra.model import AppId, ChannelRef, ClientInfoData
from xshathra.presence import PresenceStore

REF = ChannelRef(AppId("app"), "public:room")
A1 = ClientInfoData("alice", "c1", b'{"x":1}', b'{"seat":3}')
A2 = ClientInfoData("alice", "c2")
B1 = ClientInfoData("bob", "c3", b"", b'{"y":2}')


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[PresenceStore]:
    async with presence_backend(request.param) as store:
        yield store


async def test_add_list_stats_remove(store: PresenceStore) -> None:
    """Entries are listed by client id with their info; stats count clients and users."""
    assert await store.presence(REF) == {}
    assert await store.presence_stats(REF) == (0, 0)
    for info in (A1, A2, B1):
        await store.add_presence(REF, info)
    assert await store.presence(REF) == {"c1": A1, "c2": A2, "c3": B1}
    assert await store.presence_stats(REF) == (3, 2)
    await store.remove_presence(REF, "c2")
    assert await store.presence(REF) == {"c1": A1, "c3": B1}
    assert await store.presence_stats(REF) == (2, 2)
    await store.remove_presence(REF, "c1")
    assert await store.presence_stats(REF) == (1, 1)
    await store.remove_presence(REF, "c3")
    assert await store.presence(REF) == {} and await store.presence_stats(REF) == (0, 0)


async def test_add_again_replaces_the_info(store: PresenceStore) -> None:
    """Adding a client already present (a refresh) keeps one entry, with the newest info."""
    await store.add_presence(REF, A1)
    newer = ClientInfoData("alice", "c1", b'{"x":2}', b"")
    await store.add_presence(REF, newer)
    assert await store.presence(REF) == {"c1": newer}
    assert await store.presence_stats(REF) == (1, 1)


async def test_removing_an_absent_client_is_harmless(store: PresenceStore) -> None:
    """remove_presence of a client that is not there changes nothing."""
    await store.add_presence(REF, A1)
    await store.remove_presence(REF, "nobody")
    await store.remove_presence(ChannelRef(AppId("app"), "empty"), "c1")
    assert await store.presence(REF) == {"c1": A1}


async def test_channels_and_apps_are_separate(store: PresenceStore) -> None:
    """The same channel name in another app, or names that would collide if app and name
    were joined with ':', share nothing."""
    await store.add_presence(ChannelRef(AppId("a:b"), "c"), A1)
    await store.add_presence(ChannelRef(AppId("a"), "b:c"), B1)
    assert await store.presence(ChannelRef(AppId("a:b"), "c")) == {"c1": A1}
    assert await store.presence(ChannelRef(AppId("a"), "b:c")) == {"c3": B1}
    assert await store.presence(ChannelRef(AppId("other-app"), "c")) == {}


@pytest.mark.parametrize("kind", SHARED)
async def test_entries_not_refreshed_expire(kind: str) -> None:
    """Entries of a node that stopped refreshing them (it died) vanish after `ttl`; entries
    that keep being refreshed stay."""
    async with presence_backend(kind, ttl=1) as store:
        await store.add_presence(REF, ClientInfoData("ghost", "c9"))
        await store.add_presence(REF, A1)
        assert await store.presence_stats(REF) == (2, 2)
        deadline = asyncio.get_running_loop().time() + 5
        while "c9" in await store.presence(REF):
            assert asyncio.get_running_loop().time() < deadline, "presence outlived its ttl"
            await store.add_presence(REF, A1)  # the live node's refresh
            await asyncio.sleep(0.1)  # expiry is time itself: nothing to await but the clock
        assert await store.presence(REF) == {"c1": A1}
        assert await store.presence_stats(REF) == (1, 1)
