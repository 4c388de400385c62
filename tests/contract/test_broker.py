"""The Broker contract, identical on every backend (memory, Redis), then what only a shared
broker can show: two nodes, and a subscription that survives losing its connection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.support.backends import (
    BACKENDS,
    SHARED,
    BrokerBackend,
    Collector,
    broker_backend,
    redis_admin,
)
from tests.support.services import NatsServer
from xshathra.brokers import ClusterBroker
from xshathra.model import (
    AppId,
    BrokerPublication,
    ChannelRef,
    ClientInfoData,
    HistoryOptions,
    PublishOptions,
    StreamPosition,
)

REF = ChannelRef(AppId("app"), "public:room")
OTHER = ChannelRef(AppId("app"), "elsewhere")
HISTORY = PublishOptions(history_size=3, history_ttl=60)
ALICE = ClientInfoData("alice", "c1", b'{"name":"Alice"}', b'{"role":"host"}')


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[BrokerBackend]:
    async with broker_backend(request.param) as backend:
        yield backend


@pytest.fixture
async def node(backend: BrokerBackend) -> tuple[ClusterBroker, Collector]:
    """A started broker and the handler it reports to (closed by the backend)."""
    broker, events = backend.make(), Collector()
    await broker.start(events)
    return broker, events


async def _all(broker: ClusterBroker, ref: ChannelRef = REF) -> list[BrokerPublication]:
    return (await broker.history(ref, HistoryOptions(limit=-1))).publications


# --- delivery -------------------------------------------------------------------------------


async def test_publish_reaches_a_subscribed_handler_only(
    node: tuple[ClusterBroker, Collector],
) -> None:
    """A publication reaches the handler once subscribe() returned; other channels' do not."""
    broker, events = node
    await broker.subscribe(REF)
    await broker.publish(OTHER, b'"not for us"', PublishOptions())
    position = await broker.publish(REF, b'{"a":1}', PublishOptions(tags={"event": "e"}))
    assert position == StreamPosition(0, "")  # no history: no offset, no epoch
    kind, ref, pub = await events.next()
    assert (kind, ref) == ("pub", REF)
    assert pub.data == b'{"a":1}' and pub.tags == {"event": "e"}
    assert (pub.offset, pub.epoch) == (0, "")


async def test_publication_fields_survive_the_trip(node: tuple[ClusterBroker, Collector]) -> None:
    """Data bytes, tags, publisher info, time, offset and epoch arrive as published, live and
    from history alike."""
    broker, events = node
    await broker.subscribe(REF)
    data = bytes(range(256))  # not even UTF-8: the broker never looks inside
    before = int(time.time() * 1000)
    opts = PublishOptions(history_size=3, history_ttl=60, tags={"k": "v", "e": ""}, info=ALICE)
    position = await broker.publish(REF, data, opts)
    _, _, live = await events.next()
    [kept] = await _all(broker)
    for pub in (live, kept):
        assert pub.data == data and pub.tags == {"k": "v", "e": ""} and pub.info == ALICE
        assert (pub.offset, pub.epoch) == (position.offset, position.epoch)
        assert before - 1000 <= pub.time <= int(time.time() * 1000) + 1000


async def test_the_delta_flag_survives_the_trip(node: tuple[ClusterBroker, Collector]) -> None:
    """A publication's `delta` flag (the publish `delta` option) reaches every node, with and
    without history, so each sends deltas to its own delta subscribers."""
    broker, events = node
    await broker.subscribe(REF)
    for history_size in (3, 0):
        for delta in (True, False):
            opts = PublishOptions(history_size=history_size, history_ttl=60, delta=delta)
            await broker.publish(REF, b"{}", opts)
            _, _, live = await events.next()
            assert live.delta is delta


async def test_unsubscribe_stops_delivery(node: tuple[ClusterBroker, Collector]) -> None:
    """After unsubscribe() nothing of the channel arrives (control shows the order)."""
    broker, events = node
    await broker.subscribe(REF)
    await broker.unsubscribe(REF)
    await broker.publish(REF, b"1", PublishOptions())
    await broker.publish_join(REF, ALICE)
    await broker.publish_control(b"marker")
    assert await events.next() == ("control", None, b"marker")


