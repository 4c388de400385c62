"""Hypothesis on the protobuf codec: arbitrary bytes never crash the command decoder (it only
refuses, with `ProtocolDecodeError`), what a client can send decodes to itself, and every reply
survives a round trip through the wire."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from xshathra.protocol import client_pb2 as pb
from xshathra.protocol import messages as m
from xshathra.protocol.codec import ProtocolDecodeError
from xshathra.protocol.protobuf_codec import (
    MAX_COMMANDS_PER_FRAME,
    _fill,
    _prefix,
    _struct,
    decode_commands,
    encode_reply,
    join_frames,
)

FAST = timedelta(milliseconds=500)


def _only_refuses(frame: bytes) -> list[m.Command]:
    try:
        commands = decode_commands(frame)
    except ProtocolDecodeError:
        return []
    assert all(isinstance(c, m.Command) for c in commands)
    assert all(0 <= c.id <= 0xFFFFFFFF for c in commands)
    assert len(commands) <= MAX_COMMANDS_PER_FRAME
    return commands


# Bytes that look like protobuf more often than uniform noise: tags of the Command's fields
# with every wire type, short lengths, varint continuation bytes, UTF-8 breakers.
proto_ish = st.lists(
    st.sampled_from(
        [
            *(bytes((field << 3 | wire,)) for field in range(1, 16) for wire in range(6)),
            *(b"\x00", b"\x01", b"\x02", b"\x05", b"\x7f", b"\x80", b"\xff", b"\xff\x01"),
            *(b"\x0a\x01c", b"\x12\x00", b"\xc0\x80", b"\xed\xa0\x80"),
        ]
    ),
    max_size=60,
).map(b"".join)


@settings(max_examples=400, deadline=FAST)
@given(st.binary(max_size=512) | proto_ish)
def test_arbitrary_bytes_only_refuse(data: bytes) -> None:
    """Any frame decodes to commands or raises `ProtocolDecodeError`, nothing else."""
    _only_refuses(data)


@settings(max_examples=300, deadline=FAST)
@given(st.lists(st.binary(max_size=40) | proto_ish, min_size=1, max_size=4))
def test_length_prefixed_garbage_only_refuses(bodies: list[bytes]) -> None:
    """Well-delimited frames of arbitrary bodies: one command per body, or a refusal."""
    commands = _only_refuses(b"".join(_prefix(len(b)) + b for b in bodies))
    assert commands == [] or len(commands) == len(bodies)


@settings(max_examples=50, deadline=FAST)
@given(st.integers(min_value=1, max_value=5000))
def test_deep_nesting_only_refuses(depth: int) -> None:
    """A subscribe's tag filter nested `depth` deep: decoded or refused, never a crash."""
    node = b""
    for _ in range(depth):
        node = b"\x32" + _prefix(len(node)) + node  # FilterNode.nodes = [node]
    sub = b"\x0a\x01c\x6a" + _prefix(len(node)) + node  # channel "c", tf = node
    command = b"\x08\x01\x2a" + _prefix(len(sub)) + sub
    _only_refuses(_prefix(len(command)) + command)


def _encoded(struct: msgspec.Struct, message: Any) -> bytes:
    _fill(struct, message)
    body: bytes = message.SerializeToString()
    return _prefix(len(body)) + body


raw = st.binary(max_size=20).map(msgspec.Raw)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
text = st.text(max_size=10)
texts = st.dictionaries(text, text, min_size=1, max_size=3)
subscribe_requests = st.builds(
    m.SubscribeRequest,
    channel=text,
    token=text,
    recover=st.booleans(),
    epoch=text,
    offset=u64,
    data=raw,
    positioned=st.booleans(),
    recoverable=st.booleans(),
    join_leave=st.booleans(),
    delta=text,
)
commands = st.builds(
    m.Command,
    id=u32,
    connect=st.none()
    | st.builds(
        m.ConnectRequest,
        token=text,
        data=raw,
        subs=st.none() | st.dictionaries(text, subscribe_requests, min_size=1, max_size=2),
        name=text,
        version=text,
        headers=st.none() | texts,
    ),
    subscribe=st.none() | subscribe_requests,
    unsubscribe=st.none() | st.builds(m.UnsubscribeRequest, channel=text),
    publish=st.none() | st.builds(m.PublishRequest, channel=text, data=raw),
    presence=st.none() | st.builds(m.PresenceRequest, channel=text),
    presence_stats=st.none() | st.builds(m.PresenceStatsRequest, channel=text),
    history=st.none()
    | st.builds(
        m.HistoryRequest,
        channel=text,
        limit=st.integers(min_value=-(2**31), max_value=2**31 - 1),
        since=st.none() | st.builds(m.StreamPosition, offset=u64, epoch=text),
        reverse=st.booleans(),
    ),
    ping=st.none() | st.just(m.PingRequest()),
    send=st.none() | st.builds(m.SendRequest, data=raw),
    rpc=st.none() | st.builds(m.RPCRequest, data=raw, method=text),
    refresh=st.none() | st.builds(m.RefreshRequest, token=text),
    sub_refresh=st.none() | st.builds(m.SubRefreshRequest, channel=text, token=text),
)


