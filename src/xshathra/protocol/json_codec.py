"""The JSON wire format: newline-delimited commands in, newline-joined replies out.

A WebSocket text frame from the client carries one or more commands separated by "\\n"; a frame
to the client carries one or more replies joined the same way. Decoding never raises anything
but `ProtocolDecodeError`, whatever the bytes. `JSON_CODEC` is this format as a `Codec`, the
one the engine is handed; the functions are the same code, for tests and tools.
"""

from __future__ import annotations

import msgspec

from xshathra.protocol.codec import ProtocolDecodeError, WireFormat
from xshathra.protocol.messages import Command, Reply

MAX_COMMANDS_PER_FRAME = 256

_command_decoder = msgspec.json.Decoder(Command)
_encoder = msgspec.json.Encoder()

# The server's ping: an empty reply. Built once; the client answers with an empty command.
PING_FRAME = b"{}"


def decode_commands(frame: bytes) -> list[Command]:
    """Decode a frame of newline-delimited JSON commands; empty lines are skipped."""
    commands: list[Command] = []
    for line in frame.split(b"\n"):
        if not line.strip():
            continue
        if len(commands) >= MAX_COMMANDS_PER_FRAME:
            raise ProtocolDecodeError("too many commands in one frame")
        try:
            command = _command_decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolDecodeError(str(exc)) from None
        except RecursionError:
            # msgspec refuses absurd nesting this way; it is malformed input, not our failure.
            raise ProtocolDecodeError("too deeply nested") from None
        if command.id < 0 or command.id > 0xFFFFFFFF:
            raise ProtocolDecodeError("command id out of range")
        commands.append(command)
    return commands


def encode_reply(reply: Reply) -> bytes:
    """One reply as JSON bytes (no trailing newline)."""
    return _encoder.encode(reply)


def join_frames(encoded: list[bytes]) -> bytes:
    """Join several encoded replies into one frame, as the protocol allows."""
    return b"\n".join(encoded)


def error_body(message: str) -> bytes:
    """The body of an HTTP error the transports answer themselves, `{"error": "..."}`: the
    message escaped as JSON (a quote or backslash in it must not break the document)."""
    return _encoder.encode({"error": message})


class JsonCodec:
    """The JSON format as a `Codec`. Stateless: `JSON_CODEC` is the one instance."""

    __slots__ = ()

    name = "json"
    wire_format = WireFormat.TEXT
    ping = PING_FRAME
    decode_commands = staticmethod(decode_commands)
    # The encoder's own method, not `encode_reply`: fan-out calls this once per publication,
    # and a Python frame around it would be the only extra work the codec seam adds.
    encode_reply = staticmethod(_encoder.encode)
    join_frames = staticmethod(join_frames)


JSON_CODEC = JsonCodec()
