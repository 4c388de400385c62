"""centrifuge-js's protobuf build (npm `centrifuge/build/protobuf`, unmodified) over its
`http_stream` transport with `emulationEndpoint`: the connect request and every emulation
request are binary (`Content-Type: application/octet-stream`), the stream is varint
length-delimited `Reply`s. Connect, subscribe, a server publication, a client publish,
presence, history and a server disconnect, on one node and on two nodes sharing Redis with
every emulation request sent to the node without the stream. Then the bad input the protobuf
forms of these endpoints may get, answered with the documented errors by a node that stays up.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.test_cluster import shared_broker
from tests.integration.test_engine_js_client import lost, start_js
from tests.integration.test_streams_js import chat_app, exercise
from tests.support.clients import engine_api, realtime_token
from tests.support.server import ServerProcess, cluster_nodes
from xshathra.protocol import client_pb2 as pb

PROTOBUF = {"XS_TRANSPORT": "http_stream", "XS_PROTOBUF": "1"}
OCTETS = {"Content-Type": "application/octet-stream"}
PING_INTERVAL = 1


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    """Two nodes on one PostgreSQL database and one Redis (under a unique prefix), pinging every
    second: a client's pongs travel through the emulation endpoint too."""
    broker = shared_broker("redis")
    env = {
        "XSHATHRA_BROKER_PREFIX": f"xs_stpb_{secrets.token_hex(4)}",
        "XSHATHRA_PING_INTERVAL": str(PING_INTERVAL),
    }
    with cluster_nodes(tmp_path_factory, broker, env) as nodes:
        yield nodes


async def test_protobuf_http_stream_one_node(server: ServerProcess) -> None:
    app = chat_app(server, "js-pb-stream")
    await exercise(server, server, app, **PROTOBUF)


async def test_protobuf_emulation_requests_reach_the_stream_through_another_node(
    two_nodes: list[ServerProcess],
) -> None:
    """The stream is held by node A; every protobuf command goes to node B's emulation
    endpoint, which hands it over Redis to A, whose session reads it as protobuf."""
    a, b = two_nodes
    app = chat_app(a, "js-pb-two")
    await exercise(a, b, app, **PROTOBUF, XS_EMULATION=f"{b.base_url}/realtime/emulation")


async def test_protobuf_pongs_through_another_node_keep_the_stream_up(
    two_nodes: list[ServerProcess],
) -> None:
    """Node A pings its protobuf stream every second (an empty length-delimited reply) and
    drops a client that misses a pong (3012); the client's pongs (empty commands, in protobuf
    emulation requests) go to node B, over Redis to A. Idle for several intervals, the
    connection stays up."""
    a, b = two_nodes
    app = chat_app(a, "js-pb-ping")
    emulation = f"{b.base_url}/realtime/emulation"
    async with start_js(a, app, XS_CHANNEL="chat:idle", **PROTOBUF, XS_EMULATION=emulation) as c:
        await c.next("subscribed")
        with pytest.raises(AssertionError, match="no 'connecting'"):
            await c.next("connecting", lost, timeout=PING_INTERVAL * 4.5)
        assert c.seen("disconnected", "client_error") == []
        engine_api(b, app, "publish", {"channel": "chat:idle", "data": "awake"})
        assert (await c.next("publication"))["data"] == "awake"