async def test_join_leave_and_control(node: tuple[ClusterBroker, Collector]) -> None:
    """Join and leave reach the channel's subscribers with the client's info; control reaches
    the node without any subscription."""
    broker, events = node
    await broker.subscribe(REF)
    await broker.publish_join(REF, ALICE)
    assert await events.next() == ("join", REF, ALICE)
    await broker.publish_leave(REF, ClientInfoData("bob", "c2"))
    assert await events.next() == ("leave", REF, ClientInfoData("bob", "c2"))
    await broker.publish_control(b"hello nodes")
    assert await events.next() == ("control", None, b"hello nodes")


async def test_apps_never_see_each_other(node: tuple[ClusterBroker, Collector]) -> None:
    """Same channel name in two apps, and names built to collide if app and name were simply
    joined with ':', stay apart in delivery and history."""
    broker, events = node
    mine = ChannelRef(AppId("a:b"), "c")
    theirs = ChannelRef(AppId("a"), "b:c")
    await broker.subscribe(mine)
    await broker.publish(theirs, b'"theirs"', HISTORY)
    await broker.publish(ChannelRef(AppId("other"), mine.name), b'"other"', HISTORY)
    await broker.publish(mine, b'"mine"', HISTORY)
    _, ref, pub = await events.next()
    assert (ref, pub.data) == (mine, b'"mine"')
    assert [p.data for p in await _all(broker, mine)] == [b'"mine"']
    assert [p.data for p in await _all(broker, theirs)] == [b'"theirs"']


# --- history --------------------------------------------------------------------------------


async def test_offsets_increase_and_history_is_bounded(
    node: tuple[ClusterBroker, Collector],
) -> None:
    """Offsets go 1, 2, 3… in one epoch; history keeps the newest `history_size`."""
    broker, _ = node
    positions = [await broker.publish(REF, b"%d" % i, HISTORY) for i in range(5)]
    assert [p.offset for p in positions] == [1, 2, 3, 4, 5]
    assert len({p.epoch for p in positions}) == 1 and positions[0].epoch != ""
    history = await broker.history(REF, HistoryOptions(limit=-1))
    assert [p.data for p in history.publications] == [b"2", b"3", b"4"]
    assert [p.offset for p in history.publications] == [3, 4, 5]
    assert history.position == positions[-1]


async def test_hundreds_of_concurrent_publishes_through_one_broker(
    node: tuple[ClusterBroker, Collector],
) -> None:
    """300 publishes in flight at once through one broker instance all succeed, with history
    and without: Redis's client once refused the command past 100 in flight
    (MaxConnectionsError), and NATS appends of one node once raced each other until they
    failed ("too many concurrent appends"). Offsets are 1..300 in delivery order, each
    publication arrives once with its own data, and history keeps the newest `history_size`."""
    broker, events = node
    await broker.subscribe(REF)
    await broker.subscribe(OTHER)
    opts = PublishOptions(history_size=10, history_ttl=60, tags={"k": "v"})
    positions = await asyncio.gather(*(broker.publish(REF, b"%d" % i, opts) for i in range(300)))
    assert sorted(p.offset for p in positions) == list(range(1, 301))
    assert len({p.epoch for p in positions}) == 1
    received = [(await events.next())[2] for _ in range(300)]
    assert [p.offset for p in received] == list(range(1, 301))
    # Each publication's data went with its own offset (a batch must not shuffle them).
    by_offset = {p.offset: p.data for p in received}
    assert {by_offset[p.offset] for p in positions} == {b"%d" % i for i in range(300)}
    assert [by_offset[p.offset] for p in positions] == [b"%d" % i for i in range(300)]
    assert all(p.tags == {"k": "v"} for p in received)
    history = await broker.history(REF, HistoryOptions(limit=-1))
    assert [p.offset for p in history.publications] == list(range(291, 301))
    assert [p.data for p in history.publications] == [by_offset[o] for o in range(291, 301)]
    assert history.position == StreamPosition(300, positions[0].epoch)
    # Without history, the same burst on another channel.
    await asyncio.gather(*(broker.publish(OTHER, b"x", PublishOptions()) for _ in range(300)))
    assert [(await events.next())[1] for _ in range(300)] == [OTHER] * 300


