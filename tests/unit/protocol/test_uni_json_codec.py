"""The unidirectional JSON format and the stream requests' decoding."""

from __future__ import annotations

import json

import msgspec
import pytest

from xshathra.protocol import messages as m
from xshathra.protocol.codec import ProtocolDecodeError
from xshathra.protocol.json_codec import decode_commands
from xshathra.protocol.uni_json_codec import (
    UNI_HTTP_STREAM_CODEC,
    UNI_SSE_CODEC,
    UNI_WEBSOCKET_CODEC,
    connect_command,
    decode_emulation,
)


def test_pushes_go_out_bare_as_centrifugo_sends_them() -> None:
    pub = m.Reply(
        push=m.Push(channel="news", pub=m.Publication(data=msgspec.Raw(b'{"a":1}'), offset=3))
    )
    assert (
        UNI_SSE_CODEC.encode_reply(pub) == b'{"channel":"news","pub":{"data":{"a":1},"offset":3}}'
    )
    connect = m.Reply(push=m.Push(connect=m.ConnectResult(client="c", ping=25)))
    assert json.loads(UNI_WEBSOCKET_CODEC.encode_reply(connect)) == {
        "connect": {"client": "c", "ping": 25}
    }


def test_each_transport_pings_its_own_way() -> None:
    assert (UNI_WEBSOCKET_CODEC.ping, UNI_HTTP_STREAM_CODEC.ping, UNI_SSE_CODEC.ping) == (
        b"{}",
        b"null",
        b"",
    )
    # Distinct objects: the hub groups (and encodes, and pings) by codec identity.
    assert len({id(UNI_WEBSOCKET_CODEC), id(UNI_HTTP_STREAM_CODEC), id(UNI_SSE_CODEC)}) == 3


@pytest.mark.parametrize(
    "request_body", [b"", b"  ", b"{}", b'{"token":"t","subs":{"a":{"recover":true,"offset":2}}}']
)
def test_a_connect_request_becomes_the_connect_command(request_body: bytes) -> None:
    (command,) = decode_commands(connect_command(request_body))
    assert command.id == 1 and command.connect is not None


@pytest.mark.parametrize(
    "request_body", [b"{not json", b"[]", b'{"token": 5}', b"\xff\xfe", b'"x"', b"[" * 5000]
)
def test_anything_else_is_refused(request_body: bytes) -> None:
    with pytest.raises(ProtocolDecodeError):
        connect_command(request_body)


def test_emulation_requests() -> None:
    commands = '{"id":2,"subscribe":{"channel":"a"}}\n{"id":3,"ping":{}}'
    body = json.dumps({"node": "n1", "session": "s1", "data": commands}).encode()
    assert decode_emulation(body) == ("n1", "s1", commands.encode())
    # Data as raw JSON (not a string) is taken as is; the node may be left out.
    assert decode_emulation(b'{"session":"s","data":{}}') == ("", "s", b"{}")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b'{"session":"s"}',
        b'{"session":"s","data":""}',
        b'{"data":"{}"}',
        b"garbage",
        b'{"session":1,"data":"{}"}',
        b'{"session":"s","data":"\\ud800"}',
    ],
)
def test_malformed_emulation_requests_are_refused(body: bytes) -> None:
    with pytest.raises(ProtocolDecodeError):
        decode_emulation(body)


def test_emulation_node_and_session_are_bounded() -> None:
    with pytest.raises(ProtocolDecodeError):
        decode_emulation(json.dumps({"node": "n" * 65, "session": "s", "data": "{}"}).encode())
    with pytest.raises(ProtocolDecodeError):
        decode_emulation(json.dumps({"session": "s" * 129, "data": "{}"}).encode())
