"""Fan-out and the writer, seen from the transport: encode once, batch per tick, drop the slow."""

from __future__ import annotations

import asyncio

from tests.unit.engine.conftest import MakeHarness
from tests.unit.engine.fakes import FRAME_HEADER, Client, Harness
from xshathra.protocol import messages as m
from xshathra.protocol.json_codec import JSON_CODEC


async def _subscribers(harness: Harness, channel: str, n: int) -> list[Client]:
    clients = [await harness.connect(f"user{i}") for i in range(n)]
    for client in clients:
        await client.subscribe(channel)
    return clients


def _is_pub(message: dict[str, object]) -> bool:
    push = message.get("push")
    return isinstance(push, dict) and "pub" in push


async def test_one_publication_is_one_shared_frame_object(harness: Harness) -> None:
    """A publication alone in its tick is encoded and framed once: every subscriber's transport
    writes the very same bytes object."""
    clients = await _subscribers(harness, "public:x", 3)
    await harness.publish("public:x", {"n": 1})
    for client in clients:
        await client.transport.wait_for(_is_pub)
    frames = [c.transport.frames[-1] for c in clients]
    assert all(frame is frames[0] for frame in frames)
    assert (
        frames[0]
        == FRAME_HEADER + b'{"push":{"channel":"public:x","pub":{"data":{"n":1},"offset":1}}}'
    )


async def test_publications_within_a_tick_share_one_frame(harness: Harness) -> None:
    """Several publications before the loop turns reach a subscriber as one frame of
    newline-joined messages, in publish order."""
    [client] = await _subscribers(harness, "public:b", 1)
    before = len(client.transport.frames)
    await asyncio.gather(*(harness.publish("public:b", i) for i in range(5)))
    await client.transport.wait_for(lambda m: m.get("push", {}).get("pub", {}).get("data") == 4)
    new_frames = client.transport.frames[before:]
    assert len(new_frames) == 1
    lines = new_frames[0][len(FRAME_HEADER) :].split(b"\n")
    assert len(lines) == 5
    assert [p["data"] for p in client.transport.pushes("pub")] == [0, 1, 2, 3, 4]


async def test_publications_in_separate_ticks_are_separate_frames(harness: Harness) -> None:
    """Batching never delays: a publication after the previous one was flushed is its own
    frame."""
    [client] = await _subscribers(harness, "public:s", 1)
    await harness.publish("public:s", 1)
    await client.transport.wait_for(_is_pub)
    before = len(client.transport.frames)
    await harness.publish("public:s", 2)
    await client.transport.wait_for(lambda m: m.get("push", {}).get("pub", {}).get("data") == 2)
    assert len(client.transport.frames) == before + 1


async def test_slow_consumer_is_closed_with_3008(make_harness: MakeHarness) -> None:
    """A transport whose unsent bytes pass `client_queue_max_bytes` is closed as slow, its
    subscriptions dropped; the others keep receiving."""
    h = await make_harness(client_queue_max_bytes=1000)
    slow, fine = await _subscribers(h, "public:slow", 2)
    slow.transport.buffered = 10_000
    await h.publish("public:slow", "x")
    assert (await slow.transport.wait_closed())[0] == 3008
    assert h.node.hub.subscriber_count(h.ref("public:slow")) == 1
    await h.publish("public:slow", "y")
    await fine.transport.wait_for(lambda m: m.get("push", {}).get("pub", {}).get("data") == "y")
    assert [p["data"] for p in slow.transport.pushes("pub")] == ["x"]


async def test_channels_of_two_apps_never_mix(harness: Harness, db: object) -> None:
    """`public:lobby` of one app and `public:lobby` of another are different channels."""
    from tests.unit.engine.conftest import create_app
    from xshathra.storage.database import Database

    assert isinstance(db, Database)
    other_app = await create_app(db)
    mine = await harness.connect("a")
    theirs = await harness.connect("b", app=other_app)
    await mine.subscribe("public:lobby")
    await theirs.subscribe("public:lobby")
    await harness.publish("public:lobby", "for-other-app", app=other_app)
    await theirs.transport.wait_for(_is_pub)
    await harness.publish("public:lobby", "mine")
    await mine.transport.wait_for(_is_pub)
    assert [p["data"] for p in mine.transport.pushes("pub")] == ["mine"]
    assert [p["data"] for p in theirs.transport.pushes("pub")] == ["for-other-app"]
    stats = await mine.result("presence_stats", {"channel": "public:lobby"})
    assert stats == {"num_clients": 1, "num_users": 1}