async def test_concurrent_publishes_with_mixed_options(
    node: tuple[ClusterBroker, Collector],
) -> None:
    """Publishes in flight together with different history sizes and idempotency keys: each
    gets its own answer, a repeated key publishes once, and offsets stay consecutive."""
    broker, events = node
    await broker.subscribe(REF)
    # Sizes above what is published: a trimmed first answer would be answered with the
    # channel's position instead (NATS), which is not what this test is about.
    small = PublishOptions(history_size=40, history_ttl=60)
    large = PublishOptions(history_size=50, history_ttl=60)
    keyed = PublishOptions(history_size=50, history_ttl=60, idempotency_key="same")
    calls = [broker.publish(REF, b"%d" % i, (small, large, keyed)[i % 3]) for i in range(30)]
    positions = await asyncio.gather(*calls)
    keyed_positions = {p for i, p in enumerate(positions) if i % 3 == 2}
    assert len(keyed_positions) == 1  # every repeat answered with the first one's position
    assert sorted({p.offset for p in positions}) == list(range(1, 22))  # 20 + the keyed one
    received = [(await events.next())[2].offset for _ in range(21)]
    assert received == list(range(1, 22))
    await broker.publish_control(b"marker")
    assert await events.next() == ("control", None, b"marker")  # nothing more was delivered


async def test_history_since_limit_reverse(node: tuple[ClusterBroker, Collector]) -> None:
    """`limit` 0 is the position only, > 0 a bound, -1 everything; `since` keeps what comes
    after it in its epoch, or with `reverse` (newest first) the page before it."""
    broker, _ = node
    for i in range(3):
        last = await broker.publish(REF, b"%d" % i, PublishOptions(history_size=10, history_ttl=60))

    async def got(
        limit: int, since: StreamPosition | None = None, reverse: bool = False
    ) -> list[int]:
        result = await broker.history(REF, HistoryOptions(limit, since, reverse))
        assert result.position == last
        return [p.offset for p in result.publications]

    def at(offset: int, epoch: str = last.epoch) -> StreamPosition:
        return StreamPosition(offset, epoch)

    assert await got(limit=-1) == [1, 2, 3]
    assert await got(limit=0) == []
    assert await got(limit=0, since=at(1)) == []
    assert await got(limit=1) == [1]
    assert await got(limit=10) == [1, 2, 3]
    assert await got(limit=1, reverse=True) == [3]
    assert await got(limit=-1, reverse=True) == [3, 2, 1]
    assert await got(limit=-1, since=at(1)) == [2, 3]
    assert await got(limit=1, since=at(1)) == [2]
    assert await got(limit=-1, since=at(0)) == [1, 2, 3]
    assert await got(limit=-1, since=last) == []
    assert await got(limit=-1, since=at(3), reverse=True) == [2, 1]
    assert await got(limit=1, since=at(3), reverse=True) == [2]
    assert await got(limit=-1, since=at(1), reverse=True) == []
    assert await got(limit=-1, since=at(1, "another-epoch")) == []
    assert await got(limit=-1, since=at(3, "another-epoch"), reverse=True) == []


async def test_position_of_an_unused_channel(node: tuple[ClusterBroker, Collector]) -> None:
    """Reading a channel nobody published to starts its epoch at offset 0; the first publish
    continues it."""
    broker, _ = node
    first = await broker.history(REF, HistoryOptions(limit=-1))
    again = await broker.history(REF, HistoryOptions(limit=0))
    assert first.publications == [] and first.position.offset == 0
    assert first.position.epoch == again.position.epoch != ""
    assert await broker.publish(REF, b"1", HISTORY) == StreamPosition(1, first.position.epoch)


async def test_epoch_changes_when_the_broker_loses_its_state(backend: BrokerBackend) -> None:
    """After the broker forgot the channel (Redis restarted empty, the memory node restarted)
    the epoch differs, so no client mistakes the new offsets for the ones it saw."""
    broker = backend.make()
    await broker.start(Collector())
    before = [await broker.publish(REF, b"%d" % i, HISTORY) for i in range(2)]
    await backend.lose_state()
    broker = backend.make()
    await broker.start(Collector())
    position = (await broker.history(REF, HistoryOptions(limit=0))).position
    assert position.epoch != before[-1].epoch and position.offset == 0
    after = await broker.publish(REF, b"new", HISTORY)
    assert after == StreamPosition(1, position.epoch)
    stale = await broker.history(REF, HistoryOptions(limit=-1, since=before[0]))
    assert stale.publications == []


async def test_history_expires_after_its_ttl(node: tuple[ClusterBroker, Collector]) -> None:
    """Publications go `history_ttl` seconds after the channel's last publish."""
    broker, _ = node
    await broker.publish(REF, b"1", PublishOptions(history_size=3, history_ttl=1))
    assert len(await _all(broker)) == 1
    deadline = asyncio.get_running_loop().time() + 5
    while await _all(broker):
        assert asyncio.get_running_loop().time() < deadline, "history outlived its ttl"
        await asyncio.sleep(0.1)  # expiry is time itself: nothing to await but the clock


