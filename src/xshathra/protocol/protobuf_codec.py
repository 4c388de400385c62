"""The protobuf wire format: varint-length-delimited `Command`s in, `Reply`s out, as clients
speaking the `centrifuge-protobuf` WebSocket subprotocol frame them.

Messages are parsed and serialized by the `protobuf` package from the code generated out of
our `client.proto` (client_pb2); this module only splits a frame at its length prefixes and
maps the generated messages to and from the protocol's structs (protocol.messages), which is
all the engine ever sees. Decoding raises nothing but `ProtocolDecodeError`, whatever the bytes.

Payloads (`data`, `conn_info`, `chan_info`) pass through as bytes, both ways: a publication
published as JSON (by the server API or a JSON client) reaches a protobuf client as those JSON
bytes, and bytes a protobuf client publishes reach every subscriber unchanged. That is
Centrifugo's default: JSON and protobuf subscribers of one channel get the same publications,
and a channel that has JSON subscribers must be published JSON.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as PbMessage

from xshathra.protocol import client_pb2 as pb
from xshathra.protocol import messages as m
from xshathra.protocol.codec import ProtocolDecodeError, WireFormat

# As many as a JSON frame may carry (json_codec): a frame is parsed whole before any command
# is handled, so this bounds the work one frame can ask for.
MAX_COMMANDS_PER_FRAME = 256
# A length prefix is a varint of at most 32 bits here: no frame is anywhere near 4 GiB, and
# reading further would only let garbage spin the loop.
_MAX_VARINT_BYTES = 5

# The server's ping: an empty reply, length-prefixed (a zero length, nothing after it).
PING_FRAME = b"\x00"


# --- mapping between the protocol's structs and the generated messages -------------------------
#
# Each struct field is one of these kinds, read once from the struct's type annotations.
_SCALAR, _RAW, _STRUCT, _STRUCT_MAP, _TEXT_MAP, _STRUCT_LIST, _SCALAR_LIST = range(7)
# (name, kind, struct type of its values, required: a struct field without a default)
FieldSpec = tuple[str, int, type[msgspec.Struct] | None, bool]


def _field_specs(cls: type[msgspec.Struct], descriptor: Descriptor) -> tuple[FieldSpec, ...]:
    """The struct's fields that the message has too. A field the .proto lacks (one added to
    the structs for another format) is not on this wire: it is left out, never an error in
    the middle of a fan-out."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    specs: list[FieldSpec] = []
    for field in info.fields:
        if field.name not in descriptor.fields_by_name:
            continue
        kind, target = _kind(field.type)
        specs.append((field.name, kind, target, field.required))
    return tuple(specs)


def _kind(t: msgspec.inspect.Type) -> tuple[int, type[msgspec.Struct] | None]:
    if isinstance(t, msgspec.inspect.UnionType):  # `X | None`: the X
        types = [u for u in t.types if not isinstance(u, msgspec.inspect.NoneType)]
        if len(types) != 1:
            return _SCALAR, None
        t = types[0]
    if isinstance(t, msgspec.inspect.RawType):
        return _RAW, None
    if isinstance(t, msgspec.inspect.StructType):
        return _STRUCT, t.cls
    if isinstance(t, msgspec.inspect.DictType):
        value = t.value_type
        if isinstance(value, msgspec.inspect.StructType):
            return _STRUCT_MAP, value.cls
        return _TEXT_MAP, None
    if isinstance(t, msgspec.inspect.ListType):
        if isinstance(t.item_type, msgspec.inspect.StructType):
            return _STRUCT_LIST, t.item_type.cls
        return _SCALAR_LIST, None
    return _SCALAR, None


# Per struct type and message type (one struct may fill two messages: ConnectResult is also
# the `connect` push), computed on first use.
_SPECS: dict[tuple[type[msgspec.Struct], Descriptor], tuple[FieldSpec, ...]] = {}


def _specs(cls: type[msgspec.Struct], descriptor: Descriptor) -> tuple[FieldSpec, ...]:
    key = (cls, descriptor)
    specs = _SPECS.get(key)
    if specs is None:
        specs = _SPECS[key] = _field_specs(cls, descriptor)
    return specs


def _fill(struct: msgspec.Struct, target: Any) -> None:
    """Copy a struct's non-default fields into a generated message. An empty struct still
    marks its field present (`SetInParent`): clients tell a reply's kind by which result it
    holds, so `publish {}` must be on the wire."""
    for name, kind, _, _ in _specs(type(struct), target.DESCRIPTOR):
        value = getattr(struct, name)
        if not value and kind != _STRUCT:
            continue  # zero, "", False, empty payload, None or an empty map: the default
        if kind == _SCALAR:
            setattr(target, name, value)
        elif kind == _RAW:
            setattr(target, name, bytes(value))
        elif kind == _STRUCT:
            if value is not None:
                child = getattr(target, name)
                child.SetInParent()
                _fill(value, child)
        elif kind == _STRUCT_MAP:
            entries = getattr(target, name)
            for key, item in value.items():
                _fill(item, entries[key])
        elif kind == _TEXT_MAP:
            getattr(target, name).update(value)
        elif kind == _SCALAR_LIST:
            getattr(target, name).extend(value)
        else:  # _STRUCT_LIST
            items = getattr(target, name)
            for item in value:
                _fill(item, items.add())


