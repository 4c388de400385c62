"""Centrifugo PRO's access controls on one node, driven by `cent` with real clients:
`connections`, `block_user`/`unblock_user` (kept across a restart), `revoke_token` and
`invalidate_user_tokens`."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets
from cent import (
    AsyncClient,
    BlockUserRequest,
    ConnectionsRequest,
    InvalidateUserTokensRequest,
    PublishRequest,
    RevokeTokenRequest,
    UnblockUserRequest,
)
from cent.exceptions import CentApiResponseError

from tests.integration.test_engine_bad_input import closed_with, connect, reply
from tests.support.clients import app_signed_token, realtime_token, subscription_token
from tests.support.server import ServerProcess, running_server

Json = dict[str, Any]


_open_clients: list[AsyncClient] = []


def cent_for(server: ServerProcess, app: Json) -> AsyncClient:
    client = AsyncClient(f"{server.base_url}/realtime/api", str(app["api_key"]))
    _open_clients.append(client)
    return client


@pytest.fixture(autouse=True)
async def _close_cent_clients() -> AsyncIterator[None]:
    yield
    while _open_clients:
        await _open_clients.pop().close()


def jti_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


async def connected(server: ServerProcess, token: str) -> Any:
    """A raw WebSocket whose connect succeeded (its reply is checked)."""
    ws = await websockets.connect(server.ws_url)
    answer = await connect(ws, token)
    assert "connect" in answer, answer
    return ws


async def refused_with(server: ServerProcess, token: str) -> int:
    """The close code a connect with `token` gets."""
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        return await closed_with(ws)


async def test_block_user_closes_and_refuses_until_unblocked(server: ServerProcess) -> None:
    app = server.create_app(name="block")
    cent = cent_for(server, app)
    alice = await connected(server, realtime_token(server, app, "alice"))
    bob = await connected(server, realtime_token(server, app, "bob"))
    await cent.block_user(BlockUserRequest(user="alice"))
    assert await closed_with(alice) == 3503
    assert await refused_with(server, realtime_token(server, app, "alice")) == 3503
    # Bob is no one's business here: still connected and served.
    await bob.send('{"id": 2, "subscribe": {"channel": "public:still"}}')
    assert "subscribe" in await reply(bob)
    await cent.unblock_user(UnblockUserRequest(user="alice"))
    again = await connected(server, realtime_token(server, app, "alice"))
    await again.close()
    await bob.close()


async def test_a_block_that_expired_refuses_nobody(server: ServerProcess) -> None:
    app = server.create_app(name="block-expired")
    cent = cent_for(server, app)
    await cent.block_user(BlockUserRequest(user="carol", expire_at=int(time.time()) - 1))
    ws = await connected(server, realtime_token(server, app, "carol"))
    await ws.close()


async def test_block_is_per_app(server: ServerProcess) -> None:
    one, other = server.create_app(name="one"), server.create_app(name="two")
    await cent_for(server, one).block_user(BlockUserRequest(user="dave"))
    ws = await connected(server, realtime_token(server, other, "dave"))
    await ws.close()
    assert await refused_with(server, realtime_token(server, one, "dave")) == 3503


async def test_revoke_token_closes_that_token_only(server: ServerProcess) -> None:
    app = server.create_app(name="revoke")
    cent = cent_for(server, app)
    first, second = (realtime_token(server, app, "erin") for _ in range(2))
    assert jti_of(first) != jti_of(second)
    ws1, ws2 = await connected(server, first), await connected(server, second)
    await cent.revoke_token(RevokeTokenRequest(uid=jti_of(first), expire_at=int(time.time()) + 900))
    assert await closed_with(ws1) == 3500
    assert await refused_with(server, first) == 3500
    await ws2.send('{"id": 2, "subscribe": {"channel": "public:still"}}')
    assert "subscribe" in await reply(ws2)
    await ws2.close()


async def test_invalidate_user_tokens_issued_before(server: ServerProcess) -> None:
    app = server.create_app(name="invalidate")
    cent = cent_for(server, app)
    cutoff = int(time.time()) - 5  # a future iat is itself refused (not yet valid)
    old = app_signed_token(app, "frank", iat=cutoff - 10)
    ws = await connected(server, old)
    await cent.invalidate_user_tokens(
        InvalidateUserTokensRequest(user="frank", issued_before=cutoff)
    )
    assert await closed_with(ws) == 3500
    assert await refused_with(server, old) == 3500
    # A token issued at the cutoff or later is the user's new session: accepted.
    fresh = await connected(server, app_signed_token(app, "frank", iat=cutoff))
    await fresh.close()
    # Another user's tokens are untouched.
    other = await connected(server, app_signed_token(app, "gina", iat=cutoff - 10))
    await other.close()


async def subscribed(ws: Any, channel: str, token: str, command_id: int = 2) -> Json:
    """The reply to a subscribe with a subscription token (`subscribe` or `error`)."""
    await ws.send(json.dumps({"id": command_id, "subscribe": {"channel": channel, "token": token}}))
    while True:
        answer = await reply(ws)
        if answer.get("id") == command_id:
            return answer


async def unsubscribed_push(ws: Any) -> Json:
    """The next server unsubscribe push (other pushes are skipped)."""
    while True:
        message = await reply(ws)
        push = message.get("push", {})
        if "unsubscribe" in push:
            return dict(push)


async def test_revoke_token_ends_a_subscription_made_with_it(server: ServerProcess) -> None:
    """revoke_token names subscription tokens too (Centrifugo PRO): the subscription made
    with it ends (unsubscribe 2000), the token is refused (103) from then on, and the
    connection and its other subscriptions stay."""
    app = server.create_app(name="revoke-sub")
    cent = cent_for(server, app)
    ws = await connected(server, realtime_token(server, app, "kim"))
    revoked, kept = (subscription_token(server, app, "kim", c) for c in ("room", "hall"))
    assert "subscribe" in await subscribed(ws, "room", revoked, 2)
    assert "subscribe" in await subscribed(ws, "hall", kept, 3)
    await cent.revoke_token(RevokeTokenRequest(uid=jti_of(revoked)))
    push = await unsubscribed_push(ws)
    assert push["channel"] == "room" and push["unsubscribe"]["code"] == 2000, push
    refused = await subscribed(ws, "room", revoked, 4)
    assert refused["error"]["code"] == 103, refused
    # The other subscription and the connection itself are untouched.
    await cent.publish(PublishRequest(channel="hall", data={"still": True}))
    while True:
        message = await reply(ws)
        if message.get("push", {}).get("channel") == "hall":
            assert message["push"]["pub"]["data"] == {"still": True}
            break
    # A fresh subscription token for the same channel works.
    assert "subscribe" in await subscribed(
        ws, "room", subscription_token(server, app, "kim", "room"), 5
    )
    await ws.close()


async def test_invalidate_user_tokens_for_one_channel(server: ServerProcess) -> None:
    """invalidate_user_tokens with `channel` (Centrifugo PRO): only the user's subscription
    tokens for that channel issued before the time; their connection tokens and other
    channels' subscription tokens stay valid."""
    app = server.create_app(name="invalidate-channel")
    cent = cent_for(server, app)
    cutoff = int(time.time()) - 5
    connection = app_signed_token(app, "lee", iat=cutoff - 10)
    ws = await connected(server, connection)
    old_room = app_signed_token(app, "lee", iat=cutoff - 10, channel="room")
    old_hall = app_signed_token(app, "lee", iat=cutoff - 10, channel="hall")
    assert "subscribe" in await subscribed(ws, "room", old_room, 2)
    assert "subscribe" in await subscribed(ws, "hall", old_hall, 3)
    await cent.invalidate_user_tokens(
        InvalidateUserTokensRequest(user="lee", issued_before=cutoff, channel="room")
    )
    push = await unsubscribed_push(ws)
    assert push["channel"] == "room" and push["unsubscribe"]["code"] == 2000, push
    assert (await subscribed(ws, "room", old_room, 4))["error"]["code"] == 103
    fresh_room = app_signed_token(app, "lee", iat=cutoff, channel="room")
    assert "subscribe" in await subscribed(ws, "room", fresh_room, 5)
    # The connection token issued before the cutoff still connects: only `room` was named.
    other = await connected(server, connection)
    assert "subscribe" in await subscribed(other, "hall", old_hall, 2)
    # Another user's tokens for the channel are untouched.
    mia = await connected(server, app_signed_token(app, "mia"))
    mia_room = app_signed_token(app, "mia", iat=cutoff - 10, channel="room")
    assert "subscribe" in await subscribed(mia, "room", mia_room, 2)
    for socket in (ws, other, mia):
        await socket.close()