async def test_idempotency_key(node: tuple[ClusterBroker, Collector]) -> None:
    """A repeated key answers the first result without publishing again; another key, or
    the same key on another channel, publishes."""
    broker, events = node
    await broker.subscribe(REF)
    opts = PublishOptions(history_size=3, history_ttl=60, idempotency_key="k1")
    first = await broker.publish(REF, b"1", opts)
    second = await broker.publish(REF, b"2", opts)
    assert first == second == StreamPosition(1, first.epoch)
    other_key = PublishOptions(history_size=3, history_ttl=60, idempotency_key="k2")
    assert (await broker.publish(REF, b"3", other_key)).offset == 2
    assert (await broker.publish(OTHER, b"4", opts)).offset == 1
    assert [(await events.next())[2].data for _ in range(2)] == [b"1", b"3"]
    await broker.publish_control(b"marker")
    assert await events.next() == ("control", None, b"marker")
    assert [p.data for p in await _all(broker)] == [b"1", b"3"]


async def test_idempotency_key_without_history(node: tuple[ClusterBroker, Collector]) -> None:
    """Without history a repeated key is not delivered twice either."""
    broker, events = node
    await broker.subscribe(REF)
    opts = PublishOptions(idempotency_key="once")
    await broker.publish(REF, b"1", opts)
    await broker.publish(REF, b"1", opts)
    await broker.publish_control(b"marker")
    assert (await events.next())[0] == "pub"
    assert await events.next() == ("control", None, b"marker")


async def test_remove_history_keeps_the_position(node: tuple[ClusterBroker, Collector]) -> None:
    """remove_history drops the publications; epoch and offset go on."""
    broker, _ = node
    last = await broker.publish(REF, b"1", HISTORY)
    await broker.remove_history(REF)
    after = await broker.history(REF, HistoryOptions(limit=-1))
    assert after.publications == [] and after.position == last
    assert await broker.publish(REF, b"2", HISTORY) == StreamPosition(2, last.epoch)
    assert [p.offset for p in await _all(broker)] == [2]


# --- many nodes (Redis, NATS) -----------------------------------------------------------------


@pytest.mark.parametrize("kind", SHARED)
async def test_two_nodes_share_publications_history_and_control(kind: str) -> None:
    """A publication made on one node reaches the other's subscriber, with the same history;
    control reaches every node, the sender included."""
    async with broker_backend(kind) as backend:
        a, b = backend.make(), backend.make()
        ea, eb = Collector(), Collector()
        await a.start(ea)
        await b.start(eb)
        await b.subscribe(REF)
        sent = await a.publish(REF, b'"from a"', HISTORY)
        _, ref, pub = await eb.next()
        assert (ref, pub.data, pub.offset, pub.epoch) == (REF, b'"from a"', 1, sent.epoch)
        await a.publish_join(REF, ALICE)
        assert await eb.next() == ("join", REF, ALICE)
        history = await b.history(REF, HistoryOptions(limit=-1))
        assert [p.data for p in history.publications] == [b'"from a"']
        assert history.position == sent
        await b.publish_control(b"to all")
        assert await ea.next() == ("control", None, b"to all")
        assert await eb.next() == ("control", None, b"to all")
        assert ea.events.empty()  # a never subscribed REF


async def test_redis_resubscribes_after_its_connection_is_killed() -> None:
    """When its PUB/SUB connection dies the broker reconnects and resubscribes by itself, tells
    the handler (clients must recover), and meanwhile accepts new subscriptions."""
    async with broker_backend("redis") as backend:
        broker, events = backend.make("victim"), Collector()
        await broker.start(events)
        await broker.subscribe(REF)
        admin = redis_admin()
        try:
            [conn] = [
                c
                for c in await admin.client_list(_type="pubsub")
                if c["name"] == f"{backend.prefix}.sub.victim"
            ]
            # Only our node's connection: other suites may share this Redis.
            await admin.client_kill_filter(_id=conn["id"])
        finally:
            await admin.aclose()
        await broker.subscribe(OTHER)  # during the outage: must be live once subscribe returns
        await asyncio.wait_for(events.reconnects.wait(), 10)
        await broker.ping()
        await broker.publish(REF, b'"after"', PublishOptions())
        await broker.publish(OTHER, b'"other"', PublishOptions())
        got = {(await events.next())[2].data for _ in range(2)}
        assert got == {b'"after"', b'"other"'}


