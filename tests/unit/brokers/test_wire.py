"""The Redis and NATS channel message parsers, on bytes alone: what each wire message becomes,
and that a malformed or unknown one is refused or skipped rather than misread."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from xshathra.brokers import nats, redis
from xshathra.brokers.events import ChannelEvent, Joined, Left, deliver
from xshathra.links.packing import encode_info, pack_info
from xshathra.model import AppId, BrokerPublication, ChannelRef, ClientInfoData

INFO = ClientInfoData(user="u1", client="c1", conn_info=b'{"a":1}', chan_info=b"")
Parser = Callable[[bytes], ChannelEvent | None]
PACKED = msgspec.msgpack.encode(["u1", "c1", b'{"a":1}', b""])


def test_redis_publication_carries_offset_and_epoch_from_the_prefix() -> None:
    """`p<offset>:<epoch>:<envelope>`: offset and epoch before the msgpack array, which holds
    data, tags, info and time (trailing defaults omitted)."""
    envelope = msgspec.msgpack.encode(
        [b'{"x":1}', {"event": "e"}, ["u1", "c1", b'{"a":1}', b""], 7]
    )
    event = redis.parse_channel_message(b"p42:ep-1:" + envelope)
    assert event == BrokerPublication(
        data=b'{"x":1}', offset=42, epoch="ep-1", tags={"event": "e"}, info=INFO, time=7
    )


def test_redis_publication_with_only_data() -> None:
    event = redis.parse_channel_message(b"p1:e:" + msgspec.msgpack.encode([b"{}"]))
    assert event == BrokerPublication(data=b"{}", offset=1, epoch="e")


def test_redis_epoch_may_not_hold_a_colon_but_the_payload_may() -> None:
    """Only the first two colons split: the envelope's bytes may contain any."""
    event = redis.parse_channel_message(b"p3:e:" + msgspec.msgpack.encode([b"a:b:c"]))
    assert isinstance(event, BrokerPublication)
    assert event.data == b"a:b:c"


@pytest.mark.parametrize(
    ("parse", "kind", "expected"),
    [
        (redis.parse_channel_message, b"j", Joined(INFO)),
        (redis.parse_channel_message, b"l", Left(INFO)),
        (nats.parse_channel_message, b"j", Joined(INFO)),
        (nats.parse_channel_message, b"l", Left(INFO)),
    ],
)
def test_join_and_leave_carry_the_client_info(
    parse: Parser, kind: bytes, expected: ChannelEvent
) -> None:
    assert parse(kind + PACKED) == expected
    # What the brokers send is what they parse.
    assert parse(kind + encode_info(pack_info(INFO))) == expected


def test_nats_publication_holds_offset_and_epoch_in_the_envelope() -> None:
    """NATS: `p<envelope>`, the envelope array being data, offset, epoch, tags, info, time,
    then the history size and expiry in force (which a receiver ignores)."""
    envelope = msgspec.msgpack.encode(
        [b'{"x":1}', 9, "ep", None, ["u1", "c1", b'{"a":1}', b""], 5, 10, 0]
    )
    event = nats.parse_channel_message(b"p" + envelope)
    assert event == BrokerPublication(data=b'{"x":1}', offset=9, epoch="ep", info=INFO, time=5)


def test_redis_batch_numbers_its_publications_from_the_first_offset() -> None:
    """`b<first offset>:<epoch>:<array of envelopes>`: consecutive offsets from the first in
    the batch's order; without history (offset 0, no epoch) every offset stays 0."""
    items = msgspec.msgpack.encode(
        [msgspec.msgpack.encode([b"1"]), msgspec.msgpack.encode([b"2", {"t": "x"}, None, 5])]
    )
    assert redis.parse_channel_events(b"b7:ep:" + items) == [
        BrokerPublication(data=b"1", offset=7, epoch="ep"),
        BrokerPublication(data=b"2", offset=8, epoch="ep", tags={"t": "x"}, time=5),
    ]
    assert [p.offset for p in redis.parse_channel_events(b"b0::" + items)] == [0, 0]  # type: ignore[union-attr]
    assert redis.parse_channel_events(b"j" + PACKED) == [Joined(INFO)]
    with pytest.raises(ValueError):
        redis.parse_channel_events(b"b1:e:" + msgspec.msgpack.encode([b"\xc1"]))


def test_nats_batch_is_its_publications_in_order() -> None:
    """`b<array of envelopes>`: what one node appended in one go, consecutive offsets; each
    becomes its own publication, in the batch's order."""
    batch = msgspec.msgpack.encode([[b"1", 4, "ep", None, None, 5], [b"2", 5, "ep", {"t": "x"}]])
    assert nats.parse_channel_events(b"b" + batch) == [
        BrokerPublication(data=b"1", offset=4, epoch="ep", time=5),
        BrokerPublication(data=b"2", offset=5, epoch="ep", tags={"t": "x"}),
    ]
    assert nats.parse_channel_events(b"m" + msgspec.msgpack.encode([b"", 3, "ep"])) == []
    assert nats.parse_channel_events(b"j" + PACKED) == [Joined(INFO)]
    with pytest.raises(ValueError):
        nats.parse_channel_events(b"b" + msgspec.msgpack.encode([b"not an envelope"]))


def test_nats_position_marker_is_not_an_event() -> None:
    """A marker (`m`) keeps a channel's position in the stream; receivers skip it."""
    assert nats.parse_channel_message(b"m" + msgspec.msgpack.encode([b"", 3, "ep"])) is None


@pytest.mark.parametrize("parse", [redis.parse_channel_message, nats.parse_channel_message])
def test_unknown_kinds_are_skipped(parse: Parser) -> None:
    """A kind a newer node may send is not an error: this node skips it."""
    assert parse(b"") is None
    assert parse(b"z" + PACKED) is None


@pytest.mark.parametrize(
    "data",
    [
        b"p",
        b"pnot-a-number:e:\x91\xc4\x00",
        b"p1:e",
        b"p1:\xff:\x91\xc4\x00",
        b"p1:e:\xc1",
        b"j\x01",
    ],
)
def test_redis_malformed_messages_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        redis.parse_channel_message(data)


@pytest.mark.parametrize("data", [b"p", b"p\xc1", b"p\x91\x01", b"j", b"l\x92\x01\x02"])
def test_nats_malformed_messages_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        nats.parse_channel_message(data)


class Recorder:
    """A broker event handler that records what it was handed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ChannelRef, object]] = []

    def on_publication(self, ref: ChannelRef, pub: BrokerPublication) -> None:
        self.calls.append(("publication", ref, pub))

    def on_join(self, ref: ChannelRef, info: ClientInfoData) -> None:
        self.calls.append(("join", ref, info))

    def on_leave(self, ref: ChannelRef, info: ClientInfoData) -> None:
        self.calls.append(("leave", ref, info))

    def on_control(self, data: bytes) -> None:
        self.calls.append(("control", ChannelRef(AppId(""), ""), data))

    def on_reconnect(self) -> None:
        self.calls.append(("reconnect", ChannelRef(AppId(""), ""), None))


def test_deliver_calls_the_matching_handler_method() -> None:
    ref = ChannelRef(AppId("app"), "news")
    pub = BrokerPublication(data=b"{}", offset=1, epoch="e")
    handler = Recorder()
    for event in (pub, Joined(INFO), Left(INFO)):
        deliver(handler, ref, event)
    assert handler.calls == [("publication", ref, pub), ("join", ref, INFO), ("leave", ref, INFO)]
