"""The protobuf codec against centrifuge-python's own generated module (another compilation of
the same wire format): what we encode they parse, what they encode we decode."""

from __future__ import annotations

import msgspec
import pytest
from centrifuge.protocol import client_pb2 as theirs
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from xshathra.protocol import client_pb2 as pb
from xshathra.protocol import messages as m
from xshathra.protocol.codec import ProtocolDecodeError, WireFormat
from xshathra.protocol.protobuf_codec import (
    MAX_COMMANDS_PER_FRAME,
    PROTOBUF_CODEC,
    decode_commands,
    encode_reply,
)


def _prefixed(message: object) -> bytes:
    body: bytes = message.SerializeToString()  # type: ignore[attr-defined]
    assert len(body) < 128
    return bytes((len(body),)) + body


def _parse(wire: bytes) -> theirs.Reply:
    assert wire[0] == len(wire) - 1
    reply = theirs.Reply()
    reply.ParseFromString(wire[1:])
    return reply


def _struct_types() -> list[type[msgspec.Struct]]:
    return [
        t
        for t in vars(m).values()
        if isinstance(t, type) and issubclass(t, msgspec.Struct) and t is not msgspec.Struct
    ]


@pytest.mark.parametrize("cls", _struct_types(), ids=lambda c: c.__name__)
def test_every_struct_field_is_a_field_of_the_proto_and_of_the_original(
    cls: type[msgspec.Struct],
) -> None:
    """Our structs, our .proto and centrifugal's .proto agree on names and numbers (a struct
    the protobuf format has no message for, if one is added, is not checked here)."""
    if not hasattr(pb, cls.__name__):
        pytest.skip(f"no {cls.__name__} message in client.proto")
    ours: Descriptor = getattr(pb, cls.__name__).DESCRIPTOR
    original: Descriptor = getattr(theirs, cls.__name__).DESCRIPTOR
    for name in cls.__struct_fields__:
        field: FieldDescriptor = ours.fields_by_name[name]
        assert original.fields_by_name[name].number == field.number, name
        assert original.fields_by_name[name].type == field.type, name


def test_codec_members() -> None:
    assert PROTOBUF_CODEC.name == "protobuf"
    assert PROTOBUF_CODEC.wire_format is WireFormat.BINARY
    assert PROTOBUF_CODEC.ping == b"\x00"  # an empty reply, length-prefixed
    assert PROTOBUF_CODEC.join_frames([b"\x01a", b"\x00", b"\x02bc"]) == b"\x01a\x00\x02bc"


def test_publication_push_carries_payload_bytes_verbatim() -> None:
    reply = m.Reply(
        push=m.Push(
            channel="public:x",
            pub=m.Publication(
                data=msgspec.Raw(b'{"text":"hi"}'),
                offset=7,
                tags={"event": "e"},
                info=m.ClientInfo(user="u", client="c", conn_info=msgspec.Raw(b'{"a":1}')),
            ),
        )
    )
    got = _parse(encode_reply(reply))
    assert got.id == 0 and got.push.channel == "public:x"
    assert got.push.pub.data == b'{"text":"hi"}'
    assert got.push.pub.offset == 7 and dict(got.push.pub.tags) == {"event": "e"}
    assert got.push.pub.info.user == "u" and got.push.pub.info.conn_info == b'{"a":1}'


@pytest.mark.parametrize(
    "reply",
    [
        m.Reply(id=3, publish=m.PublishResult()),
        m.Reply(id=4, presence_stats=m.PresenceStatsResult()),
        m.Reply(id=5, unsubscribe=m.UnsubscribeResult()),
        m.Reply(id=6, ping=m.PingResult()),
    ],
)
def test_empty_results_are_present_on_the_wire(reply: m.Reply) -> None:
    """Clients tell a reply's kind by the result it holds, empty or not."""
    got = _parse(encode_reply(reply))
    (field,) = [f for f in m.Reply.__struct_fields__ if f != "id" and getattr(reply, f)]
    assert got.HasField(field)


