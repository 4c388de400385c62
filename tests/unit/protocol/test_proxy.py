"""Backend proxy bodies (SPEC §9): requests encode as Centrifugo's proxy names them, replies
decode leniently, and `b64data`/`b64info` are honoured."""

from __future__ import annotations

import json

import msgspec
import pytest

from xshathra.protocol import proxy as p
from xshathra.protocol.messages import EMPTY


def test_connect_request_is_centrifugos_shape_with_app_id() -> None:
    """Empty fields are left out; data stays the client's raw JSON."""
    body = json.loads(
        p.encode_request(
            p.ConnectRequest(
                app_id="a1",
                client="c1",
                transport="websocket",
                protocol="json",
                encoding="json",
                data=msgspec.Raw(b'{"x":1}'),
            )
        )
    )
    assert body == {
        "app_id": "a1",
        "client": "c1",
        "transport": "websocket",
        "protocol": "json",
        "encoding": "json",
        "data": {"x": 1},
    }


def test_replies_decode_result_error_and_disconnect() -> None:
    reply = p.decode_reply(
        p.ConnectRequest,
        b'{"result":{"user":"u","expire_at":5,"info":{"a":1},"channels":["c"],'
        b'"subs":{"s":{"override":{"presence":{"value":true}}}},"extra":1}}',
    )
    assert isinstance(reply, p.ConnectReply) and reply.result is not None
    assert reply.result.user == "u" and bytes(reply.result.info) == b'{"a":1}'
    assert reply.result.subs is not None
    override = reply.result.subs["s"].override
    assert override is not None and override.presence is not None and override.presence.value
    refused = p.decode_reply(p.PublishRequest, b'{"error":{"code":1001,"message":"no"}}')
    assert refused.error == p.Error(code=1001, message="no")
    gone = p.decode_reply(p.RPCRequest, b'{"disconnect":{"code":4500,"reason":"bye"}}')
    assert gone.disconnect == p.Disconnect(code=4500, reason="bye")


@pytest.mark.parametrize("body", [b"", b"[]", b"{", b'{"result":[]}', b'{"error":{}}'])
def test_anything_else_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(p.ProxyDecodeError):
        p.decode_reply(p.SubscribeRequest, body)


def test_payload_prefers_raw_json_then_base64() -> None:
    assert p.payload(msgspec.Raw(b'{"a":1}'), "eA==") == b'{"a":1}'
    assert p.payload(EMPTY, "eyJiIjoyfQ==") == b'{"b":2}'
    assert p.payload(EMPTY, "") is None
    with pytest.raises(p.ProxyDecodeError):
        p.payload(EMPTY, "not base64!")
    with pytest.raises(p.ProxyDecodeError):  # base64 of bytes that are not JSON
        p.payload(EMPTY, "AAEC")


def test_a_binary_clients_payload_is_base64_both_ways() -> None:
    """A protobuf client's bytes go as `b64data` (they need not be JSON) and a reply's
    `b64data` comes back as any bytes; a JSON client's stay raw JSON, and must be JSON."""
    raw = msgspec.Raw(b"\x00\xff")
    assert p.client_data(raw, binary=True) == {"b64data": "AP8="}
    json_data = msgspec.Raw(b'{"a":1}')
    assert p.client_data(json_data, binary=False) == {"data": json_data}
    assert p.client_data(EMPTY, binary=True) == {}
    request = p.PublishRequest(
        app_id="a",
        client="c",
        transport="websocket",
        protocol="protobuf",
        encoding=p.encoding(True),
        user="u",
        channel="ch",
        **p.client_data(raw, binary=True),
    )
    body = msgspec.json.decode(p.encode_request(request))
    assert body["encoding"] == "binary" and body["b64data"] == "AP8=" and "data" not in body
    assert p.payload(EMPTY, "AAEC", binary=True) == b"\x00\x01\x02"
    with pytest.raises(p.ProxyDecodeError):
        p.payload(EMPTY, "not base64!", binary=True)