async def test_connections_lists_the_apps_connections(server: ServerProcess) -> None:
    app = server.create_app(name="connections")
    other_app = server.create_app(name="not-listed")
    cent = cent_for(server, app)
    token = realtime_token(server, app, "hana")
    hana = await connected(server, token)
    await hana.send('{"id": 2, "subscribe": {"channel": "public:room"}}')
    assert "subscribe" in await reply(hana)
    ivan = await connected(server, realtime_token(server, app, "ivan"))
    stranger = await connected(server, realtime_token(server, other_app, "hana"))
    everyone = await cent.connections(ConnectionsRequest(user="", expression=""))
    assert sorted(c.user for c in everyone.connections.values()) == ["hana", "ivan"]
    only = await cent.connections(ConnectionsRequest(user="hana", expression=""))
    ((_client, info),) = only.connections.items()
    assert info.user == "hana" and info.transport == "websocket" and info.protocol == "json"
    assert info.state is not None and set(info.state.channels or {}) == {"public:room"}
    assert info.state.connection_token is not None
    assert info.state.connection_token.uid == jti_of(token)
    with pytest.raises(CentApiResponseError) as refused:
        await cent.connections(ConnectionsRequest(user="", expression="user == 'x'"))
    assert refused.value.code == 107
    for ws in (hana, ivan, stranger):
        await ws.close()


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("block_user", {"user": ""}),
        ("block_user", {"user": "u", "expire_at": -1}),
        ("revoke_token", {"uid": ""}),
        ("revoke_token", {"uid": "x" * 256}),
        ("invalidate_user_tokens", {"user": "u", "issued_before": -5}),
        ("invalidate_user_tokens", {"user": "u", "channel": "no spaces allowed"}),
    ],
)
async def test_bad_requests_are_refused(server: ServerProcess, method: str, body: Json) -> None:
    import httpx

    app = server.create_app(name="bad-access")
    r = httpx.post(
        f"{server.base_url}/realtime/api/{method}",
        json=body,
        headers={"X-API-Key": str(app["api_key"])},
    )
    assert r.status_code == 200 and r.json()["error"]["code"] == 107, r.text


async def test_block_survives_a_restart(tmp_path: Path) -> None:
    with running_server(tmp_path) as first:
        app = first.create_app(name="restart")
        await cent_for(first, app).block_user(BlockUserRequest(user="jack"))
        await cent_for(first, app).revoke_token(RevokeTokenRequest(uid="kept-jti"))
        port, admin = first.port, first.admin_key
    with running_server(tmp_path, port=port, admin_key=admin) as again:
        assert await refused_with(again, realtime_token(again, app, "jack")) == 3503
        revoked = app_signed_token(app, "kim", jti="kept-jti")
        assert await refused_with(again, revoked) == 3500
        ws = await connected(again, app_signed_token(app, "kim", jti="another"))
        await ws.close()
