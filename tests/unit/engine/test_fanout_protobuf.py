"""Fan-out to JSON and protobuf subscribers of one channel: each publication is encoded once
per format, whatever the number of subscribers, and both formats carry the same payload."""

from __future__ import annotations

import base64
import json

from google.protobuf.json_format import MessageToDict

from tests.unit.engine.fakes import FRAME_HEADER, Harness
from xshathra.engine.writer import OutgoingFrame
from xshathra.protocol import client_pb2 as pb
from xshathra.protocol import messages as m
from xshathra.protocol import protobuf_codec
from xshathra.protocol.codec import Codec
from xshathra.protocol.json_codec import JSON_CODEC
from xshathra.protocol.protobuf_codec import PROTOBUF_CODEC


class Counting:
    """A format's encoder that counts its calls. The fake clients send JSON commands whatever
    the format they read (the hub only ever encodes), so decoding stays JSON."""

    name = "counting"
    ping = b""

    def __init__(self, encoder: Codec) -> None:
        self._encoder = encoder
        self.wire_format = encoder.wire_format
        self.encoded = 0

    def decode_commands(self, frame: bytes, /) -> list[m.Command]:
        return JSON_CODEC.decode_commands(frame)

    def encode_reply(self, reply: m.Reply, /) -> bytes:
        self.encoded += 1
        return self._encoder.encode_reply(reply)

    def join_frames(self, encoded: list[bytes], /) -> bytes:
        return self._encoder.join_frames(encoded)


def _protobuf_reader(transport: object) -> None:
    """Make a fake transport read what it is sent as length-delimited protobuf replies."""

    def send_frame(frame: OutgoingFrame) -> int:
        if frame.wire is None:
            frame.wire = FRAME_HEADER + frame.payload
        wire = frame.wire
        t = transport
        t.frames.append(wire)  # type: ignore[attr-defined]
        body, pos = wire[len(FRAME_HEADER) :], 0
        while pos < len(body):
            n, pos = protobuf_codec._varint(body, pos)
            reply = pb.Reply()
            reply.ParseFromString(body[pos : pos + n])
            t.messages.append(MessageToDict(reply, preserving_proto_field_name=True))  # type: ignore[attr-defined]
            pos += n
        t.changed.set()  # type: ignore[attr-defined]
        return 0

    transport.send_frame = send_frame  # type: ignore[attr-defined]


def _is_pub(message: dict[str, object]) -> bool:
    push = message.get("push")
    return isinstance(push, dict) and "pub" in push


async def test_one_encode_per_format_per_publication(harness: Harness) -> None:
    """Three JSON and three protobuf subscribers: one publication is encoded once as JSON and
    once as protobuf; each format's subscribers share one frame object; the protobuf `data`
    is the very JSON bytes the JSON subscribers get."""
    as_json, as_protobuf = Counting(JSON_CODEC), Counting(PROTOBUF_CODEC)
    json_clients = [harness.open() for _ in range(3)]
    pb_clients = [harness.open() for _ in range(3)]
    for client in json_clients:
        client.transport.codec = as_json
    for client in pb_clients:
        client.transport.codec = as_protobuf
        _protobuf_reader(client.transport)
    for client in [*json_clients, *pb_clients]:
        client.send({"id": 1, "connect": {"token": harness.token("u")}})
        await client.transport.wait_for(lambda msg: msg.get("id") == 1)
        await client.subscribe("public:both")
    as_json.encoded = as_protobuf.encoded = 0

    await harness.publish("public:both", {"text": "hi", "n": [1, 2]})
    for client in [*json_clients, *pb_clients]:
        await client.transport.wait_for(_is_pub)

    assert (as_json.encoded, as_protobuf.encoded) == (1, 1)
    json_frames = [c.transport.frames[-1] for c in json_clients]
    pb_frames = [c.transport.frames[-1] for c in pb_clients]
    assert all(f is json_frames[0] for f in json_frames)
    assert all(f is pb_frames[0] for f in pb_frames)
    json_pub = json_clients[0].transport.pushes("pub")[-1]
    pb_pub = pb_clients[0].transport.pushes("pub")[-1]
    assert json_pub["data"] == json.loads(base64.b64decode(pb_pub["data"]))
    assert int(pb_pub["offset"]) == json_pub["offset"] == 1
