"""Hypothesis on what the stream endpoints decode from the network: a unidirectional connect
request (`cf_connect`, a POST body, a first WebSocket message) and an emulation request, JSON
or protobuf. Any
input is either decoded or refused with `ProtocolDecodeError`, fast."""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.property.test_decoders import strict_json
from xshathra.protocol import client_pb2 as pb
from xshathra.protocol.codec import ProtocolDecodeError
from xshathra.protocol.json_codec import decode_commands
from xshathra.protocol.protobuf_codec import decode_emulation as decode_protobuf_emulation
from xshathra.protocol.uni_json_codec import connect_command, decode_emulation

FAST = timedelta(milliseconds=500)
connect_like = st.dictionaries(
    st.sampled_from(["token", "data", "subs", "name", "version", "headers", "bogus"]),
    strict_json,
    max_size=5,
)
emulation_like = st.dictionaries(
    st.sampled_from(["node", "session", "data", "bogus"]),
    strict_json | st.text(max_size=40),
    max_size=4,
)
as_bytes = st.one_of(
    st.binary(max_size=300),
    connect_like.map(lambda v: json.dumps(v).encode()),
    emulation_like.map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=400, deadline=FAST)
@given(as_bytes)
def test_connect_requests_decode_or_refuse(body: bytes) -> None:
    try:
        command = connect_command(body)
    except ProtocolDecodeError:
        return
    (decoded,) = decode_commands(command)  # what it builds, the session can read
    assert decoded.connect is not None


@settings(max_examples=400, deadline=FAST)
@given(as_bytes)
def test_emulation_requests_decode_or_refuse(body: bytes) -> None:
    try:
        node, session, data = decode_emulation(body)
    except ProtocolDecodeError:
        return
    assert isinstance(node, str) and session and data


# What centrifuge-js's protobuf build POSTs (a protobuf `EmulationRequest`), around which
# arbitrary bytes: truncated, extended, or garbage throughout.
protobuf_emulation_like = st.builds(
    lambda node, session, data: pb.EmulationRequest(
        node=node, session=session, data=data
    ).SerializeToString(),
    st.text(max_size=80),
    st.text(max_size=160),
    st.binary(max_size=100),
)
protobuf_bytes = st.one_of(
    st.binary(max_size=300),
    protobuf_emulation_like,
    st.tuples(protobuf_emulation_like, st.integers(0, 300)).map(lambda v: v[0][: v[1]]),
    st.tuples(protobuf_emulation_like, st.binary(max_size=20)).map(lambda v: v[0] + v[1]),
)


@settings(max_examples=400, deadline=FAST)
@given(protobuf_bytes)
def test_protobuf_emulation_requests_decode_or_refuse(body: bytes) -> None:
    try:
        node, session, data = decode_protobuf_emulation(body)
    except ProtocolDecodeError:
        return
    assert isinstance(node, str) and len(node) <= 64
    assert session and len(session) <= 128 and isinstance(data, bytes) and data