def _struct(cls: type[msgspec.Struct], source: PbMessage) -> Any:
    """A struct of `cls` from a parsed message: the fields the message holds (and the zero
    value of a required one it lacks), of those only the ones the struct has (a field we do
    not use yet is dropped)."""
    kwargs: dict[str, Any] = {}
    held = {descriptor.name for descriptor, _ in source.ListFields()}
    for name, kind, sub, required in _specs(cls, cast(Descriptor, source.DESCRIPTOR)):
        if name not in held and not required:
            continue
        value = getattr(source, name)
        if kind == _SCALAR:
            kwargs[name] = value
        elif kind == _RAW:
            kwargs[name] = msgspec.Raw(value)
        elif kind == _STRUCT:
            assert sub is not None
            kwargs[name] = _struct(sub, value)
        elif kind == _STRUCT_MAP:
            assert sub is not None
            kwargs[name] = {key: _struct(sub, item) for key, item in value.items()}
        elif kind == _TEXT_MAP:
            kwargs[name] = dict(value)
        elif kind == _SCALAR_LIST:
            kwargs[name] = list(value)
        else:  # _STRUCT_LIST
            assert sub is not None
            kwargs[name] = [_struct(sub, item) for item in value]
    return cls(**kwargs)


# --- frames ------------------------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    result = shift = 0
    for i in range(pos, min(pos + _MAX_VARINT_BYTES, len(data))):
        byte = data[i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i + 1
        shift += 7
    if len(data) - pos < _MAX_VARINT_BYTES:
        raise ProtocolDecodeError("truncated length prefix")
    raise ProtocolDecodeError("length prefix too long")


def _prefix(n: int) -> bytes:
    """`n` as a varint."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_commands(frame: bytes) -> list[m.Command]:
    """The commands of one binary frame: each a varint length, then that many bytes of a
    serialized `Command`."""
    commands: list[m.Command] = []
    pos, end = 0, len(frame)
    while pos < end:
        if len(commands) >= MAX_COMMANDS_PER_FRAME:
            raise ProtocolDecodeError("too many commands in one frame")
        length, pos = _varint(frame, pos)
        stop = pos + length
        if stop > end:
            raise ProtocolDecodeError("command length past the end of the frame")
        message = pb.Command()
        try:
            message.ParseFromString(frame[pos:stop])
        except (DecodeError, RecursionError):
            # Not a Command: bad wire types, invalid UTF-8 in a string, absurd nesting.
            raise ProtocolDecodeError("malformed command") from None
        commands.append(_struct(m.Command, message))
        pos = stop
    return commands


def encode_reply(reply: m.Reply) -> bytes:
    """One reply or push, serialized and prefixed with its length."""
    message = pb.Reply()
    push = reply.push
    if push is not None and push.pub is not None:
        # The fan-out's reply, encoded once per publication: a publication push holds its
        # channel and the publication, nothing else (a push is never a command's reply), so
        # the two outer levels are set directly instead of walking their two dozen fields.
        # A fifth of the generic walk's time.
        target = message.push
        target.channel = push.channel
        publication = target.pub
        publication.SetInParent()
        _fill(push.pub, publication)
    else:
        _fill(reply, message)
    body = message.SerializeToString()
    return _prefix(len(body)) + body


def join_frames(encoded: list[bytes]) -> bytes:
    """Length-prefixed replies are self-delimiting: several in one frame are simply
    concatenated."""
    return b"".join(encoded)


class ProtobufCodec:
    """The protobuf format as a `Codec`. Stateless: `PROTOBUF_CODEC` is the one instance."""

    __slots__ = ()

    name = "protobuf"
    wire_format = WireFormat.BINARY
    ping = PING_FRAME
    decode_commands = staticmethod(decode_commands)
    encode_reply = staticmethod(encode_reply)
    join_frames = staticmethod(join_frames)


PROTOBUF_CODEC = ProtobufCodec()


# --- bidirectional emulation -------------------------------------------------------------------
#
# Bounded as the JSON request is (uni_json_codec.EmulationRequest): a request is forwarded to
# every node when `node` is not the one asked.
_MAX_NODE = 64
_MAX_SESSION = 128


def decode_emulation(body: bytes) -> tuple[str, str, bytes]:
    """(node, session, commands) of a protobuf `EmulationRequest` (the body centrifuge-js's
    protobuf build POSTs to the emulation endpoint): `data` holds the commands as the client
    encoded them, length-delimited, read by the session's codec. Raises `ProtocolDecodeError`
    for a body that is not one, or that names no session or carries no commands."""
    message = pb.EmulationRequest()
    try:
        message.ParseFromString(body)
    except (DecodeError, RecursionError):
        raise ProtocolDecodeError("malformed emulation request") from None
    if not message.session:
        raise ProtocolDecodeError("session required")
    if not message.data:
        raise ProtocolDecodeError("data required")
    if len(message.node) > _MAX_NODE or len(message.session) > _MAX_SESSION:
        raise ProtocolDecodeError("node or session too long")
    return message.node, message.session, bytes(message.data)
