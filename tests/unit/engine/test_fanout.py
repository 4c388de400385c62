"""Fan-out, batching, slow consumers and pending subscriptions, seen from the transport."""

from __future__ import annotations

import asyncio

import msgspec

from tests.unit.engine.conftest import Harness
from xshathra.api.executor import PublishRequest
from xshathra.engine.channels import ChannelRef


async def subscribe(harness: Harness, channel: str, n: int = 1) -> list:  # type: ignore[type-arg]
    pairs = [await harness.client(f"user{i}") for i in range(n)]
    for session, transport in pairs:
        session.on_message(b'{"id":2,"subscribe":{"channel":"%s"}}' % channel.encode())
        await transport.wait_for(lambda m: m.get("id") == 2)
    return pairs


async def publish(harness: Harness, channel: str, data: bytes) -> None:
    await harness.node.api_publish(
        harness.app, PublishRequest(channel=channel, data=msgspec.Raw(data))
    )


async def test_one_frame_object_is_shared_by_every_subscriber(harness: Harness) -> None:
    """A publication is encoded and framed once; every writer gets the same object."""
    pairs = await subscribe(harness, "public:x", 3)
    await publish(harness, "public:x", b'{"n":1}')
    for _, transport in pairs:
        await transport.wait_for(lambda m: "push" in m)
    frames = [t.writes[-1][0] for _, t in pairs]
    assert all(f is frames[0] for f in frames)


async def test_publications_within_a_tick_share_one_write(harness: Harness) -> None:
    """Several publications before the loop turns: one write with newline-joined messages."""
    [(_, transport)] = await subscribe(harness, "public:b")
    before = len(transport.writes)
    await asyncio.gather(*(publish(harness, "public:b", b"%d" % i) for i in range(5)))
    await transport.wait_for(lambda m: m.get("push", {}).get("pub", {}).get("data") == 4)
    batches = transport.writes[before:]
    assert len(batches) == 1 and len(batches[0]) == 5


async def test_slow_consumer_is_disconnected_with_3008(harness: Harness) -> None:
    [(_session, transport)] = await subscribe(harness, "public:slow")
    transport.buffered = 10_000  # more than client_queue_max_bytes=1000
    await publish(harness, "public:slow", b'"x"')
    assert (await transport.wait_closed())[0] == 3008
    assert harness.node.hub.subscriber_count(ChannelRef(harness.app.app_id, "public:slow")) == 0


async def test_pending_subscription_buffers_then_goes_live(harness: Harness) -> None:
    """While a subscription is being set up (history read for recovery), publications are
    buffered for it, handed over on promotion, and live ones follow."""
    session, transport = await harness.client()
    hub = harness.node.hub
    ref = ChannelRef(harness.app.app_id, "public:race")
    await harness.node.add_pending_subscriber(ref, session)
    await publish(harness, "public:race", b"1")
    assert not [m for m in transport.messages if "push" in m]  # not sent before the reply
    buffered = hub.promote(ref, session)
    assert [offset for offset, _ in buffered] == [1]
    await publish(harness, "public:race", b"2")
    live = await transport.wait_for(lambda m: "push" in m)
    assert live["push"]["pub"]["data"] == 2


async def test_join_and_leave_reach_other_subscribers(harness: Harness) -> None:
    [(_, watcher)] = await subscribe(harness, "public:jl")
    joiner, _ = await harness.client("joiner")
    joiner.on_message(b'{"id":2,"subscribe":{"channel":"public:jl"}}')
    join = await watcher.wait_for(lambda m: "join" in m.get("push", {}))
    assert join["push"]["join"]["info"]["user"] == "joiner"
    joiner.on_message(b'{"id":3,"unsubscribe":{"channel":"public:jl"}}')
    leave = await watcher.wait_for(lambda m: "leave" in m.get("push", {}))
    assert leave["push"]["leave"]["info"]["user"] == "joiner"


async def test_disconnect_cleans_presence(harness: Harness) -> None:
    [(session, _), (_, other)] = await subscribe(harness, "public:p", 2)
    session.disconnect(3000)
    await other.wait_for(lambda m: "leave" in m.get("push", {}))
    ref = ChannelRef(harness.app.app_id, "public:p")
    assert await harness.node.presence.presence_stats(ref) == (1, 1)
