"""The memory broker's bounds on history memory (issue 11, H1): expired history is freed by a
sweep that walks only what expired, and byte budgets per app and per node evict the oldest
history, of the app over its budget first, with recovery answering honestly afterwards."""

from __future__ import annotations

import pytest

import xshathra.brokers.memory as memory_module
from tests.unit.brokers.test_memory import Clock, Recorder
from xshathra.brokers.memory import META_TTL, STREAM_OVERHEAD, MemoryBroker
from xshathra.model import AppId, ChannelRef, HistoryOptions, PublishOptions, StreamPosition

KEEP = PublishOptions(history_size=100, history_ttl=60)
KIB = b"x" * 1024


def ref(app: str, name: str) -> ChannelRef:
    return ChannelRef(AppId(app), name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(memory_module, "time", fake)
    return fake


async def make(**kwargs: int) -> MemoryBroker:
    broker = MemoryBroker(sweep_interval=0, **kwargs)  # sweeps called by the test
    await broker.start(Recorder())
    return broker


async def test_expired_history_is_freed_without_a_new_publish(clock: Clock) -> None:
    """A 5 s TTL namespace flooded once holds nothing after the TTL (the probe grew ~87 MB a
    round): publications go at the TTL, positions META_TTL later, and the byte count with
    them, with no publish needed to notice."""
    broker = await make()
    ttl5 = PublishOptions(history_size=10, history_ttl=5)
    for i in range(200):
        await broker.publish(ref("a", f"public:{i}"), KIB * 4, ttl5)
    assert broker.history_bytes > 200 * 4096
    clock.now += 4
    assert broker.sweep() == 0  # nothing is due yet: the sweep stops at the first live one
    clock.now += 2
    assert broker.sweep() == 200
    assert broker.history_bytes == 200 * STREAM_OVERHEAD  # only the positions are left
    clock.now += META_TTL + 1
    assert broker.sweep() == 200
    assert broker.history_bytes == 0 and broker.stream_count == 0
    assert broker.app_history_bytes("a") == 0


async def test_sweep_cost_is_what_expired_not_every_stream(clock: Clock) -> None:
    """Streams with a long TTL are never visited while short ones expire."""
    broker = await make()
    for i in range(1000):
        await broker.publish(
            ref("a", f"long:{i}"), b"1", PublishOptions(history_size=1, history_ttl=3600)
        )
    await broker.publish(ref("a", "short"), b"1", PublishOptions(history_size=1, history_ttl=1))
    clock.now += 2
    assert broker.sweep() == 1


async def test_a_freed_stream_recovers_as_not_recovered(clock: Clock) -> None:
    """After its position is freed, the channel has a new epoch: a returning client's old
    position is unrecoverable, never a silent gap."""
    broker = await make()
    r = ref("a", "public:x")
    before = await broker.publish(r, b"1", KEEP)
    clock.now += 61
    broker.sweep()  # the publications go; the position stays META_TTL more
    clock.now += META_TTL + 1
    broker.sweep()
    after = await broker.history(r, HistoryOptions(limit=-1, since=before))
    assert after.position.epoch != before.epoch and after.publications == []


async def test_app_budget_evicts_the_apps_oldest_history_only(clock: Clock) -> None:
    """One app flooding many channels stays within its own budget, evicting its least recently
    published channels; another app's history is untouched."""
    broker = await make(max_bytes_per_app=256 * 1024, max_bytes=4 * 1024 * 1024)
    victim = ref("b", "public:keep")
    kept = await broker.publish(victim, KIB, KEEP)
    first = await broker.publish(ref("a", "public:0"), KIB * 30, KEEP)
    for i in range(1, 100):  # ~3 MB asked for: 12x the app's budget
        await broker.publish(ref("a", f"public:{i}"), KIB * 30, KEEP)
    assert broker.app_history_bytes("a") <= 256 * 1024
    newest = await broker.history(ref("a", "public:99"), HistoryOptions(limit=-1))
    assert [p.data for p in newest.publications] == [KIB * 30]
    evicted = await broker.history(ref("a", "public:0"), HistoryOptions(limit=-1, since=first))
    assert evicted.position.epoch != first.epoch  # gone: a new epoch, recovered=false
    still = await broker.history(victim, HistoryOptions(limit=-1))
    assert still.position == kept and [p.data for p in still.publications] == [KIB]


async def test_one_big_channel_loses_its_oldest_publications(clock: Clock) -> None:
    """A single channel over the app budget keeps its newest publications; a client behind
    the evicted ones sees the gap (first offset past its own + 1) and cannot recover."""
    broker = await make(max_bytes_per_app=64 * 1024)
    r = ref("a", "public:big")
    first = await broker.publish(r, KIB * 10, KEEP)
    for _ in range(19):
        await broker.publish(r, KIB * 10, KEEP)
    assert broker.app_history_bytes("a") <= 64 * 1024
    result = await broker.history(r, HistoryOptions(limit=-1, since=first))
    assert result.position == StreamPosition(20, first.epoch)
    offsets = [p.offset for p in result.publications]
    assert offsets and offsets[-1] == 20 and offsets[0] > first.offset + 1


async def test_node_budget_evicts_from_the_biggest_app(clock: Clock) -> None:
    """Several apps each within their budget but together over the node's: the biggest app
    loses its oldest channels, the small one keeps its history."""
    broker = await make(max_bytes_per_app=200 * 1024, max_bytes=300 * 1024)
    small = ref("small", "public:s")
    kept = await broker.publish(small, KIB * 20, KEEP)
    for app in ("a", "b"):
        for i in range(8):
            await broker.publish(ref(app, f"public:{i}"), KIB * 20, KEEP)
    assert broker.history_bytes <= 300 * 1024
    assert (await broker.history(small, HistoryOptions(limit=-1))).position == kept
    assert broker.app_history_bytes("small") > 20 * 1024


async def test_many_empty_channels_count_against_the_budget(clock: Clock) -> None:
    """Reading positions of countless channels (each creates an epoch) is bounded too."""
    broker = await make(max_bytes_per_app=100 * STREAM_OVERHEAD)
    for i in range(1000):
        await broker.history(ref("a", f"public:{i}"), HistoryOptions())
    assert broker.stream_count <= 100


async def test_history_reply_is_capped_in_bytes(clock: Clock) -> None:
    """`max_bytes` returns the longest prefix that fits (at least one) and says so."""
    broker = await make()
    r = ref("a", "public:r")
    for _ in range(10):
        await broker.publish(r, KIB, KEEP)
    capped = await broker.history(r, HistoryOptions(limit=-1, max_bytes=3 * 1200))
    assert [p.offset for p in capped.publications] == [1, 2, 3] and capped.truncated
    back = await broker.history(r, HistoryOptions(limit=-1, reverse=True, max_bytes=2 * 1200))
    assert [p.offset for p in back.publications] == [10, 9] and back.truncated
    one = await broker.history(r, HistoryOptions(limit=-1, max_bytes=10))
    assert [p.offset for p in one.publications] == [1]
    whole = await broker.history(r, HistoryOptions(limit=-1, max_bytes=1 << 20))
    assert len(whole.publications) == 10 and not whole.truncated
