"""The memory broker's history: bounded size, expiry, since/reverse/limit, epochs, idempotency,
and delivery only to channels this node subscribed to."""

from __future__ import annotations

import pytest

import xshathra.brokers.memory as memory_module
from xshathra.brokers.memory import IDEMPOTENCY_TTL, MemoryBroker
from xshathra.model import (
    AppId,
    BrokerPublication,
    ChannelRef,
    ClientInfoData,
    HistoryOptions,
    PublishOptions,
    StreamPosition,
)

REF = ChannelRef(AppId("app"), "public:chan")
KEEP = PublishOptions(history_size=10, history_ttl=60)


class Clock:
    """Stands in for the `time` module inside the broker, so that expiry needs no waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now


class Recorder:
    def __init__(self) -> None:
        self.pubs: list[tuple[ChannelRef, BrokerPublication]] = []
        self.joins: list[tuple[ChannelRef, ClientInfoData]] = []
        self.leaves: list[tuple[ChannelRef, ClientInfoData]] = []
        self.controls: list[bytes] = []
        self.reconnects = 0

    def on_publication(self, ref: ChannelRef, pub: BrokerPublication) -> None:
        self.pubs.append((ref, pub))

    def on_join(self, ref: ChannelRef, info: ClientInfoData) -> None:
        self.joins.append((ref, info))

    def on_leave(self, ref: ChannelRef, info: ClientInfoData) -> None:
        self.leaves.append((ref, info))

    def on_control(self, data: bytes) -> None:
        self.controls.append(data)

    def on_reconnect(self) -> None:
        self.reconnects += 1


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(memory_module, "time", fake)
    return fake


@pytest.fixture
async def broker() -> MemoryBroker:
    b = MemoryBroker()
    await b.start(Recorder())
    return b


async def _publish_n(broker: MemoryBroker, n: int, opts: PublishOptions = KEEP) -> None:
    for i in range(1, n + 1):
        await broker.publish(REF, b"%d" % i, opts)


async def _offsets(broker: MemoryBroker, opts: HistoryOptions) -> list[int]:
    return [p.offset for p in (await broker.history(REF, opts)).publications]


async def test_offsets_grow_by_one_within_an_epoch(broker: MemoryBroker) -> None:
    """Each publish with history returns the next offset in the same epoch."""
    positions = [await broker.publish(REF, b"1", KEEP) for _ in range(3)]
    assert [p.offset for p in positions] == [1, 2, 3]
    assert len({p.epoch for p in positions}) == 1 and positions[0].epoch


async def test_history_keeps_only_the_newest_history_size(broker: MemoryBroker) -> None:
    """Past `history_size`, the oldest publications are dropped; the offset keeps counting."""
    await _publish_n(broker, 7, PublishOptions(history_size=3, history_ttl=60))
    result = await broker.history(REF, HistoryOptions(limit=-1))
    assert [p.offset for p in result.publications] == [5, 6, 7]
    assert [p.data for p in result.publications] == [b"5", b"6", b"7"]
    assert result.position.offset == 7


async def test_limit_zero_gives_the_position_only(broker: MemoryBroker) -> None:
    """`limit` 0 answers the stream position and no publications."""
    await _publish_n(broker, 2)
    result = await broker.history(REF, HistoryOptions(limit=0))
    assert result.publications == [] and result.position.offset == 2


async def test_limit_and_reverse_without_since(broker: MemoryBroker) -> None:
    """Without `since`: the oldest `limit` forward, the newest `limit` in reverse."""
    await _publish_n(broker, 5)
    assert await _offsets(broker, HistoryOptions(limit=2)) == [1, 2]
    assert await _offsets(broker, HistoryOptions(limit=2, reverse=True)) == [5, 4]
    assert await _offsets(broker, HistoryOptions(limit=-1, reverse=True)) == [5, 4, 3, 2, 1]


async def test_since_returns_what_follows_the_position(broker: MemoryBroker) -> None:
    """Forward from `since`: the publications after its offset, oldest first, up to `limit`."""
    await _publish_n(broker, 5)
    epoch = (await broker.history(REF, HistoryOptions())).position.epoch
    assert await _offsets(broker, HistoryOptions(limit=-1, since=StreamPosition(2, epoch))) == [
        3,
        4,
        5,
    ]
    assert await _offsets(broker, HistoryOptions(limit=2, since=StreamPosition(1, epoch))) == [2, 3]
    assert await _offsets(broker, HistoryOptions(limit=-1, since=StreamPosition(5, epoch))) == []


async def test_since_with_reverse_pages_backwards(broker: MemoryBroker) -> None:
    """As Centrifuge's HistoryFilter: with `reverse`, `since` is the page boundary going back, so
    the publications before its offset come newest first (offset 4, limit 2 -> 3, 2)."""
    await _publish_n(broker, 5)
    epoch = (await broker.history(REF, HistoryOptions())).position.epoch
    page = HistoryOptions(limit=2, since=StreamPosition(4, epoch), reverse=True)
    assert await _offsets(broker, page) == [3, 2]


async def test_since_from_another_epoch_returns_nothing(broker: MemoryBroker) -> None:
    """A `since` of another epoch yields no publications, and the current position."""
    await _publish_n(broker, 3)
    result = await broker.history(REF, HistoryOptions(limit=-1, since=StreamPosition(1, "other")))
    assert result.publications == [] and result.position.offset == 3


async def test_epoch_is_stable_across_reads_publishes_and_removal(broker: MemoryBroker) -> None:
    """Reading, publishing and removing history never change the epoch; removal keeps the
    offset too."""
    first = (await broker.history(REF, HistoryOptions())).position
    await _publish_n(broker, 2)
    again = (await broker.history(REF, HistoryOptions(limit=-1))).position
    await broker.remove_history(REF)
    after = await broker.history(REF, HistoryOptions(limit=-1))
    assert first.epoch == again.epoch == after.position.epoch
    assert after.publications == [] and after.position.offset == 2
    assert (await broker.publish(REF, b"x", KEEP)).offset == 3


async def test_channels_have_their_own_streams(broker: MemoryBroker) -> None:
    """Two channels (or the same name in two apps) have separate offsets and epochs."""
    other = ChannelRef(AppId("other-app"), REF.name)
    await _publish_n(broker, 3)
    position = await broker.publish(other, b"1", KEEP)
    assert position.offset == 1
    assert await _offsets(broker, HistoryOptions(limit=-1)) == [1, 2, 3]


async def test_history_expires_after_its_ttl(broker: MemoryBroker, clock: Clock) -> None:
    """Publications are gone `history_ttl` seconds after the last publish, not before."""
    await _publish_n(broker, 2, PublishOptions(history_size=10, history_ttl=30))
    clock.now += 29
    assert await _offsets(broker, HistoryOptions(limit=-1)) == [1, 2]
    await broker.publish(REF, b"3", PublishOptions(history_size=10, history_ttl=30))
    clock.now += 29  # 58 s after the first publish, 29 s after the last
    assert await _offsets(broker, HistoryOptions(limit=-1)) == [1, 2, 3]
    clock.now += 2
    assert await _offsets(broker, HistoryOptions(limit=-1)) == []


async def test_epoch_and_offset_outlive_expired_publications(
    broker: MemoryBroker, clock: Clock
) -> None:
    """When the publications expire, the stream position stays (as the Redis broker keeps its
    meta for days, and Centrifuge for its history meta ttl): a client that was at the top of
    a quiet channel still recovers instead of seeing a new epoch."""
    before = await broker.publish(REF, b"1", PublishOptions(history_size=10, history_ttl=30))
    clock.now += 60
    after = await broker.history(REF, HistoryOptions(limit=-1))
    assert after.publications == []
    assert after.position == before
    assert (await broker.publish(REF, b"2", KEEP)) == StreamPosition(2, before.epoch)


async def test_publish_without_history_keeps_nothing(broker: MemoryBroker) -> None:
    """`history_size` 0: offset 0, no epoch, nothing kept, and the stream position untouched."""
    await _publish_n(broker, 1)
    position = await broker.publish(REF, b"x", PublishOptions())
    assert position == StreamPosition(0, "")
    assert await _offsets(broker, HistoryOptions(limit=-1)) == [1]


async def test_idempotency_key_publishes_once(broker: MemoryBroker, clock: Clock) -> None:
    """A repeated idempotency key returns the first position and neither appends nor delivers
    again; after the key's ttl it publishes anew."""
    recorder = Recorder()
    await broker.start(recorder)
    await broker.subscribe(REF)
    opts = PublishOptions(history_size=10, history_ttl=3600, idempotency_key="k1")
    first = await broker.publish(REF, b"a", opts)
    again = await broker.publish(REF, b"b", opts)
    assert again == first
    assert await _offsets(broker, HistoryOptions(limit=-1)) == [1]
    assert [p.data for _, p in recorder.pubs] == [b"a"]
    other_key = await broker.publish(
        REF, b"c", PublishOptions(history_size=10, history_ttl=3600, idempotency_key="k2")
    )
    assert other_key.offset == 2
    clock.now += IDEMPOTENCY_TTL + 1
    assert (await broker.publish(REF, b"d", opts)).offset == 3


