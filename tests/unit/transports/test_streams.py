"""The stream transport on its own: framing, the bounded queue, and how it ends."""

from __future__ import annotations

import json
from typing import Any

from xshathra.engine.writer import OutgoingFrame
from xshathra.protocol import client_pb2 as pb
from xshathra.protocol.codec import WireFormat
from xshathra.protocol.protobuf_codec import PROTOBUF_CODEC
from xshathra.transports.stream_routes import StreamEndpoints, _error
from xshathra.transports.streams import (
    KINDS,
    PROTOBUF_KINDS,
    STREAM_PATHS,
    StreamTransport,
    frame_http_stream,
    frame_sse,
)


def test_sse_framing_is_one_event_per_message_and_an_empty_one_is_the_ping() -> None:
    assert frame_sse(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert frame_sse(b'{"a":1}\n{"b":2}') == b'data: {"a":1}\n\ndata: {"b":2}\n\n'
    assert frame_sse(b"") == b"event: ping\ndata:\n\n"
    assert frame_http_stream(b"{}\nnull") == b"{}\nnull\n"


def test_routes() -> None:
    for name in ("http_stream", "sse", "uni_http_stream", "uni_sse"):
        assert STREAM_PATHS[f"/realtime/connection/{name}"] is KINDS[name]
        assert STREAM_PATHS[f"/connection/{name}"] is KINDS[name]
    assert StreamEndpoints.handles({"type": "http", "path": "/realtime/emulation/"})
    assert not StreamEndpoints.handles({"type": "websocket", "path": "/realtime/connection/sse"})
    assert not StreamEndpoints.handles({"type": "http", "path": "/realtime/connection/websocket"})
    assert KINDS["sse"].emulation and not KINDS["uni_sse"].emulation


def test_unsent_bytes_are_reported_to_the_writer_and_framed_once() -> None:
    transport = StreamTransport(KINDS["sse"], None, "127.0.0.1")
    frame = OutgoingFrame(b'{"push":{}}')
    first = transport.send_frame(frame)
    assert frame.wire == b'data: {"push":{}}\n\n' and first == len(frame.wire)
    assert transport.send_frame(frame) == 2 * len(frame.wire)


async def test_a_slow_client_loses_what_is_queued_and_gets_the_disconnect_push() -> None:
    transport = StreamTransport(KINDS["uni_http_stream"], None, "")
    transport.send_frame(OutgoingFrame(b"x" * 1000))
    transport.close(3008, "slow")
    sent: list[bytes] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message["body"])  # type: ignore[arg-type]

    await transport.pump(send, b"")
    assert sent == [b'{"disconnect":{"code":3008,"reason":"slow","reconnect":true}}\n', b""]
    assert transport.send_frame(OutgoingFrame(b"late")) == 0  # nothing after the end


async def test_a_bidirectional_stream_ends_with_a_wrapped_disconnect_push() -> None:
    transport = StreamTransport(KINDS["http_stream"], None, "")
    transport.send_frame(OutgoingFrame(b'{"id":1}'))
    transport.close(3501, "bad request")
    sent: list[bytes] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message["body"])  # type: ignore[arg-type]

    await transport.pump(send, b"")
    lines = b"".join(sent).splitlines()
    assert [json.loads(line) for line in lines] == [
        {"id": 1},
        {"push": {"disconnect": {"code": 3501, "reason": "bad request"}}},
    ]


async def test_a_protobuf_stream_is_bare_length_delimited_replies_then_a_disconnect() -> None:
    """centrifuge-js's protobuf build reads varint length-delimited `Reply`s off the stream:
    nothing is added around them, and the disconnect push is one more such reply."""
    kind = PROTOBUF_KINDS["http_stream"]
    assert kind.codec is PROTOBUF_CODEC and kind.emulation
    transport = StreamTransport(kind, None, "")
    assert transport.wire_format is WireFormat.BINARY
    frame = OutgoingFrame(PROTOBUF_CODEC.ping)
    transport.send_frame(frame)
    assert frame.wire == b"\x00"
    transport.close(3501, "bad request")
    sent: list[bytes] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message["body"])  # type: ignore[arg-type]

    await transport.pump(send, b"")
    body = sent[0]
    assert body[0] == 0 and body[1] == len(body) - 2  # the ping, then one prefixed reply
    reply = pb.Reply()
    reply.ParseFromString(body[2:])
    assert (reply.push.disconnect.code, reply.push.disconnect.reconnect) == (3501, False)
    assert sent[-1] == b""


async def test_an_error_body_is_json_whatever_its_message() -> None:
    """A quote or backslash in the message is escaped, not pasted into the document."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    message = 'bad "quote", back\\slash and \u00e9'
    await _error(send, 400, message, "https://page.example")
    start, body = sent
    assert start["status"] == 400
    assert json.loads(body["body"]) == {"error": message}
    headers = dict(start["headers"])
    assert headers[b"content-length"] == str(len(body["body"])).encode()
    assert headers[b"content-type"] == b"application/json"
