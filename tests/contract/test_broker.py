"""The Broker contract, identical on every backend (memory, Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from tests.support.backends import Collector, broker_backend
from xshathra.brokers import Broker, ClientInfoData, HistoryOptions, PublishOptions, StreamPosition
from xshathra.engine.channels import ChannelRef
from xshathra.tenancy.apps import AppId

REF = ChannelRef(AppId("app"), "public:room")
HISTORY = PublishOptions(history_size=3, history_ttl=60)


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], Broker]]:
    async with broker_backend(request.param) as factory:
        yield factory


@pytest.fixture
async def node(make: Callable[[], Broker]) -> AsyncIterator[tuple[Broker, Collector]]:
    broker, collector = make(), Collector()
    await broker.start(collector)
    yield broker, collector
    await broker.close()


async def test_publish_reaches_a_subscribed_handler_only(node: tuple[Broker, Collector]) -> None:
    broker, events = node
    other = ChannelRef(AppId("app"), "elsewhere")
    await broker.subscribe(REF)
    await broker.publish(other, b'"not for us"', PublishOptions())
    await broker.publish(REF, b'{"a":1}', PublishOptions(tags={"event": "e"}))
    kind, ref, pub = await events.next()
    assert (kind, ref) == ("pub", REF)
    assert pub.data == b'{"a":1}' and pub.tags == {"event": "e"}


async def test_offsets_increase_and_history_is_bounded(node: tuple[Broker, Collector]) -> None:
    broker, _ = node
    positions = [await broker.publish(REF, b"%d" % i, HISTORY) for i in range(5)]
    assert [p.offset for p in positions] == [1, 2, 3, 4, 5]
    assert len({p.epoch for p in positions}) == 1
    history = await broker.history(REF, HistoryOptions(limit=-1))
    assert [p.data for p in history.publications] == [b"2", b"3", b"4"]
    assert [p.offset for p in history.publications] == [3, 4, 5]
    assert history.position == positions[-1]


async def test_history_since_limit_reverse(node: tuple[Broker, Collector]) -> None:
    broker, _ = node
    for i in range(3):
        last = await broker.publish(REF, b"%d" % i, HISTORY)
    since = StreamPosition(1, last.epoch)
    after = await broker.history(REF, HistoryOptions(limit=-1, since=since))
    assert [p.offset for p in after.publications] == [2, 3]
    newest = await broker.history(REF, HistoryOptions(limit=1, reverse=True))
    assert [p.offset for p in newest.publications] == [3]
    first = await broker.history(REF, HistoryOptions(limit=1))
    assert [p.offset for p in first.publications] == [1]
    only_position = await broker.history(REF, HistoryOptions(limit=0))
    assert only_position.publications == [] and only_position.position == last
    wrong_epoch = await broker.history(REF, HistoryOptions(limit=-1, since=StreamPosition(1, "x")))
    assert wrong_epoch.publications == []


async def test_position_of_an_unused_channel(node: tuple[Broker, Collector]) -> None:
    broker, _ = node
    first = await broker.history(REF, HistoryOptions(limit=0))
    again = await broker.history(REF, HistoryOptions(limit=0))
    assert first.position.offset == 0 and first.position.epoch == again.position.epoch != ""
    published = await broker.publish(REF, b"1", HISTORY)
    assert published == StreamPosition(1, first.position.epoch)


async def test_history_expires_after_its_ttl(node: tuple[Broker, Collector]) -> None:
    broker, _ = node
    await broker.publish(REF, b"1", PublishOptions(history_size=3, history_ttl=1))
    deadline = asyncio.get_running_loop().time() + 5
    while (await broker.history(REF, HistoryOptions(limit=-1))).publications:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.2)  # expiry is time itself: nothing to await but the clock


async def test_idempotency_key(node: tuple[Broker, Collector]) -> None:
    broker, events = node
    await broker.subscribe(REF)
    opts = PublishOptions(history_size=3, history_ttl=60, idempotency_key="k1")
    first = await broker.publish(REF, b"1", opts)
    second = await broker.publish(REF, b"1", opts)
    assert first == second
    await events.next()
    assert events.events.empty()
    assert len((await broker.history(REF, HistoryOptions(limit=-1))).publications) == 1


async def test_remove_history_keeps_the_position(node: tuple[Broker, Collector]) -> None:
    broker, _ = node
    last = await broker.publish(REF, b"1", HISTORY)
    await broker.remove_history(REF)
    after = await broker.history(REF, HistoryOptions(limit=-1))
    assert after.publications == [] and after.position == last


async def test_join_leave_and_control(node: tuple[Broker, Collector]) -> None:
    broker, events = node
    await broker.subscribe(REF)
    info = ClientInfoData("alice", "c1", b'{"n":1}', b"")
    await broker.publish_join(REF, info)
    assert await events.next() == ("join", REF, info)
    await broker.publish_leave(REF, info)
    assert await events.next() == ("leave", REF, info)
    await broker.publish_control(b"hello nodes")
    assert await events.next() == ("control", None, b"hello nodes")


async def test_unsubscribe_stops_delivery(node: tuple[Broker, Collector]) -> None:
    broker, events = node
    await broker.subscribe(REF)
    await broker.unsubscribe(REF)
    await broker.publish(REF, b"1", PublishOptions())
    await broker.publish_control(b"marker")  # control always arrives: it shows order
    assert (await events.next())[0] == "control"


@pytest.mark.parametrize("kind", ["redis"])
async def test_two_nodes_share_publications(kind: str) -> None:
    async with broker_backend(kind) as make:
        a, b = make(), make()
        ea, eb = Collector(), Collector()
        await a.start(ea)
        await b.start(eb)
        await b.subscribe(REF)
        await a.publish(REF, b'"from a"', HISTORY)
        _, _, pub = await eb.next()
        assert pub.data == b'"from a"' and pub.offset == 1
        history = await b.history(REF, HistoryOptions(limit=-1))
        assert [p.data for p in history.publications] == [b'"from a"']
        await a.close()
        await b.close()


async def test_redis_resubscribes_after_its_connection_is_killed() -> None:
    async with broker_backend("redis") as make:
        from redis.asyncio import Redis

        from tests.support.backends import REDIS_URL

        broker, events = make(), Collector()
        await broker.start(events)
        await broker.subscribe(REF)
        admin: Redis = Redis.from_url(REDIS_URL)
        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await asyncio.wait_for(events.reconnects.wait(), 10)
        await broker.publish(REF, b'"after"', PublishOptions())
        kind, _, pub = await events.next()
        assert kind == "pub" and pub.data == b'"after"'
        await admin.aclose()
        await broker.close()