def test_maps_lists_and_errors() -> None:
    reply = m.Reply(
        id=9,
        connect=m.ConnectResult(
            client="c",
            ping=25,
            pong=True,
            subs={"feed": m.SubscribeResult(recoverable=True, epoch="e", offset=2**40)},
        ),
    )
    got = _parse(encode_reply(reply))
    assert got.connect.client == "c" and got.connect.ping == 25 and got.connect.pong
    assert got.connect.subs["feed"].offset == 2**40 and got.connect.subs["feed"].recoverable
    history = m.HistoryResult(
        publications=[m.Publication(data=msgspec.Raw(b"1"), offset=1)], epoch="e", offset=1
    )
    got = _parse(encode_reply(m.Reply(id=2, history=history)))
    assert [p.data for p in got.history.publications] == [b"1"]
    err = _parse(encode_reply(m.Reply(id=1, error=m.Error(code=109, message="token expired"))))
    assert (err.error.code, err.error.message) == (109, "token expired")


def test_decodes_a_batch_of_commands() -> None:
    connect = theirs.Command(id=1)
    connect.connect.token = "t"
    connect.connect.data = b'{"x":1}'
    connect.connect.subs["ch"].recover = True
    connect.connect.subs["ch"].offset = 5
    publish = theirs.Command(id=2)
    publish.publish.channel = "c"
    publish.publish.data = b"\x00\xffbinary"
    history = theirs.Command(id=3)
    history.history.channel = "c"
    history.history.limit = -1
    history.history.since.epoch = "e"
    pong = theirs.Command()
    frame = b"".join(_prefixed(c) for c in (connect, publish, history, pong))
    got = decode_commands(frame)
    assert [c.id for c in got] == [1, 2, 3, 0]
    assert got[0].connect is not None and got[0].connect.token == "t"
    assert bytes(got[0].connect.data) == b'{"x":1}'
    assert got[0].connect.subs is not None
    assert (got[0].connect.subs["ch"].recover, got[0].connect.subs["ch"].offset) == (True, 5)
    assert got[1].publish == m.PublishRequest(channel="c", data=msgspec.Raw(b"\x00\xffbinary"))
    assert got[2].history == m.HistoryRequest(
        channel="c", limit=-1, since=m.StreamPosition(epoch="e")
    )
    assert got[3] == m.Command()  # the pong to a server ping
    assert decode_commands(b"") == []


def test_struct_fields_the_proto_lacks_are_left_off_the_wire() -> None:
    """A field added to a struct for another format never breaks protobuf encoding."""

    class Extended(m.Publication, kw_only=True):
        only_for_json: str = ""

    pub = Extended(data=msgspec.Raw(b"1"), offset=2, only_for_json="x")
    got = _parse(encode_reply(m.Reply(push=m.Push(channel="c", pub=pub))))
    assert (got.push.pub.data, got.push.pub.offset) == (b"1", 2)


def test_unknown_fields_are_skipped() -> None:
    """Fields of a newer protocol (here a subscribe's `flag`) do not stop decoding."""
    sub = theirs.Command(id=4)
    sub.subscribe.channel = "c"
    sub.subscribe.flag = 3
    (got,) = decode_commands(_prefixed(sub))
    assert got.subscribe == m.SubscribeRequest(channel="c")


@pytest.mark.parametrize(
    "frame",
    [
        b"\x80",  # a length whose varint never ends
        b"\xff\xff\xff\xff\xff\x01",  # a length of more than 32 bits
        b"\x05\x08\x01",  # a length past the end of the frame
        b"\x02\x0d\x01",  # a fixed32 with one byte of its four
        b"\x03\x08\x01\x07",  # an invalid wire type
        b"\x07\x22\x05\x0a\x03\xff\xfe\xfd",  # invalid UTF-8 in the token
    ],
)
def test_malformed_frames_raise_only_decode_errors(frame: bytes) -> None:
    with pytest.raises(ProtocolDecodeError):
        decode_commands(frame)


def test_too_many_commands_in_one_frame() -> None:
    assert len(decode_commands(b"\x00" * MAX_COMMANDS_PER_FRAME)) == MAX_COMMANDS_PER_FRAME
    with pytest.raises(ProtocolDecodeError):
        decode_commands(b"\x00" * (MAX_COMMANDS_PER_FRAME + 1))
