"""The protobuf protocol over WebSocket, driven by the unmodified centrifuge-python client with
`use_protobuf=True` (subprotocol `centrifuge-protobuf`, binary length-delimited frames):
connect, subscribe, publications, join/leave, presence, presence stats, history, recovery after
reconnect, client publish, rpc errors, token refresh; a JSON and a protobuf subscriber of one
channel getting the same publications; and bad binary input refused with the documented codes,
the node serving on. Raw frames are built with centrifuge-python's own generated protobuf
module, not ours, so the codec is checked against another implementation of the format.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import websockets
from centrifuge import Client, ClientState, SubscriptionState
from centrifuge.exceptions import CentrifugeError
from centrifuge.protocol import client_pb2 as theirs
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.support.clients import (
    Recorder,
    SubEvents,
    TcpProxy,
    app_signed_token,
    engine_api,
    make_client,
    realtime_token,
    subscription_token,
)
from tests.support.server import ServerProcess, running_server

Json = dict[str, Any]
EXPIRED_CLOSE_DELAY = 2
PING_INTERVAL = 1
PROTOBUF = ["centrifuge-protobuf"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # Pings every second: every test here also proves the protobuf ping and pong.
    env = {
        "XSHATHRA_EXPIRED_CLOSE_DELAY": str(EXPIRED_CLOSE_DELAY),
        "XSHATHRA_PING_INTERVAL": str(PING_INTERVAL),
    }
    with running_server(tmp_path_factory.mktemp("node"), env=env) as proc:
        yield proc


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        await client.disconnect()


async def connected(
    server: ServerProcess, clients: list[Client], rec: Recorder, *, protobuf: bool = True, **kw: Any
) -> Client:
    client = make_client(server, rec, use_protobuf=protobuf, **kw)
    clients.append(client)
    await client.connect()
    await client.ready(5)
    return client


def set_namespaces(server: ServerProcess, app: Json, namespaces: Json) -> None:
    r = httpx.put(
        f"{server.base_url}/api/applications/{app['app_id']}",
        headers={"X-API-Key": str(app["api_key"])},
        json={"namespaces": namespaces},
    )
    assert r.status_code == 200, r.text


# --- the real client -------------------------------------------------------------------------


async def test_connect_subscribe_and_publication_with_tags(
    server: ServerProcess, clients: list[Client]
) -> None:
    """Server API publish: a protobuf subscriber gets the JSON bytes as `data`, tags, offset."""
    app = server.create_app(name="pb-tags")
    rec = Recorder()
    client = await connected(server, clients, rec, token=realtime_token(server, app, "u1"))
    assert client.state == ClientState.CONNECTED and client.client_id
    sub = client.new_subscription("public:news", SubEvents(rec))
    await sub.subscribe()
    assert (await rec.next("subscribed")).recoverable
    result = engine_api(
        server,
        app,
        "publish",
        {"channel": "public:news", "data": {"title": "t", "n": [1, 2]}, "tags": {"kind": "x"}},
    )
    ctx = await rec.next("publication")
    assert isinstance(ctx.pub.data, bytes)
    assert json.loads(ctx.pub.data) == {"title": "t", "n": [1, 2]}
    assert ctx.pub.tags == {"kind": "x"}
    assert ctx.pub.offset == result["result"]["offset"] == 1


async def test_json_and_protobuf_subscribers_get_the_same_publications(
    server: ServerProcess, clients: list[Client]
) -> None:
    """One channel, one JSON and one protobuf subscriber: every publication (server API and a
    protobuf client's own publish) reaches both, same data, same offsets."""
    app = server.create_app(name="pb-mixed")
    set_namespaces(
        server,
        app,
        {
            "chat": {
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
                "history_size": 10,
                "history_ttl": 300,
            }
        },
    )
    rec_json, rec_pb = Recorder(), Recorder()
    c_json = await connected(
        server, clients, rec_json, protobuf=False, token=realtime_token(server, app, "j")
    )
    c_pb = await connected(server, clients, rec_pb, token=realtime_token(server, app, "p"))
    s_json = c_json.new_subscription("chat:room", SubEvents(rec_json))
    s_pb = c_pb.new_subscription("chat:room", SubEvents(rec_pb))
    for s in (s_json, s_pb):
        await s.subscribe()
        await s.ready(5)

    engine_api(server, app, "publish", {"channel": "chat:room", "data": {"from": "api"}})
    await s_pb.publish(json.dumps({"from": "protobuf"}).encode())
    await s_json.publish({"from": "json"})

    got_json = [(await rec_json.next("publication")).pub for _ in range(3)]
    got_pb = [(await rec_pb.next("publication")).pub for _ in range(3)]
    assert [(p.data, p.offset) for p in got_json] == [
        ({"from": "api"}, 1),
        ({"from": "protobuf"}, 2),
        ({"from": "json"}, 3),
    ]
    assert [(json.loads(p.data), p.offset) for p in got_pb] == [
        (p.data, p.offset) for p in got_json
    ]
    assert got_json[1].info.user == got_pb[1].info.user == "p"
    assert got_json[2].info.user == got_pb[2].info.user == "j"


async def test_binary_payloads_pass_through_between_protobuf_clients(
    server: ServerProcess, clients: list[Client]
) -> None:
    """Bytes a protobuf client publishes reach protobuf subscribers and history unchanged,
    as in Centrifugo (JSON subscribers of such a channel would get them verbatim too, so a
    channel shared with JSON clients must be published JSON: see the README)."""
    app = server.create_app(name="pb-binary")
    set_namespaces(
        server,
        app,
        {
            "bin": {
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
                "allow_history_for_subscriber": True,
                "history_size": 10,
                "history_ttl": 300,
            }
        },
    )
    rec_a, rec_b = Recorder(), Recorder()
    a = await connected(server, clients, rec_a, token=realtime_token(server, app, "a"))
    b = await connected(server, clients, rec_b, token=realtime_token(server, app, "b"))
    sub_a = a.new_subscription("bin:x", SubEvents(rec_a))
    sub_b = b.new_subscription("bin:x", SubEvents(rec_b))
    for sub in (sub_a, sub_b):
        await sub.subscribe()
        await sub.ready(5)
    payload = bytes(range(256))
    await sub_a.publish(payload)
    assert (await rec_b.next("publication")).pub.data == payload
    history = await sub_b.history(limit=1)
    assert [p.data for p in history.publications] == [payload]


async def test_join_leave_presence_stats_and_history(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="pb-jl")
    rec_a, rec_b = Recorder(), Recorder()
    a = await connected(server, clients, rec_a, token=realtime_token(server, app, "alice"))
    sub_a = a.new_subscription("public:room", SubEvents(rec_a))
    await sub_a.subscribe()
    await sub_a.ready(5)
    b = await connected(server, clients, rec_b, token=realtime_token(server, app, "bob"))
    sub_b = b.new_subscription("public:room", SubEvents(rec_b))
    await sub_b.subscribe()
    await sub_b.ready(5)
    joined = await rec_a.next("join")
    assert joined.info.user == "bob" and joined.info.client == b.client_id

    presence = await sub_a.presence()
    assert {c.user for c in presence.clients.values()} == {"alice", "bob"}
    assert set(presence.clients) == {a.client_id, b.client_id}
    stats = await sub_a.presence_stats()
    assert (stats.num_clients, stats.num_users) == (2, 2)

    for i in range(3):
        engine_api(server, app, "publish", {"channel": "public:room", "data": {"i": i}})
    history = await sub_a.history(limit=2)
    assert [json.loads(p.data) for p in history.publications] == [{"i": 0}, {"i": 1}]
    assert [p.offset for p in history.publications] == [1, 2]
    latest = await sub_a.history(limit=1, reverse=True)
    assert json.loads(latest.publications[0].data) == {"i": 2} and latest.offset == 3

    await sub_b.unsubscribe()
    left = await rec_a.next("leave")
    assert left.info.user == "bob"
    stats = await sub_a.presence_stats()
    assert (stats.num_clients, stats.num_users) == (1, 1)


async def test_recovery_after_reconnect(server: ServerProcess, clients: list[Client]) -> None:
    """disconnect() then connect(): the missed publications come back in order, recovered."""
    app = server.create_app(name="pb-recover")
    rec = Recorder()
    client = await connected(server, clients, rec, token=realtime_token(server, app, "u1"))
    sub = client.new_subscription("public:stream", SubEvents(rec))
    await sub.subscribe()
    assert (await rec.next("subscribed")).recoverable
    engine_api(server, app, "publish", {"channel": "public:stream", "data": 0})
    assert (await rec.next("publication")).pub.data == b"0"

    await client.disconnect()
    for i in range(1, 4):
        engine_api(server, app, "publish", {"channel": "public:stream", "data": i})
    await client.connect()
    again = await rec.next("subscribed")
    assert again.was_recovering and again.recovered
    got = [(await rec.next("publication")).pub for _ in range(3)]
    assert [(p.data, p.offset) for p in got] == [(b"1", 2), (b"2", 3), (b"3", 4)]


async def test_recovery_after_network_loss(server: ServerProcess, clients: list[Client]) -> None:
    """The link dies under the client (no close frame); it reconnects by itself and recovers
    the publications it missed, then gets live ones."""
    app = server.create_app(name="pb-recover-net")
    rec = Recorder()
    async with TcpProxy(server.port) as proxy:
        client = await connected(
            server, clients, rec, url=proxy.ws_url, token=realtime_token(server, app, "u1")
        )
        sub = client.new_subscription("public:stream", SubEvents(rec))
        await sub.subscribe()
        await rec.next("subscribed")
        engine_api(server, app, "publish", {"channel": "public:stream", "data": 0})
        assert (await rec.next("publication")).pub.data == b"0"

        proxy.hold()  # the client's reconnect waits at the proxy until the gap exists
        proxy.drop()
        await rec.next("connecting", lambda c: c.code != 0)
        for i in range(1, 4):
            engine_api(server, app, "publish", {"channel": "public:stream", "data": i})
        proxy.release()

        again = await rec.next("subscribed", timeout=10)
        assert again.was_recovering and again.recovered
        assert [(await rec.next("publication")).pub.data for _ in range(3)] == [b"1", b"2", b"3"]
        engine_api(server, app, "publish", {"channel": "public:stream", "data": 4})
        live = (await rec.next("publication")).pub
        assert (live.data, live.offset) == (b"4", 5)


async def test_rpc_without_a_handler_is_an_error_reply(
    server: ServerProcess, clients: list[Client]
) -> None:
    """An RPC gets error 104 (method not found) and the connection stays up."""
    app = server.create_app(name="pb-rpc")
    rec = Recorder()
    client = await connected(server, clients, rec, token=realtime_token(server, app, "u1"))
    with pytest.raises(CentrifugeError) as failed:
        await client.rpc("anything", b'{"x":1}')
    assert getattr(failed.value, "code", None) == 104
    assert client.state == ClientState.CONNECTED


async def test_client_publish_refused_where_not_allowed(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="pb-denied")
    rec = Recorder()
    client = await connected(server, clients, rec, token=realtime_token(server, app, "u1"))
    sub = client.new_subscription("public:x", SubEvents(rec))
    await sub.subscribe()
    await sub.ready(5)
    with pytest.raises(CentrifugeError) as denied:
        await sub.publish(b'{"no":1}')
    assert getattr(denied.value, "code", None) == 103


async def test_connection_and_subscription_token_refresh(
    server: ServerProcess, clients: list[Client]
) -> None:
    """3-second tokens refreshed through get_token (refresh and sub_refresh over protobuf):
    connection and subscription outlive the first deadline (exp + close delay)."""
    app = server.create_app(name="pb-refresh")
    conn_calls: list[int] = []
    sub_calls: list[str] = []
    both_refreshed = asyncio.Event()

    def check() -> None:
        if len(conn_calls) >= 3 and len(sub_calls) >= 3:
            both_refreshed.set()

    async def get_token() -> str:
        conn_calls.append(1)
        check()
        return app_signed_token(app, "u1", expires_in=3)

    async def get_sub_token(channel: str) -> str:
        sub_calls.append(channel)
        check()
        return app_signed_token(app, "u1", expires_in=3, channel=channel)

    rec = Recorder()
    client = await connected(server, clients, rec, get_token=get_token)
    sub = client.new_subscription("private-feed", SubEvents(rec), get_token=get_sub_token)
    await sub.subscribe()
    await sub.ready(5)
    await asyncio.wait_for(both_refreshed.wait(), 20)
    assert client.state == ClientState.CONNECTED and sub.state == SubscriptionState.SUBSCRIBED
    assert [k for k, c in rec.kinds("connecting", "disconnected") if c.code != 0] == []
    engine_api(server, app, "publish", {"channel": "private-feed", "data": "fresh"})
    assert (await rec.next("publication")).pub.data == b'"fresh"'


async def test_server_side_subscription_from_the_token(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="pb-srvsub")
    rec = Recorder()
    await connected(
        server, clients, rec, token=realtime_token(server, app, "u1", channels=["feed"])
    )
    assert (await rec.next("server_subscribed")).channel == "feed"
    engine_api(server, app, "publish", {"channel": "feed", "data": {"s": 1}})
    ctx = await rec.next("server_publication")
    assert ctx.channel == "feed" and json.loads(ctx.pub.data) == {"s": 1}


async def test_private_channel_needs_a_subscription_token(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="pb-priv")
    rec = Recorder()
    client = await connected(server, clients, rec, token=realtime_token(server, app, "u1"))
    denied = client.new_subscription("room-42", SubEvents(rec))
    await denied.subscribe()
    assert (await rec.next("unsubscribed")).code == 103
    client.remove_subscription(denied)

    async def get_token(channel: str) -> str:
        return subscription_token(server, app, "u1", channel)

    allowed = client.new_subscription("room-42", SubEvents(rec), get_token=get_token)
    await allowed.subscribe()
    await allowed.ready(5)
    engine_api(server, app, "publish", {"channel": "room-42", "data": {"n": 1}})
    assert json.loads((await rec.next("publication")).pub.data) == {"n": 1}


async def test_server_api_subscribe_unsubscribe_and_disconnect_pushes(
    server: ServerProcess, clients: list[Client]
) -> None:
    """Subscribe, unsubscribe and disconnect pushes in protobuf: the server-side
    subscription comes and goes, then a terminal disconnect code and reason arrive."""
    app = server.create_app(name="pb-srvapi")
    rec = Recorder()
    client = await connected(server, clients, rec, token=realtime_token(server, app, "u1"))
    engine_api(server, app, "subscribe", {"user": "u1", "channel": "alerts"})
    assert (await rec.next("server_subscribed")).channel == "alerts"
    engine_api(server, app, "publish", {"channel": "alerts", "data": "fire"})
    assert (await rec.next("server_publication")).pub.data == b'"fire"'
    engine_api(server, app, "unsubscribe", {"user": "u1", "channel": "alerts"})
    assert (await rec.next("server_unsubscribed")).channel == "alerts"
    engine_api(
        server, app, "disconnect", {"user": "u1", "disconnect": {"code": 3503, "reason": "bye"}}
    )
    ctx = await rec.next("disconnected")
    assert (ctx.code, ctx.reason) == (3503, "bye")
    assert client.state == ClientState.DISCONNECTED


async def test_ping_pong_keeps_an_idle_connection(
    server: ServerProcess, clients: list[Client]
) -> None:
    """The node pings (an empty reply) every second and drops a client that misses a pong; the
    client reconnects if it hears no ping within interval + 0.5 s. Idle for several intervals,
    the connection stays up both ways."""
    app = server.create_app(name="pb-ping")
    rec = Recorder()
    client = await connected(
        server, clients, rec, token=realtime_token(server, app, "u1"), max_server_ping_delay=0.5
    )
    with pytest.raises(TimeoutError):
        await rec.next("connecting", lambda c: c.code != 0, timeout=PING_INTERVAL * 3.5)
    assert [k for k, c in rec.kinds("connecting", "disconnected") if c.code != 0] == []
    assert client.state == ClientState.CONNECTED


# --- raw frames ---------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def frame(*commands: theirs.Command) -> bytes:
    return b"".join(_varint(len(b)) + b for b in (c.SerializeToString() for c in commands))


def parse(data: bytes) -> list[theirs.Reply]:
    found, pos = [], 0
    while pos < len(data):
        n, shift = 0, 0
        while True:
            byte = data[pos]
            pos += 1
            n |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        reply = theirs.Reply()
        reply.ParseFromString(data[pos : pos + n])
        found.append(reply)
        pos += n
    return found


async def next_replies(ws: ClientConnection, timeout: float = 5) -> list[theirs.Reply]:
    """The replies of the next frame that holds any besides pings; pings are answered."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.recv()
            assert isinstance(message, bytes), "protobuf replies come in binary frames"
            replies = parse(message)
            real = [r for r in replies if r.ListFields()]
            if len(real) < len(replies):  # an empty reply: the server's ping
                await ws.send(b"\x00")
            if real:
                return real


async def closed_with(ws: ClientConnection, timeout: float = 5) -> int:
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code


def connect_command(token: str) -> theirs.Command:
    command = theirs.Command(id=1)
    command.connect.token = token
    return command


async def still_serving(server: ServerProcess, app: Json) -> None:
    """A protobuf bystander connects, subscribes and receives."""
    async with websockets.connect(server.ws_url, subprotocols=PROTOBUF) as ws:  # type: ignore[arg-type]
        await ws.send(frame(connect_command(realtime_token(server, app, "bystander"))))
        assert (await next_replies(ws))[0].HasField("connect")
        sub = theirs.Command(id=2)
        sub.subscribe.channel = "public:ok"
        await ws.send(frame(sub))
        assert (await next_replies(ws))[0].HasField("subscribe")
        engine_api(server, app, "publish", {"channel": "public:ok", "data": "ok"})
        (push,) = await next_replies(ws)
        assert push.push.pub.data == b'"ok"'


async def test_subprotocol_is_answered_and_batches_are_concatenated(
    server: ServerProcess,
) -> None:
    """The handshake answers `centrifuge-protobuf`; several commands in one frame get their
    replies in order, in binary frames."""
    app = server.create_app(name="pb-raw")
    async with websockets.connect(server.ws_url, subprotocols=PROTOBUF) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "centrifuge-protobuf"
        sub = theirs.Command(id=2)
        sub.subscribe.channel = "public:a"
        stats = theirs.Command(id=3)
        stats.presence_stats.channel = "public:a"
        await ws.send(frame(connect_command(realtime_token(server, app, "u")), sub, stats))
        got: list[theirs.Reply] = []
        while len(got) < 3:
            got += await next_replies(ws)
        assert [r.id for r in got] == [1, 2, 3]
        assert got[0].connect.client and got[0].connect.pong
        assert got[0].connect.ping == PING_INTERVAL
        assert got[1].HasField("subscribe")
        assert (got[2].presence_stats.num_clients, got[2].presence_stats.num_users) == (1, 1)


async def test_server_ping_is_an_empty_reply_and_an_empty_command_answers_it(
    server: ServerProcess,
) -> None:
    app = server.create_app(name="pb-raw-ping")
    async with websockets.connect(server.ws_url, subprotocols=PROTOBUF) as ws:  # type: ignore[arg-type]
        await ws.send(frame(connect_command(realtime_token(server, app, "u"))))
        assert (await next_replies(ws))[0].HasField("connect")
        for _ in range(3):  # three intervals: a missed pong would have closed it by then
            assert await asyncio.wait_for(ws.recv(), PING_INTERVAL * 3) == b"\x00"
            await ws.send(b"\x00")
        await ws.send(frame(theirs.Command(id=5, ping=theirs.PingRequest())))
        (reply,) = await next_replies(ws)
        assert reply.id == 5 and reply.HasField("ping")


@pytest.mark.parametrize("query", ["format=protobuf", "cf_protocol=protobuf"])
async def test_format_query_selects_protobuf(server: ServerProcess, query: str) -> None:
    """`?format=protobuf` (Centrifugo's way, for clients that cannot set a subprotocol) and
    the centrifuge library's `?cf_protocol=protobuf`."""
    app = server.create_app(name="pb-query")
    async with websockets.connect(f"{server.ws_url}?{query}") as ws:
        assert ws.subprotocol is None
        await ws.send(frame(connect_command(realtime_token(server, app, "u"))))
        (reply,) = await next_replies(ws)
        assert reply.id == 1 and reply.connect.client


async def test_json_clients_are_unaffected_by_other_subprotocols(server: ServerProcess) -> None:
    """A client offering only a subprotocol we do not speak is served JSON, as before."""
    app = server.create_app(name="pb-other")
    async with websockets.connect(server.ws_url, subprotocols=["something-else"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol is None
        await ws.send(json.dumps({"id": 1, "connect": {"token": realtime_token(server, app, "u")}}))
        assert "connect" in json.loads(await asyncio.wait_for(ws.recv(), 5))


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("garbage", b"\xff\xfe\x00garbage"),
        ("truncated varint", b"\x80"),
        ("varint too long", b"\xff\xff\xff\xff\xff\xff\x01"),
        ("length past the frame", b"\x10\x08\x01"),
        ("wrong wire type", b"\x02\x0d\x01"),
        ("invalid utf-8 in a string", b"\x07\x22\x05\x0a\x03\xff\xfe\xfd"),
    ],
)
async def test_bad_binary_input_closes_with_bad_request(
    server: ServerProcess, name: str, payload: bytes
) -> None:
    """Before and after connect: 3501, and the node serves others."""
    app = server.create_app(name=f"pb-bad-{name}")
    async with websockets.connect(server.ws_url, subprotocols=PROTOBUF) as ws:  # type: ignore[arg-type]
        await ws.send(payload)
        assert await closed_with(ws) == 3501
    async with websockets.connect(server.ws_url, subprotocols=PROTOBUF) as ws:  # type: ignore[arg-type]
        await ws.send(frame(connect_command(realtime_token(server, app, "u"))))
        assert (await next_replies(ws))[0].HasField("connect")
        await ws.send(payload)
        assert await closed_with(ws) == 3501
    await still_serving(server, app)


async def test_unknown_command_gets_method_not_found(server: ServerProcess) -> None:
    """A command with an id and no request this server knows (a field from a newer protocol):
    error 104, as on the JSON path; the connection stays."""
    app = server.create_app(name="pb-unknown")
    async with websockets.connect(server.ws_url, subprotocols=PROTOBUF) as ws:  # type: ignore[arg-type]
        await ws.send(frame(connect_command(realtime_token(server, app, "u"))))
        assert (await next_replies(ws))[0].HasField("connect")
        unknown = b"\x08\x02" + b"\xa2\x06\x00"  # id 2, then field 100 (length-delimited, empty)
        await ws.send(_varint(len(unknown)) + unknown)
        (reply,) = await next_replies(ws)
        assert reply.id == 2 and reply.error.code == 104
        ping = theirs.Command(id=3)
        ping.ping.SetInParent()
        await ws.send(frame(ping))
        (pong,) = await next_replies(ws)
        assert pong.id == 3 and pong.HasField("ping")


async def test_command_before_connect_closes_with_bad_request(server: ServerProcess) -> None:
    async with websockets.connect(server.ws_url, subprotocols=PROTOBUF) as ws:  # type: ignore[arg-type]
        sub = theirs.Command(id=1)
        sub.subscribe.channel = "public:x"
        await ws.send(frame(sub))
        assert await closed_with(ws) == 3501
