"""The engine driven by the unmodified centrifuge-python client (PyPI `centrifuge-python`):
connect, subscribe, publications with tags, join/leave, presence, history, recovery, token
refresh, client publish, server-side subscriptions, server API effects, and tenancy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from centrifuge import Client, ClientState, SubscriptionState
from centrifuge.exceptions import CentrifugeError

from tests.support.clients import (
    Recorder,
    SubEvents,
    app_signed_token,
    engine_api,
    make_client,
    realtime_token,
    subscription_token,
)
from tests.support.server import ServerProcess

Json = dict[str, Any]


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """Clients created by a test, disconnected at its end."""
    made: list[Client] = []
    yield made
    for client in made:
        await client.disconnect()


async def connected(
    server: ServerProcess, clients: list[Client], rec: Recorder, **kwargs: Any
) -> Client:
    client = make_client(server, rec, **kwargs)
    clients.append(client)
    await client.connect()
    await client.ready(5)
    return client


async def test_broadcast_reaches_a_subscriber_with_event_tag(
    server: ServerProcess, clients: list[Client]
) -> None:
    """POST /api/broadcast → ctx.data == data and ctx.tags["event"] == event."""
    app = server.create_app(name="bc")
    rec = Recorder()
    client = await connected(server, clients, rec, token=realtime_token(server, app, "u1"))
    sub = client.new_subscription("public:chat", SubEvents(rec))
    await sub.subscribe()
    await sub.ready(5)
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{server.base_url}/api/broadcast",
            headers={"X-API-Key": str(app["api_key"])},
            json={"room": "public:chat", "event": "new-message", "data": {"text": "hello"}},
        )
    assert r.json()["subscriber_count"] == 1
    ctx = await rec.next("publication")
    assert ctx.pub.data == {"text": "hello"}
    assert ctx.pub.tags == {"event": "new-message"}
    assert ctx.pub.offset == 1


async def test_app_signed_token_connects(server: ServerProcess, clients: list[Client]) -> None:
    app = server.create_app(name="signed")
    rec = Recorder()
    client = await connected(server, clients, rec, token=app_signed_token(app, "backend-user"))
    ctx = await rec.next("connected")
    assert ctx.client and client.state == ClientState.CONNECTED


async def test_private_channel_needs_a_subscription_token(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="priv")
    rec = Recorder()
    client = await connected(server, clients, rec, token=realtime_token(server, app, "u1"))
    denied = client.new_subscription("room-42", SubEvents(rec))
    await denied.subscribe()
    unsub = await rec.next("unsubscribed")
    assert unsub.code == 103 and denied.state == SubscriptionState.UNSUBSCRIBED
    client.remove_subscription(denied)

    async def get_token(channel: str) -> str:
        return subscription_token(server, app, "u1", channel)

    allowed = client.new_subscription("room-42", SubEvents(rec), get_token=get_token)
    await allowed.subscribe()
    await allowed.ready(5)
    engine_api(server, app, "publish", {"channel": "room-42", "data": {"n": 1}})
    assert (await rec.next("publication")).pub.data == {"n": 1}


async def test_subscription_token_of_another_user_is_refused(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="other-user")
    rec = Recorder()
    client = await connected(server, clients, rec, token=realtime_token(server, app, "alice"))
    sub = client.new_subscription(
        "room-1", SubEvents(rec), token=subscription_token(server, app, "bob", "room-1")
    )
    await sub.subscribe()
    assert (await rec.next("unsubscribed")).code == 103


async def test_server_side_subscriptions_from_the_token(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="srvsub")
    rec = Recorder()
    await connected(
        server,
        clients,
        rec,
        token=realtime_token(server, app, "u1", channels=["news", "public:feed"]),
    )
    subscribed = {(await rec.next("server_subscribed")).channel for _ in range(2)}
    assert subscribed == {"news", "public:feed"}
    engine_api(server, app, "publish", {"channel": "news", "data": "extra"})
    ctx = await rec.next("server_publication")
    assert ctx.channel == "news" and ctx.pub.data == "extra"


async def test_join_leave_presence_and_history(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="jl")
    rec_a, rec_b = Recorder(), Recorder()
    a = await connected(server, clients, rec_a, token=realtime_token(server, app, "alice"))
    sub_a = a.new_subscription("public:room", SubEvents(rec_a))
    await sub_a.subscribe()
    await sub_a.ready(5)
    b = await connected(server, clients, rec_b, token=realtime_token(server, app, "bob"))
    sub_b = b.new_subscription("public:room", SubEvents(rec_b))
    await sub_b.subscribe()
    await sub_b.ready(5)
    assert (await rec_a.next("join")).info.user == "bob"

    presence = await sub_a.presence()
    assert {c.user for c in presence.clients.values()} == {"alice", "bob"}
    stats = await sub_a.presence_stats()
    assert (stats.num_clients, stats.num_users) == (2, 2)

    for i in range(3):
        engine_api(server, app, "publish", {"channel": "public:room", "data": {"i": i}})
    history = await sub_a.history(limit=2)
    assert [p.data for p in history.publications] == [{"i": 0}, {"i": 1}]
    latest = await sub_a.history(limit=1, reverse=True)
    assert latest.publications[0].data == {"i": 2} and latest.offset == 3

    await sub_b.unsubscribe()
    assert (await rec_a.next("leave")).info.user == "bob"
    stats = await sub_a.presence_stats()
    assert (stats.num_clients, stats.num_users) == (1, 1)


async def test_recovery_after_reconnect(server: ServerProcess, clients: list[Client]) -> None:
    """Missed publications come back in order with recovered=True."""
    app = server.create_app(name="recover")
    rec = Recorder()
    client = await connected(server, clients, rec, token=realtime_token(server, app, "u1"))
    sub = client.new_subscription("public:stream", SubEvents(rec))
    await sub.subscribe()
    first = await rec.next("subscribed")
    assert first.recoverable
    engine_api(server, app, "publish", {"channel": "public:stream", "data": 0})
    assert (await rec.next("publication")).pub.data == 0

    await client.disconnect()
    for i in range(1, 4):
        engine_api(server, app, "publish", {"channel": "public:stream", "data": i})
    await client.connect()
    again = await rec.next("subscribed")
    assert again.was_recovering and again.recovered
    got = [(await rec.next("publication")).pub.data for _ in range(3)]
    assert got == [1, 2, 3]


async def test_recovery_is_honest_when_the_gap_is_gone(
    server: ServerProcess, clients: list[Client]
) -> None:
    """More missed than history keeps: recovered=False, not a silent partial recovery."""
    app = server.create_app(name="norecover")
    r = httpx.put(
        f"{server.base_url}/api/applications/{app['app_id']}",
        headers={"X-API-Key": str(app["api_key"])},
        json={
            "namespaces": {
                "small": {"history_size": 2, "history_ttl": 60, "allow_subscribe_for_client": True}
            }
        },
    )
    assert r.status_code == 200, r.text
    rec = Recorder()
    client = await connected(server, clients, rec, token=realtime_token(server, app, "u1"))
    sub = client.new_subscription("small:s", SubEvents(rec))
    await sub.subscribe()
    await rec.next("subscribed")
    await client.disconnect()
    for i in range(5):
        engine_api(server, app, "publish", {"channel": "small:s", "data": i})
    await client.connect()
    again = await rec.next("subscribed")
    assert again.was_recovering and not again.recovered


async def test_connection_token_refresh(server: ServerProcess, clients: list[Client]) -> None:
    """A short-lived token is refreshed through get_token; the connection outlives it."""
    app = server.create_app(name="refresh")
    calls: list[float] = []
    refreshed = asyncio.Event()

    async def get_token() -> str:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) >= 2:
            refreshed.set()
        return app_signed_token(app, "u1", expires_in=3)

    rec = Recorder()
    client = await connected(server, clients, rec, get_token=get_token)
    sub = client.new_subscription("public:r", SubEvents(rec))
    await sub.subscribe()
    await sub.ready(5)
    await asyncio.wait_for(refreshed.wait(), 10)  # the second call is the refresh
    assert client.state == ClientState.CONNECTED
    engine_api(server, app, "publish", {"channel": "public:r", "data": "after refresh"})
    assert (await rec.next("publication")).pub.data == "after refresh"


async def test_expired_connection_token_asks_for_a_new_one(
    server: ServerProcess, clients: list[Client]
) -> None:
    """Error 109 on connect: the client calls get_token and connects with the fresh token."""
    app = server.create_app(name="expired")
    tokens = iter([app_signed_token(app, "u1", expires_in=-60), app_signed_token(app, "u1")])

    async def get_token() -> str:
        return next(tokens)

    rec = Recorder()
    client = make_client(server, rec, token=next(tokens), get_token=get_token)
    clients.append(client)
    await client.connect()
    await rec.next("connected", timeout=10)


async def test_client_publish_follows_namespace_options(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="cpub")
    r = httpx.put(
        f"{server.base_url}/api/applications/{app['app_id']}",
        headers={"X-API-Key": str(app["api_key"])},
        json={
            "namespaces": {
                "chat": {"allow_subscribe_for_client": True, "allow_publish_for_subscriber": True}
            }
        },
    )
    assert r.status_code == 200
    rec = Recorder()
    client = await connected(server, clients, rec, token=realtime_token(server, app, "u1"))
    public = client.new_subscription("public:x", SubEvents(rec))
    await public.subscribe()
    await public.ready(5)
    with pytest.raises(CentrifugeError) as denied:
        await public.publish({"no": 1})
    assert getattr(denied.value, "code", None) == 103
    chat = client.new_subscription("chat:room", SubEvents(rec))
    await chat.subscribe()
    await chat.ready(5)
    await chat.publish({"text": "from client"})
    ctx = await rec.next("publication")
    assert ctx.pub.data == {"text": "from client"} and ctx.pub.info.user == "u1"


async def test_server_api_disconnect_without_reconnect(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="kick")
    rec = Recorder()
    client = await connected(server, clients, rec, token=realtime_token(server, app, "victim"))
    engine_api(
        server,
        app,
        "disconnect",
        {"user": "victim", "disconnect": {"code": 3503, "reason": "banned"}},
    )
    ctx = await rec.next("disconnected")
    assert ctx.code == 3503 and client.state == ClientState.DISCONNECTED


async def test_server_api_subscribe_and_unsubscribe(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="srvapi")
    rec = Recorder()
    await connected(server, clients, rec, token=realtime_token(server, app, "u1"))
    engine_api(server, app, "subscribe", {"user": "u1", "channel": "alerts"})
    assert (await rec.next("server_subscribed")).channel == "alerts"
    engine_api(server, app, "publish", {"channel": "alerts", "data": "fire"})
    assert (await rec.next("server_publication")).pub.data == "fire"
    engine_api(server, app, "unsubscribe", {"user": "u1", "channel": "alerts"})
    assert (await rec.next("server_unsubscribed")).channel == "alerts"


async def test_apps_are_isolated(server: ServerProcess, clients: list[Client]) -> None:
    """Same channel name in two apps: no messages, presence or history cross over."""
    a, b = server.create_app(name="A"), server.create_app(name="B")
    rec = Recorder()
    client = await connected(server, clients, rec, token=realtime_token(server, a, "alice"))
    sub = client.new_subscription("public:lobby", SubEvents(rec))
    await sub.subscribe()
    await sub.ready(5)
    engine_api(server, b, "publish", {"channel": "public:lobby", "data": "for B"})
    engine_api(server, a, "publish", {"channel": "public:lobby", "data": "for A"})
    assert (await rec.next("publication")).pub.data == "for A"  # B's came first, never arrived
    presence_b = engine_api(server, b, "presence", {"channel": "public:lobby"})
    assert presence_b["result"]["presence"] == {}
    history_b = engine_api(server, b, "history", {"channel": "public:lobby", "limit": 10})
    assert [p["data"] for p in history_b["result"]["publications"]] == ["for B"]


async def test_token_of_one_app_cannot_reach_another(
    server: ServerProcess, clients: list[Client]
) -> None:
    a, b = server.create_app(name="A2"), server.create_app(name="B2")
    forged = app_signed_token(a, "mallory", app_id=b["app_id"])  # B's id, A's secret
    rec = Recorder()
    client = make_client(server, rec, token=forged)
    clients.append(client)
    await client.connect()
    assert (await rec.next("disconnected")).code == 3500
    rec2 = Recorder()
    client2 = await connected(server, clients, rec2, token=realtime_token(server, b, "u"))
    sub = client2.new_subscription(
        "room", SubEvents(rec2), token=subscription_token(server, a, "u", "room")
    )
    await sub.subscribe()
    assert (await rec2.next("unsubscribed")).code == 103


async def test_seed_000_token_connects(server: ServerProcess, clients: list[Client]) -> None:
    """A token from POST /api/token (app_id + app_secret) opens a connection too."""
    app = server.create_app(name="seed0")
    r = httpx.post(
        f"{server.base_url}/api/token",
        json={
            "app_id": app["app_id"],
            "app_secret": app["app_secret"],
            "payload": {"user_id": "seed-user"},
        },
    )
    assert r.status_code == 200
    rec = Recorder()
    client = await connected(server, clients, rec, token=r.json()["token"])
    sub = client.new_subscription("public:seed", SubEvents(rec))
    await sub.subscribe()
    await sub.ready(5)
    presence = await sub.presence()
    assert [c.user for c in presence.clients.values()] == ["seed-user"]


async def test_subscription_token_refresh(server: ServerProcess, clients: list[Client]) -> None:
    """A short-lived subscription token is refreshed through its get_token (sub_refresh)."""
    app = server.create_app(name="subrefresh")
    calls: list[str] = []
    refreshed = asyncio.Event()

    async def get_token(channel: str) -> str:
        calls.append(channel)
        if len(calls) >= 2:
            refreshed.set()
        return app_signed_token(app, "u1", expires_in=3, channel=channel)

    rec = Recorder()
    client = await connected(server, clients, rec, token=realtime_token(server, app, "u1"))
    sub = client.new_subscription("private-feed", SubEvents(rec), get_token=get_token)
    await sub.subscribe()
    await sub.ready(5)
    await asyncio.wait_for(refreshed.wait(), 10)
    assert sub.state == SubscriptionState.SUBSCRIBED
    engine_api(server, app, "publish", {"channel": "private-feed", "data": "fresh"})
    assert (await rec.next("publication")).pub.data == "fresh"
