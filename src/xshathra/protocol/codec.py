"""The codec seam: how commands are read from, and replies and pushes written to, one client's
frames. The engine encodes and decodes only through a `Codec`, chosen per session by the
transport that accepted the connection; it never imports a JSON (or protobuf) library itself.

Two codecs exist: `json_codec.JSON_CODEC` (newline-delimited text) and
`protobuf_codec.PROTOBUF_CODEC` (varint-length-delimited binary; `join_frames` concatenates).
A codec touches only `protocol/` and the transports that offer it (the WebSocket transport picks
one at the handshake). The hub, the writer and the session need no change for a new one: they
encode each publication once per (codec, framing) pair they see, and merge a tick's frames with
the codec that encoded them.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol

from xshathra.protocol.messages import Command, Reply


class ProtocolDecodeError(Exception):
    """The frame is not a valid batch of commands (whatever the codec)."""


class WireFormat(Enum):
    """What a codec's frames are: UTF-8 text (a WebSocket text message, an SSE event) or bytes
    (a binary WebSocket message; a text-only transport cannot carry them)."""

    TEXT = "text"
    BINARY = "binary"


class Codec(Protocol):
    """One wire format of the Centrifuge client protocol. Implementations are stateless and
    shared by every session that uses them: their identity is the key the hub groups
    subscribers by, so there is one instance per format."""

    @property
    def name(self) -> str:
        """The format's name as clients ask for it: "json", "protobuf"."""

    @property
    def wire_format(self) -> WireFormat:
        """Whether the frames are text or binary."""

    @property
    def ping(self) -> bytes:
        """The server's ping, encoded: an empty reply (the client answers with an empty
        command)."""

    def decode_commands(self, frame: bytes, /) -> list[Command]:
        """The commands one incoming message carries, in order. Raises nothing but
        `ProtocolDecodeError`, whatever the bytes."""

    def encode_reply(self, reply: Reply, /) -> bytes:
        """One reply or push, as it goes in a frame alone."""

    def join_frames(self, encoded: list[bytes], /) -> bytes:
        """Several encoded replies as one message, in order: a tick's frames for one
        connection go out as one write, merged by the format's own rule."""