async def test_redis_unreachable_is_reported() -> None:
    """Against a port where nothing listens, start() and ping() raise instead of hanging."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from xshathra.brokers.redis import RedisBroker

    broker = RedisBroker("redis://127.0.0.1:1/0", prefix="xs_test_nowhere", node_id="n")
    try:
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(broker.start(Collector()), 10)
        with pytest.raises(RedisConnectionError):
            await broker.ping()
    finally:
        await broker.close()


@pytest.mark.parametrize("kind", SHARED)
async def test_concurrent_publishers_get_consecutive_offsets(kind: str) -> None:
    """Two nodes appending to one channel at once never share or skip an offset, and a
    subscriber receives every publication in offset order."""
    async with broker_backend(kind) as backend:
        a, b, watcher = backend.make(), backend.make(), backend.make()
        events = Collector()
        for broker in (a, b):
            await broker.start(Collector())
        await watcher.start(events)
        await watcher.subscribe(REF)
        opts = PublishOptions(history_size=100, history_ttl=60)
        positions = await asyncio.gather(
            *(broker.publish(REF, b"%d" % i, opts) for i in range(40) for broker in (a, b))
        )
        assert sorted(p.offset for p in positions) == list(range(1, 81))
        assert len({p.epoch for p in positions}) == 1
        received = [(await events.next())[2].offset for _ in range(80)]
        assert received == list(range(1, 81))
        history = await watcher.history(REF, HistoryOptions(limit=-1))
        assert [p.offset for p in history.publications] == list(range(1, 81))


async def test_subscriber_counts_add_up_over_nodes(backend: BrokerBackend) -> None:
    """Each node reports its own count; the totals before and after a change are over every
    node (on memory, the one node)."""
    a, b = backend.make(), backend.make()
    for broker in {id(a): a, id(b): b}.values():
        await broker.start(Collector())
    assert await a.set_subscriber_count(REF, 2) == (0, 2)
    if a is b:
        assert await a.set_subscriber_count(REF, 0) == (2, 0)
        return
    assert await b.set_subscriber_count(REF, 3) == (2, 5)
    assert await a.subscriber_count(REF) == await b.subscriber_count(REF) == 5
    assert await a.set_subscriber_count(REF, 0) == (5, 3)
    assert await b.set_subscriber_count(REF, 0) == (3, 0)
    assert await a.subscriber_count(OTHER) == 0


async def test_nats_outage_resubscribes_and_tells_the_handler(nats_server: NatsServer) -> None:
    """NATS restarting: the broker reports itself down, reconnects by itself, resubscribes,
    tells the handler (clients must recover), and history kept on disk survives."""
    async with broker_backend("nats") as backend:
        backend.url = nats_server.url
        broker, events = backend.make("victim"), Collector()
        await broker.start(events)
        await broker.subscribe(REF)
        before = await broker.publish(REF, b'"before"', HISTORY)
        assert (await events.next())[2].data == b'"before"'
        nats_server.stop()
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # the client notices the closed socket on its own schedule
            try:
                await broker.ping()
            except ConnectionError:
                break
            assert asyncio.get_running_loop().time() < deadline, "the outage went unnoticed"
        with pytest.raises(ConnectionError):
            await broker.publish(REF, b'"lost"', PublishOptions())
        nats_server.start()
        await asyncio.wait_for(events.reconnects.wait(), 15)
        await broker.ping()
        after = await broker.publish(REF, b'"after"', HISTORY)
        assert after == StreamPosition(before.offset + 1, before.epoch)
        kind, _, pub = await events.next()
        assert (kind, pub.data) == ("pub", b'"after"')
        history = await broker.history(REF, HistoryOptions(limit=-1))
        assert [p.data for p in history.publications] == [b'"before"', b'"after"']


async def test_nats_unreachable_is_reported() -> None:
    """Against a port where nothing listens, start() raises a ConnectionError naming NATS."""
    from xshathra.brokers.nats import NatsBroker
    from xshathra.links.nats import NatsLink

    broker = NatsBroker(NatsLink("nats://127.0.0.1:1", name="n"), prefix="xs_nowhere", node_id="n")
    with pytest.raises(ConnectionError, match="NATS"):
        await asyncio.wait_for(broker.start(Collector()), 10)
    with pytest.raises(ConnectionError):
        await broker.ping()