@settings(max_examples=200, deadline=FAST)
@given(st.lists(commands, min_size=1, max_size=4))
def test_every_encodable_command_decodes_to_itself(batch: list[m.Command]) -> None:
    """What an SDK can send (any valid batch of commands) decodes to the same commands."""
    frame = b"".join(_encoded(c, pb.Command()) for c in batch)
    assert decode_commands(frame) == batch


client_infos = st.builds(m.ClientInfo, user=text, client=text, conn_info=raw, chan_info=raw)
publications = st.builds(
    m.Publication,
    data=raw,
    info=st.none() | client_infos,
    offset=u64,
    tags=st.none() | texts,
    time=st.integers(min_value=0, max_value=2**62),
)
subscribe_results = st.builds(
    m.SubscribeResult,
    expires=st.booleans(),
    ttl=u32,
    recoverable=st.booleans(),
    epoch=text,
    publications=st.none() | st.lists(publications, min_size=1, max_size=2),
    recovered=st.booleans(),
    offset=u64,
    positioned=st.booleans(),
    data=raw,
    was_recovering=st.booleans(),
)
# One kind per push and one result per reply, as the server sends them (a client tells a
# reply's kind by the one field it holds).
push_kinds: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("pub", publications),
    ("join", st.builds(m.Join, info=client_infos)),
    ("leave", st.builds(m.Leave, info=client_infos)),
    ("unsubscribe", st.builds(m.Unsubscribe, code=u32, reason=text)),
    ("message", st.builds(m.Message, data=raw)),
    (
        "subscribe",
        st.builds(m.Subscribe, recoverable=st.booleans(), epoch=text, offset=u64, data=raw),
    ),
    ("disconnect", st.builds(m.Disconnect, code=u32, reason=text, reconnect=st.booleans())),
    ("refresh", st.builds(m.Refresh, expires=st.booleans(), ttl=u32)),
]
pushes = st.one_of(
    [st.builds(lambda c, v, f=f: m.Push(channel=c, **{f: v}), text, v) for f, v in push_kinds]
)
results: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("error", st.builds(m.Error, code=u32, message=text, temporary=st.booleans())),
    (
        "connect",
        st.builds(
            m.ConnectResult,
            client=text,
            version=text,
            expires=st.booleans(),
            ttl=u32,
            data=raw,
            subs=st.none() | st.dictionaries(text, subscribe_results, min_size=1, max_size=2),
            ping=u32,
            pong=st.booleans(),
            node=text,
        ),
    ),
    ("subscribe", subscribe_results),
    (
        "presence",
        st.builds(
            m.PresenceResult,
            presence=st.none() | st.dictionaries(text, client_infos, min_size=1, max_size=2),
        ),
    ),
    ("presence_stats", st.builds(m.PresenceStatsResult, num_clients=u32, num_users=u32)),
    (
        "history",
        st.builds(
            m.HistoryResult,
            publications=st.none() | st.lists(publications, min_size=1, max_size=2),
            epoch=text,
            offset=u64,
        ),
    ),
    ("rpc", st.builds(m.RPCResult, data=raw)),
    ("refresh", st.builds(m.RefreshResult, client=text, expires=st.booleans(), ttl=u32)),
    ("sub_refresh", st.builds(m.SubRefreshResult, expires=st.booleans(), ttl=u32)),
    ("ping", st.just(m.PingResult())),
    ("unsubscribe", st.just(m.UnsubscribeResult())),
    ("publish", st.just(m.PublishResult())),
]
replies = st.builds(lambda p: m.Reply(push=p), pushes) | st.one_of(
    [st.builds(lambda i, v, f=f: m.Reply(id=i, **{f: v}), u32, v) for f, v in results]
)


@settings(max_examples=200, deadline=FAST)
@given(st.lists(replies, min_size=1, max_size=3))
def test_replies_round_trip_through_the_wire(batch: list[m.Reply]) -> None:
    """Replies joined into one frame split back at their prefixes into equal replies,
    payload bytes verbatim."""
    frame = join_frames([encode_reply(r) for r in batch])
    found: list[m.Reply] = []
    pos = 0
    for _ in batch:
        length, size = 0, 0
        while True:  # the varint prefix
            byte = frame[pos + size]
            length |= (byte & 0x7F) << (7 * size)
            size += 1
            if not byte & 0x80:
                break
        message = pb.Reply()
        message.ParseFromString(frame[pos + size : pos + size + length])
        found.append(_struct(m.Reply, message))
        pos += size + length
    assert pos == len(frame)
    assert found == batch


@settings(max_examples=200, deadline=FAST)
@given(text, publications)
def test_publication_pushes_encode_as_the_generic_walk_does(
    channel: str, pub: m.Publication
) -> None:
    """The fan-out's shortcut for publication pushes writes the very bytes the generic
    struct walk writes."""
    reply = m.Reply(push=m.Push(channel=channel, pub=pub))
    assert encode_reply(reply) == _encoded(reply, pb.Reply())
