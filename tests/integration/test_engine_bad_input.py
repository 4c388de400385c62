"""Bad input over a raw WebSocket: each gets the documented error or disconnect code, and the
server stays up for every other client. Also ping/pong as the protocol defines it.

Codes as centrifuge-js and centrifuge-python read them: a close code 3500-3999 means "do not
reconnect" (3500 invalid token, 3501 bad request), 3000-3499 "reconnect" (3012 no pong, 3013
too many requests); command errors are 104 method not found, 107 bad request, 109 token
expired (the client gets a new token and tries again).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import struct
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.clients import (
    app_signed_token,
    engine_api,
    realtime_token,
    subscription_token,
)
from tests.support.rawws import client_frame, read_frame, recv_exactly, upgrade
from tests.support.server import ServerProcess, running_server

Json = dict[str, Any]


async def closed_with(ws: ClientConnection, timeout: float = 5) -> int:
    """Read until the server closes; return the close code."""
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code


async def reply(ws: ClientConnection, timeout: float = 5) -> Json:
    result: Json = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return result


async def replies(ws: ClientConnection, count: int, timeout: float = 5) -> list[Json]:
    """`count` messages, however the server batched them into frames (one per line)."""
    found: list[Json] = []
    while len(found) < count:
        frame = await asyncio.wait_for(ws.recv(), timeout)
        found += [json.loads(line) for line in str(frame).split("\n") if line]
    return found


async def connect(ws: ClientConnection, token: str) -> Json:
    await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
    return await reply(ws)


async def assert_still_serving(server: ServerProcess, app: Json) -> None:
    """Another client connects, subscribes and receives: the bad input hurt nobody else."""
    async with websockets.connect(server.ws_url) as ws:
        assert "connect" in await connect(ws, realtime_token(server, app, "bystander"))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "public:ok"}}))
        assert "subscribe" in await reply(ws)
        engine_api(server, app, "publish", {"channel": "public:ok", "data": "ok"})
        assert (await reply(ws))["push"]["pub"]["data"] == "ok"


# --- frames that are not valid commands -------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        "{this is not json",
        "[1, 2]",
        "null",
        '"a string"',
        '{"id": "one", "connect": {}}',
        '{"id": -1, "connect": {}}',
        '{"id": 1, "connect": {"token": 42}}',
    ],
)
async def test_malformed_frame_closes_with_bad_request(server: ServerProcess, frame: str) -> None:
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(frame)
        assert await closed_with(ws) == 3501


async def test_binary_garbage_closes_with_bad_request(server: ServerProcess) -> None:
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(b"\xff\xfe\x00garbage")
        assert await closed_with(ws) == 3501


async def test_malformed_frame_after_connect(server: ServerProcess) -> None:
    app = server.create_app(name="malformed-late")
    async with websockets.connect(server.ws_url) as ws:
        await connect(ws, realtime_token(server, app, "u"))
        await ws.send('{"id": 2, "subscribe": ')
        assert await closed_with(ws) == 3501
    await assert_still_serving(server, app)


async def test_command_before_connect(server: ServerProcess) -> None:
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps({"id": 1, "subscribe": {"channel": "public:x"}}))
        assert await closed_with(ws) == 3501


async def test_second_connect_is_a_bad_request(server: ServerProcess) -> None:
    app = server.create_app(name="twice")
    token = realtime_token(server, app, "u")
    async with websockets.connect(server.ws_url) as ws:
        assert "connect" in await connect(ws, token)
        await ws.send(json.dumps({"id": 2, "connect": {"token": token}}))
        assert await closed_with(ws) == 3501


async def test_unknown_methods(server: ServerProcess) -> None:
    app = server.create_app(name="unknown")
    async with websockets.connect(server.ws_url) as ws:
        assert "connect" in await connect(ws, realtime_token(server, app, "u"))
        await ws.send(json.dumps({"id": 2, "rpc": {"method": "nothing"}}))
        answer = await reply(ws)
        assert answer["id"] == 2 and answer["error"]["code"] == 104
        await ws.send(json.dumps({"id": 3, "no_such_method": {"x": 1}}))
        answer = await reply(ws)
        assert answer["id"] == 3 and answer["error"]["code"] == 104
        await ws.send(json.dumps({"id": 4, "ping": {}}))  # still connected, still answering
        assert await reply(ws) == {"id": 4, "ping": {}}


@pytest.mark.parametrize(
    "name", ["has space", "", "x" * 300, "tab\tname", "ünïcode", 'quote"d', "back\\slash"]
)
async def test_channel_names_outside_the_grammar(server: ServerProcess, name: str) -> None:
    app = server.create_app(name="names")
    async with websockets.connect(server.ws_url) as ws:
        assert "connect" in await connect(ws, realtime_token(server, app, "u"))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": name}}))
        answer = await reply(ws)
        assert answer["id"] == 2 and answer["error"]["code"] == 107, name
        await ws.send(json.dumps({"id": 3, "publish": {"channel": name, "data": 1}}))
        answer = await reply(ws)
        assert answer["id"] == 3 and answer["error"]["code"] == 107, name


async def test_subscribing_twice_is_refused(server: ServerProcess) -> None:
    app = server.create_app(name="twice-sub")
    async with websockets.connect(server.ws_url) as ws:
        await connect(ws, realtime_token(server, app, "u"))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "public:x"}}))
        assert "subscribe" in await reply(ws)
        await ws.send(json.dumps({"id": 3, "subscribe": {"channel": "public:x"}}))
        answer = await reply(ws)
        assert answer["id"] == 3 and answer["error"]["code"] == 105


async def test_wrong_types_in_a_command(server: ServerProcess) -> None:
    app = server.create_app(name="types")
    async with websockets.connect(server.ws_url) as ws:
        await connect(ws, realtime_token(server, app, "u"))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": 42}}))
        assert await closed_with(ws) == 3501


# --- size limits --------------------------------------------------------------------------------


def too_big(code: int) -> bool:
    """1009 (message too big, at the WebSocket layer) or a no-reconnect Centrifuge code."""
    return code == 1009 or 3500 <= code < 4000


async def test_oversized_message_is_refused(server: ServerProcess) -> None:
    app = server.create_app(name="big")
    async with websockets.connect(server.ws_url, max_size=None) as ws:
        await connect(ws, realtime_token(server, app, "u"))
        await ws.send(
            json.dumps({"id": 2, "publish": {"channel": "public:x", "data": "x" * 70_000}})
        )
        assert too_big(await closed_with(ws))
    await assert_still_serving(server, app)


async def test_oversized_fragmented_message_is_refused(server: ServerProcess) -> None:
    """The limit holds for a message sent in many small fragments, too."""
    app = server.create_app(name="big-fragments")
    async with websockets.connect(server.ws_url, max_size=None) as ws:
        await connect(ws, realtime_token(server, app, "u"))
        body = json.dumps({"id": 2, "publish": {"channel": "public:x", "data": "y" * 100_000}})
        with contextlib.suppress(ConnectionClosed):
            await ws.send([body[i : i + 4096] for i in range(0, len(body), 4096)])
        assert too_big(await closed_with(ws))


async def test_message_just_under_the_limit_is_accepted(server: ServerProcess) -> None:
    app = server.create_app(name="almost-big")
    async with websockets.connect(server.ws_url, max_size=None) as ws:
        await connect(ws, realtime_token(server, app, "u"))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "public:x"}}))
        assert "subscribe" in await reply(ws)
        engine_api(server, app, "publish", {"channel": "public:x", "data": "z" * 60_000})
        assert len((await reply(ws))["push"]["pub"]["data"]) == 60_000


def _oversized_then_close_handshake(server: ServerProcess, token: str) -> tuple[int, bytes]:
    """Blocking socket on purpose: the kernel hands over every byte that arrived before a
    reset, so what the server sent is observed exactly. Returns (close code, rest of stream)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        upgrade(sock)
        sock.sendall(client_frame(json.dumps({"id": 1, "connect": {"token": token}}).encode()))
        assert b'"connect"' in read_frame(sock)[1]

        big = json.dumps({"id": 2, "publish": {"channel": "public:x", "data": "y" * 300_000}})
        step, payload = "sending the oversized message", b""
        try:
            sock.sendall(client_frame(big.encode()))
            step = "reading the server's Close frame"
            close = recv_exactly(sock, 2)
            assert close[0] == 0x88, close  # a Close frame
            payload = recv_exactly(sock, close[1] & 0x7F)
            step = "sending the client's Close frame"
            sock.sendall(client_frame(payload[:2], opcode=0x8))  # as the RFC asks
            step = "waiting for the end of the stream"
            rest = b""
            while chunk := sock.recv(65536):
                rest += chunk
        except ConnectionError as exc:
            raise AssertionError(
                f"the server reset the TCP connection ({type(exc).__name__} while {step}; "
                f"its Close frame: {payload!r}) instead of discarding the client's remaining "
                "bytes and completing the closing handshake"
            ) from None
        return struct.unpack("!H", payload[:2])[0], rest