def test_protobuf_bad_input_gets_the_documented_errors(server: ServerProcess) -> None:
    base = f"{server.base_url}/realtime"
    with httpx.Client(timeout=10) as http:
        # Garbage where a protobuf EmulationRequest should be (a field tag of wire type 7).
        r = http.post(f"{base}/emulation", content=b"\xff\xff\xff\xff\x0f", headers=OCTETS)
        assert (r.status_code, r.json()) == (400, {"error": "malformed emulation request"})
        # A well-formed one without a session, and one with `cf_protocol` instead of the type.
        empty = pb.EmulationRequest(node="n", data=b"\x00").SerializeToString()
        r = http.post(f"{base}/emulation?cf_protocol=protobuf", content=empty)
        assert (r.status_code, r.json()) == (400, {"error": "malformed emulation request"})
        # A stream's connect request whose length prefix is a truncated varint.
        r = http.post(f"{base}/connection/http_stream", content=b"\x80\x80", headers=OCTETS)
        assert r.status_code == 400
        assert r.json() == {"error": "request body is not a valid connect request"}
        # A protobuf command that is not a connect.
        command = pb.Command(id=1, presence=pb.PresenceRequest(channel="x")).SerializeToString()
        body = bytes((len(command),)) + command
        r = http.post(f"{base}/connection/http_stream", content=body, headers=OCTETS)
        assert r.status_code == 400
        # SSE has no protobuf form (an EventSource reads text).
        r = http.get(
            f"{base}/connection/sse", params={"cf_protocol": "protobuf", "cf_connect": "{}"}
        )
        assert (r.status_code, r.json()) == (400, {"error": "protobuf is not supported over sse"})
        # An emulation request for a session nobody holds, on this (running) node: 204.
        unknown = pb.EmulationRequest(
            node=_connect_reply(http, server).connect.node, session="nobody", data=b"\x00"
        ).SerializeToString()
        assert http.post(f"{base}/emulation", content=unknown, headers=OCTETS).status_code == 204
    # The node is still up and serving.
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200


def _connect_reply(http: httpx.Client, server: ServerProcess) -> pb.Reply:
    """A protobuf connect over http_stream, read at the byte level: the stream's first bytes
    are a varint length, then that many bytes of the connect `Reply`."""
    app = server.create_app(name="pb-raw")
    token = realtime_token(server, app, "raw")
    command = pb.Command(id=1, connect=pb.ConnectRequest(token=token)).SerializeToString()
    body = _varint(len(command)) + command
    url = f"{server.base_url}/realtime/connection/http_stream"
    with http.stream("POST", url, content=body, headers=OCTETS) as r:
        assert r.headers["content-type"] == "application/octet-stream"
        data = b""
        for chunk in r.iter_raw():
            data += chunk
            length, pos = _read_varint(data)
            if pos and len(data) >= pos + length:
                reply = pb.Reply()
                reply.ParseFromString(data[pos : pos + length])
                assert reply.id == 1 and reply.connect.session
                return reply
    raise AssertionError("the stream ended before the connect reply")


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes((*out, n))


def _read_varint(data: bytes) -> tuple[int, int]:
    """(value, position after it), or (0, 0) while it is incomplete."""
    value = 0
    for i, byte in enumerate(data[:5]):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    return 0, 0


async def test_json_and_protobuf_streams_of_one_channel_get_the_same_publications(
    server: ServerProcess,
) -> None:
    """A JSON `sse` client and a protobuf `http_stream` client of one channel: one server
    publication and one publication by each reach both, with the same data and offsets."""
    app = chat_app(server, "js-pb-mixed")
    channel = {"XS_CHANNEL": "chat:mixed"}
    async with (
        start_js(server, app, XS_TRANSPORT="sse", **channel) as text,
        start_js(server, app, **PROTOBUF, **channel) as binary,
    ):
        for client in (text, binary):
            await client.next("subscribed")
        engine_api(server, app, "publish", {"channel": "chat:mixed", "data": {"n": 1}})
        await text.send("publish", data={"from": "json"})
        await binary.send("publish", data={"from": "protobuf"})
        offsets = []
        for client in (text, binary):
            # The two client publications may come in either order.
            pubs = [await client.next("publication") for _ in range(3)]
            got = {json.dumps(p["data"], sort_keys=True): p["offset"] for p in pubs}
            assert got.keys() == {'{"n": 1}', '{"from": "json"}', '{"from": "protobuf"}'}
            assert got['{"n": 1}'] == 1 and sorted(got.values()) == [1, 2, 3]
            offsets.append(got)
        assert offsets[0] == offsets[1]  # one history, whatever the format it is read in
