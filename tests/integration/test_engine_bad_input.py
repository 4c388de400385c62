"""Bad input over a raw WebSocket: each gets the documented error or disconnect code, and the
server stays up for every other client. Also ping/pong as the protocol defines it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.support.clients import app_signed_token, engine_api, realtime_token
from tests.support.server import ServerProcess, running_server

Json = dict[str, Any]


async def closed_with(ws: ClientConnection, timeout: float = 5) -> int:
    """Read until the server closes; return the close code."""
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    assert info.value.rcvd is not None
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


async def test_malformed_frame_closes_with_bad_request(server: ServerProcess) -> None:
    async with websockets.connect(server.ws_url) as ws:
        await ws.send("{this is not json")
        assert await closed_with(ws) == 3501


async def test_command_before_connect(server: ServerProcess) -> None:
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps({"id": 1, "subscribe": {"channel": "public:x"}}))
        assert await closed_with(ws) == 3501


async def test_unknown_method_and_bad_channel_names(server: ServerProcess) -> None:
    app = server.create_app(name="bad")
    async with websockets.connect(server.ws_url) as ws:
        assert "connect" in await connect(ws, realtime_token(server, app, "u"))
        await ws.send(json.dumps({"id": 2, "rpc": {"method": "nothing"}}))
        assert (await reply(ws))["error"]["code"] == 104
        for i, name in enumerate(["has space", "", "x" * 300, "tab\tname", "ünïcode"], start=3):
            await ws.send(json.dumps({"id": i, "subscribe": {"channel": name}}))
            answer = await reply(ws)
            assert answer["id"] == i and answer["error"]["code"] == 107, name


async def test_wrong_types_in_a_command(server: ServerProcess) -> None:
    app = server.create_app(name="types")
    async with websockets.connect(server.ws_url) as ws:
        await connect(ws, realtime_token(server, app, "u"))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": 42}}))
        assert await closed_with(ws) == 3501


async def test_oversized_message_is_refused(server: ServerProcess) -> None:
    app = server.create_app(name="big")
    async with websockets.connect(server.ws_url, max_size=None) as ws:
        await connect(ws, realtime_token(server, app, "u"))
        await ws.send(
            json.dumps({"id": 2, "publish": {"channel": "public:x", "data": "x" * 70_000}})
        )
        assert await closed_with(ws) == 1009  # message too big, at the WebSocket layer


@pytest.mark.parametrize(
    ("token_kind", "expected"),
    [
        ("garbage", "close:3500"),
        ("forged", "close:3500"),
        ("expired", "error:109"),
        ("bad_claims", "close:3500"),
        ("none", "close:3500"),
    ],
)
async def test_bad_tokens(server: ServerProcess, token_kind: str, expected: str) -> None:
    app = server.create_app(name=f"tok-{token_kind}")
    token = {
        "garbage": "not.a.jwt",
        "forged": app_signed_token({**app, "app_secret": "x" * 40}, "u"),
        "expired": app_signed_token(app, "u", expires_in=-100),
        "bad_claims": app_signed_token(app, "u", channels="not-a-list"),
        "none": "",
    }[token_kind]
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        if expected.startswith("close:"):
            assert await closed_with(ws) == int(expected.split(":")[1])
        else:
            assert (await reply(ws))["error"]["code"] == int(expected.split(":")[1])


async def test_command_flood_is_cut_off_and_others_are_unaffected(server: ServerProcess) -> None:
    app = server.create_app(name="flood")
    async with websockets.connect(server.ws_url) as flood:
        await connect(flood, realtime_token(server, app, "flooder"))
        batch = "\n".join(json.dumps({"id": i, "ping": {}}) for i in range(2, 250))
        with contextlib.suppress(ConnectionClosed):  # the server may cut it off mid-flood
            for _ in range(10):
                await flood.send(batch)
        assert await closed_with(flood) == 3013
    async with websockets.connect(server.ws_url) as ws:
        await connect(ws, realtime_token(server, app, "other"))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "public:ok"}}))
        assert "subscribe" in await reply(ws)
        engine_api(server, app, "publish", {"channel": "public:ok", "data": 1})
        assert (await reply(ws))["push"]["pub"]["data"] == 1


async def test_batched_commands_get_replies_in_order(server: ServerProcess) -> None:
    app = server.create_app(name="batch")
    async with websockets.connect(server.ws_url) as ws:
        await connect(ws, realtime_token(server, app, "u"))
        await ws.send(
            json.dumps({"id": 2, "subscribe": {"channel": "public:a"}})
            + "\n"
            + json.dumps({"id": 3, "subscribe": {"channel": "public:b"}})
        )
        assert [r["id"] for r in await replies(ws, 2)] == [2, 3]


async def test_ping_pong(tmp_path: Path) -> None:
    """The server pings with `{}`; a client that answers stays, one that does not is dropped."""
    with running_server(tmp_path, env={"XSHATHRA_PING_INTERVAL": "1"}) as srv:
        app = srv.create_app(name="ping")
        async with websockets.connect(srv.ws_url) as good, websockets.connect(srv.ws_url) as bad:
            assert (await connect(good, realtime_token(srv, app, "good")))["connect"]["ping"] == 1
            await connect(bad, realtime_token(srv, app, "bad"))
            for _ in range(3):
                assert await asyncio.wait_for(good.recv(), 3) == "{}"
                await good.send("{}")
            assert await closed_with(bad) == 3012
            await good.send(json.dumps({"id": 9, "ping": {}}))
            while (answer := json.loads(await asyncio.wait_for(good.recv(), 3))) == {}:
                await good.send("{}")
            assert answer == {"id": 9, "ping": {}}