async def test_idempotency_keys_are_per_channel(broker: MemoryBroker) -> None:
    """The same key on two channels publishes on both."""
    other = ChannelRef(REF.app_id, "public:other")
    opts = PublishOptions(history_size=10, history_ttl=60, idempotency_key="same")
    await broker.publish(REF, b"a", opts)
    assert (await broker.publish(other, b"a", opts)).offset == 1


async def test_delivery_only_to_subscribed_channels(broker: MemoryBroker) -> None:
    """Publications, joins and leaves reach the handler only for channels this node subscribed
    to; control messages always do."""
    recorder = Recorder()
    await broker.start(recorder)
    info = ClientInfoData("u", "c")
    await broker.publish(REF, b"early", KEEP)
    await broker.publish_join(REF, info)
    await broker.subscribe(REF)
    await broker.publish(REF, b"late", KEEP)
    await broker.publish_join(REF, info)
    await broker.publish_leave(REF, info)
    await broker.unsubscribe(REF)
    await broker.publish(REF, b"gone", KEEP)
    await broker.publish_control(b"ctl")
    assert [p.data for _, p in recorder.pubs] == [b"late"]
    assert recorder.joins == [(REF, info)] and recorder.leaves == [(REF, info)]
    assert recorder.controls == [b"ctl"]


async def test_publication_carries_tags_info_offset_and_time(
    broker: MemoryBroker, clock: Clock
) -> None:
    """What is delivered and kept has the publish options' tags and info, offset and epoch."""
    recorder = Recorder()
    await broker.start(recorder)
    await broker.subscribe(REF)
    info = ClientInfoData("u", "c", b'{"a":1}')
    await broker.publish(
        REF, b"{}", PublishOptions(history_size=5, history_ttl=5, tags={"event": "e"}, info=info)
    )
    [(_, pub)] = recorder.pubs
    assert pub.tags == {"event": "e"} and pub.info == info
    assert pub.offset == 1 and pub.epoch
    assert pub.time == int(clock.time() * 1000)
    kept = (await broker.history(REF, HistoryOptions(limit=-1))).publications
    assert kept == [pub]


async def test_subscriber_counts(broker: MemoryBroker) -> None:
    """The recorded subscriber count is what was last set; zero forgets the channel."""
    await broker.set_subscriber_count(REF, 3)
    assert await broker.subscriber_count(REF) == 3
    await broker.set_subscriber_count(REF, 0)
    assert await broker.subscriber_count(REF) == 0
