"""Hypothesis on what the stream endpoints decode from the network: a unidirectional connect
request (`cf_connect`, a POST body, a first WebSocket message) and an emulation request. Any
input is either decoded or refused with `ProtocolDecodeError`, fast."""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.property.test_decoders import strict_json
from xshathra.protocol.codec import ProtocolDecodeError
from xshathra.protocol.json_codec import decode_commands
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