async def test_refusal_is_a_clean_closing_handshake(server: ServerProcess) -> None:
    """RFC 6455 7.1.1: after its Close frame the server discards what the client still sends
    and closes TCP cleanly once the client has answered with its own Close. Closing at once,
    with the client's bytes unread, resets the connection (RST), and a client that is still
    writing at that moment (websockets, under centrifuge-python; asyncio streams) never reads
    the close code: it sees 1006 instead of 1009/3013/3501."""
    app = server.create_app(name="clean-close")
    token = realtime_token(server, app, "u")
    code, rest = await asyncio.to_thread(_oversized_then_close_handshake, server, token)
    assert too_big(code)
    assert rest == b""  # a clean end of stream (FIN), nothing after the Close frame


# --- tokens -------------------------------------------------------------------------------------


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def bad_token(kind: str, server: ServerProcess, app: Json) -> str:
    now = int(time.time())
    if kind == "garbage":
        return "not.a.jwt"
    if kind == "forged":  # right claims, signed with a secret nobody has
        return app_signed_token({**app, "app_secret": "x" * 40}, "u")
    if kind == "expired":
        return app_signed_token(app, "u", expires_in=-100)
    if kind == "channels_not_a_list":
        return app_signed_token(app, "u", channels="not-a-list")
    if kind == "sub_not_a_string":
        return app_signed_token(app, "u", sub=12345)
    if kind == "exp_not_a_number":
        payload = {"sub": "u", "app_id": app["app_id"], "exp": "tomorrow"}
        return jwt.encode(payload, str(app["app_secret"]), algorithm="HS256")
    if kind == "no_app_id":
        return jwt.encode({"sub": "u", "exp": now + 60}, str(app["app_secret"]), algorithm="HS256")
    if kind == "unknown_app":
        return app_signed_token(app, "u", app_id="no-such-app")
    if kind == "alg_none":
        return (
            f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'sub': 'u', 'app_id': app['app_id']})}."
        )
    if kind == "subscription_token":  # a subscription token cannot open a connection
        return subscription_token(server, app, "u", "room")
    if kind == "empty":
        return ""
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("garbage", "close:3500"),
        ("forged", "close:3500"),
        ("expired", "error:109"),
        ("channels_not_a_list", "close:3500"),
        ("sub_not_a_string", "close:3500"),
        ("exp_not_a_number", "close:3500"),
        ("no_app_id", "close:3500"),
        ("unknown_app", "close:3500"),
        ("alg_none", "close:3500"),
        ("subscription_token", "close:3500"),
        ("empty", "close:3500"),
    ],
)
async def test_bad_tokens(server: ServerProcess, kind: str, expected: str) -> None:
    app = server.create_app(name=f"tok-{kind}")
    token = bad_token(kind, server, app)
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        how, code = expected.split(":")
        if how == "close":
            assert await closed_with(ws) == int(code)
        else:
            answer = await reply(ws)
            assert answer["id"] == 1 and answer["error"]["code"] == int(code)
            # 109 is temporary for the client: the connection stays open for a fresh token.
            assert "connect" in await connect(ws, app_signed_token(app, "u"))