async def test_replies_queued_before_a_disconnect_are_sent_before_the_close(
    make_harness: MakeHarness,
) -> None:
    """When a batch ends in a command that closes the connection, the replies to the earlier
    commands of the batch still reach the client, before the close."""
    h = await make_harness(client_command_burst=3, client_command_rate=0.001)
    client = await h.connect()
    client.send(*({"id": i, "ping": {}} for i in range(10, 20)))
    assert (await client.transport.wait_closed())[0] == 3013
    assert [m["id"] for m in client.transport.messages if m.get("id", 0) >= 10] == [10, 11]


async def test_a_gap_in_offsets_makes_subscribers_recover(harness: Harness) -> None:
    """Publications lost between broker and node (offset jumps): subscribers get 2500 and
    resubscribe to recover; a duplicate is dropped."""
    from xshathra.model import BrokerPublication

    [client] = await _subscribers(harness, "public:gap", 1)
    ref = harness.ref("public:gap")
    node = harness.node
    node.on_publication(ref, BrokerPublication(data=b"1", offset=1, epoch="e"))
    node.on_publication(ref, BrokerPublication(data=b"1", offset=1, epoch="e"))  # duplicate
    node.on_publication(ref, BrokerPublication(data=b"4", offset=4, epoch="e"))  # 2, 3 lost
    push = await client.transport.wait_for(lambda m: "unsubscribe" in m.get("push", {}))
    assert push["push"]["unsubscribe"]["code"] == 2500
    assert [p["data"] for p in client.transport.pushes("pub")] == [1]


class CountingCodec:
    """JSON on the wire, but a codec of its own: the hub must group its sessions apart and
    encode for them once per publication."""

    name = "json"
    wire_format = JSON_CODEC.wire_format
    ping = JSON_CODEC.ping

    def __init__(self) -> None:
        self.encoded = 0

    def decode_commands(self, frame: bytes, /) -> list[m.Command]:
        return JSON_CODEC.decode_commands(frame)

    def encode_reply(self, reply: m.Reply, /) -> bytes:
        self.encoded += 1
        return JSON_CODEC.encode_reply(reply)

    def join_frames(self, encoded: list[bytes], /) -> bytes:
        return JSON_CODEC.join_frames(encoded)


async def test_a_publication_is_encoded_once_per_codec_and_framing(harness: Harness) -> None:
    """Subscribers of one (codec, framing) pair share one frame object; another codec or
    another framing gets a frame of its own, encoded once for all its subscribers."""
    counting = CountingCodec()
    plain = [harness.open() for _ in range(2)]
    other_framing = [harness.open() for _ in range(2)]
    other_codec = [harness.open() for _ in range(2)]
    for client in other_framing:
        client.transport.framing = "other"
    for client in other_codec:
        client.transport.codec = counting
    clients = [*plain, *other_framing, *other_codec]
    for client in clients:
        client.send({"id": 1, "connect": {"token": harness.token("u")}})
        await client.transport.wait_for(lambda msg: msg.get("id") == 1)
        await client.subscribe("public:mixed")
    assert harness.node.hub.subscriber_count(harness.ref("public:mixed")) == 6
    counting.encoded = 0
    await harness.publish("public:mixed", {"n": 1})
    for client in clients:
        await client.transport.wait_for(_is_pub)
    frames = [c.transport.frames[-1] for c in clients]
    assert all(frame == frames[0] for frame in frames)
    assert frames[0] is frames[1] and frames[2] is frames[3] and frames[4] is frames[5]
    assert frames[0] is not frames[2] and frames[0] is not frames[4]
    assert counting.encoded == 1
    for client in clients:
        client.session.disconnect(3000)
    assert harness.node.hub.subscriber_count(harness.ref("public:mixed")) == 0
    assert harness.node.hub.subscription_total() == 0
