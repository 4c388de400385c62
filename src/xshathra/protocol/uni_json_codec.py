"""The JSON format of unidirectional transports (uni_websocket, uni_sse, uni_http_stream), and
the requests of the stream transports.

A unidirectional client gets bare `Push` objects, as Centrifugo sends them: `{"connect":{...}}`
first, then `{"channel":"news","pub":{...}}` and so on, never the `{"push":...}` wrapper of the
bidirectional protocol. Its one command, the connect request, arrives as a bare
`ConnectRequest` (a first message, a `cf_connect` query parameter or a POST body) and is turned
into a protocol command here, so the session reads it like any other.

Each unidirectional transport pings its own way (Centrifugo's): `{}` on uni_websocket, `null` on
uni_http_stream, and on uni_sse an empty line, which the SSE framing writes as
`event: ping`. One codec instance per ping: the hub groups (and encodes) by codec identity.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from xshathra.protocol.codec import ProtocolDecodeError, WireFormat
from xshathra.protocol.json_codec import decode_commands, join_frames
from xshathra.protocol.messages import Command, ConnectRequest, Reply

_encoder = msgspec.json.Encoder()
_connect_decoder = msgspec.json.Decoder(ConnectRequest)


class UniJsonCodec:
    """Bare pushes out; commands in (only the connect command the transport built)."""

    __slots__ = ("name", "ping")

    wire_format = WireFormat.TEXT

    def __init__(self, name: str, ping: bytes) -> None:
        self.name = name
        self.ping = ping

    def decode_commands(self, frame: bytes, /) -> list[Command]:
        return decode_commands(frame)

    def encode_reply(self, reply: Reply, /) -> bytes:
        # A uni session sends pushes only (its connect result too, as a push); anything else
        # would be a bug, and is sent as the bidirectional protocol would send it.
        push = reply.push
        return _encoder.encode(push if push is not None else reply)

    def join_frames(self, encoded: list[bytes], /) -> bytes:
        return join_frames(encoded)


UNI_WEBSOCKET_CODEC = UniJsonCodec("json", b"{}")
UNI_HTTP_STREAM_CODEC = UniJsonCodec("json", b"null")
UNI_SSE_CODEC = UniJsonCodec("json", b"")


def connect_command(request: bytes) -> bytes:
    """A unidirectional client's connect request (a JSON `ConnectRequest`, empty meaning `{}`)
    as the JSON connect command the session reads. Raises `ProtocolDecodeError` for anything
    that is not such a request."""
    request = request.strip() or b"{}"
    try:
        connect = _connect_decoder.decode(request)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolDecodeError(str(exc)) from None
    except RecursionError:
        raise ProtocolDecodeError("too deeply nested") from None
    return _encoder.encode(Command(id=1, connect=connect))


class EmulationRequest(msgspec.Struct, kw_only=True):
    """A command sent beside a stream (Centrifugo's `EmulationRequest`, JSON): the node and
    session the stream's connect reply named, and the commands as the client encoded them (a
    JSON string holding newline-delimited commands; an object or array is taken as is)."""

    # Bounded: a request is forwarded to every node when `node` is not the one asked.
    node: Annotated[str, msgspec.Meta(max_length=64)] = ""
    session: Annotated[str, msgspec.Meta(max_length=128)] = ""
    data: msgspec.Raw = msgspec.Raw()


_emulation_decoder = msgspec.json.Decoder(EmulationRequest)
_string_decoder = msgspec.json.Decoder(str)


def decode_emulation(body: bytes) -> tuple[str, str, bytes]:
    """(node, session, commands) of an emulation request. Raises `ProtocolDecodeError` for a
    body that is not one, or that names no session or carries no commands."""
    try:
        req = _emulation_decoder.decode(body)
        raw = bytes(req.data).strip()
        data = _string_decoder.decode(raw).encode() if raw.startswith(b'"') else raw
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeEncodeError) as exc:
        raise ProtocolDecodeError(str(exc)) from None
    except RecursionError:
        raise ProtocolDecodeError("too deeply nested") from None
    if not req.session:
        raise ProtocolDecodeError("session required")
    if not data:
        raise ProtocolDecodeError("data required")
    return req.node, req.session, data