async def test_expired_subscription_token(server: ServerProcess) -> None:
    app = server.create_app(name="sub-expired")
    async with websockets.connect(server.ws_url) as ws:
        await connect(ws, realtime_token(server, app, "u"))
        token = app_signed_token(app, "u", expires_in=-100, channel="room")
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "room", "token": token}}))
        assert (await reply(ws))["error"]["code"] == 109
        forged = app_signed_token({**app, "app_secret": "y" * 40}, "u", channel="room")
        await ws.send(json.dumps({"id": 3, "subscribe": {"channel": "room", "token": forged}}))
        assert (await reply(ws))["error"]["code"] == 103


# --- floods -------------------------------------------------------------------------------------


async def test_command_flood_is_cut_off_and_others_are_unaffected(server: ServerProcess) -> None:
    app = server.create_app(name="flood")
    async with websockets.connect(server.ws_url) as flood:
        await connect(flood, realtime_token(server, app, "flooder"))
        batch = "\n".join(json.dumps({"id": i, "ping": {}}) for i in range(2, 250))
        with contextlib.suppress(ConnectionClosed):  # the server may cut it off mid-flood
            for _ in range(10):
                await flood.send(batch)
        assert await closed_with(flood) == 3013
    await assert_still_serving(server, app)


async def test_too_many_commands_in_one_frame(server: ServerProcess) -> None:
    app = server.create_app(name="fat-frame")
    async with websockets.connect(server.ws_url) as ws:
        await connect(ws, realtime_token(server, app, "u"))
        await ws.send("\n".join(json.dumps({"id": i, "ping": {}}) for i in range(2, 2000)))
        code = await closed_with(ws)
        assert code in (3013, 3501), code
    await assert_still_serving(server, app)


async def test_many_connections_opened_and_dropped(server: ServerProcess) -> None:
    """Connections that vanish mid-command leave the node healthy and leave no presence."""
    app = server.create_app(name="churn")
    token = realtime_token(server, app, "churn")
    frame = "\n".join(
        [
            json.dumps({"id": 1, "connect": {"token": token}}),
            json.dumps({"id": 2, "subscribe": {"channel": "public:churn"}}),
        ]
    )
    for i in range(20):
        ws = await websockets.connect(server.ws_url)
        await ws.send(frame)
        if i % 2:
            await replies(ws, 2)  # half of them get as far as being subscribed
        ws.transport.abort()
    await assert_still_serving(server, app)
    deadline = time.monotonic() + 5
    while engine_api(server, app, "presence", {"channel": "public:churn"})["result"]["presence"]:
        assert time.monotonic() < deadline, "presence of dropped connections never cleared"
        await asyncio.sleep(0.05)  # polling the API is how cleanup in the server is observed
    assert engine_api(server, app, "channels", {})["result"]["channels"] == {}


# --- handshake ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/somewhere/else", "/realtime/connection/sockjs", "/api/ws", "/realtime/api"]
)
async def test_non_engine_websocket_paths_are_refused(server: ServerProcess, path: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}{path}"):
            pass
    assert info.value.response.status_code == 404


async def test_both_engine_paths_upgrade(server: ServerProcess) -> None:
    app = server.create_app(name="paths")
    for path in ("/realtime/connection/websocket", "/connection/websocket"):
        async with websockets.connect(f"ws://127.0.0.1:{server.port}{path}") as ws:
            assert "connect" in await connect(ws, realtime_token(server, app, "u")), path


# --- ordering and ping/pong ---------------------------------------------------------------------


async def test_batched_commands_get_replies_in_order(server: ServerProcess) -> None:
    app = server.create_app(name="batch")
    async with websockets.connect(server.ws_url) as ws:
        await connect(ws, realtime_token(server, app, "u"))
        await ws.send(
            json.dumps({"id": 2, "subscribe": {"channel": "public:a"}})
            + "\n"
            + json.dumps({"id": 3, "subscribe": {"channel": "public:b"}})
            + "\n"
            + json.dumps({"id": 4, "subscribe": {"channel": "bad name"}})
            + "\n"
            + json.dumps({"id": 5, "presence_stats": {"channel": "public:a"}})
        )
        answers = await replies(ws, 4)
        assert [r["id"] for r in answers] == [2, 3, 4, 5]
        assert answers[2]["error"]["code"] == 107
        assert answers[3]["presence_stats"] == {"num_clients": 1, "num_users": 1}


async def test_ping_pong(tmp_path: Path) -> None:
    """The server pings with `{}`; a client that answers stays, one that does not is dropped."""
    with running_server(tmp_path, env={"XSHATHRA_PING_INTERVAL": "1"}) as srv:
        app = srv.create_app(name="ping")
        async with websockets.connect(srv.ws_url) as good, websockets.connect(srv.ws_url) as bad:
            assert (await connect(good, realtime_token(srv, app, "good")))["connect"]["ping"] == 1
            connected_bad = await connect(bad, realtime_token(srv, app, "bad"))
            assert connected_bad["connect"]["pong"] is True
            for _ in range(3):
                assert await asyncio.wait_for(good.recv(), 3) == "{}"
                await good.send("{}")
            assert await closed_with(bad) == 3012
            await good.send(json.dumps({"id": 9, "ping": {}}))
            while (answer := json.loads(await asyncio.wait_for(good.recv(), 3))) == {}:
                await good.send("{}")
            assert answer == {"id": 9, "ping": {}}
