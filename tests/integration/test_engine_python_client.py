"""The engine driven by the unmodified centrifuge-python client (PyPI `centrifuge-python`):
connect, subscribe, publications with tags, join/leave, presence, history, recovery, token
refresh, client publish, server-side subscriptions, server API effects, ping/pong and tenancy.

The module's node pings every second and closes an expired connection or subscription two
seconds after its token's `exp` (Centrifugo's `client_expired_close_delay`), so that token
refresh and ping/pong are proven against deadlines the server really enforces.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from centrifuge import (
    Client,
    ClientState,
    DeltaType,
    StreamPosition,
    Subscription,
    SubscriptionState,
)
from centrifuge.exceptions import CentrifugeError

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
from tests.support.server import ServerProcess, free_port, running_server

Json = dict[str, Any]

PING_INTERVAL = 1
EXPIRED_CLOSE_DELAY = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "XSHATHRA_PING_INTERVAL": str(PING_INTERVAL),
        "XSHATHRA_EXPIRED_CLOSE_DELAY": str(EXPIRED_CLOSE_DELAY),
    }
    with running_server(tmp_path_factory.mktemp("node"), env=env) as proc:
        yield proc


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


async def connected_as(
    server: ServerProcess, clients: list[Client], app: Json, user: str, **kwargs: Any
) -> tuple[Client, Recorder]:
    """A client of `app` connected as `user` with a server-minted token, and its recorder."""
    rec = Recorder()
    client = await connected(
        server, clients, rec, token=realtime_token(server, app, user), **kwargs
    )
    return client, rec


async def subscribed(client: Client, channel: str, rec: Recorder, **kwargs: Any) -> Subscription:
    """A subscription of `client` to `channel`, its events recorded in `rec`, once it is live."""
    sub = client.new_subscription(channel, SubEvents(rec), **kwargs)
    await sub.subscribe()
    await sub.ready(5)
    return sub


def lost(ctx: Any) -> bool:
    """A `connecting` (`subscribing`) event for a lost connection (subscription): code 0 is the
    one connect() (subscribe()) itself emits."""
    return bool(ctx.code != 0)


def troubles(rec: Recorder) -> list[tuple[str, Any]]:
    """Connections lost or closed so far, as recorded."""
    return [
        (k, c) for k, c in rec.kinds("connecting", "disconnected") if k != "connecting" or lost(c)
    ]


def set_namespaces(server: ServerProcess, app: Json, namespaces: Json) -> None:
    r = httpx.put(
        f"{server.base_url}/api/applications/{app['app_id']}",
        headers={"X-API-Key": str(app["api_key"])},
        json={"namespaces": namespaces},
    )
    assert r.status_code == 200, r.text


# --- connecting ---------------------------------------------------------------------------------


async def test_server_minted_token_connects_and_subscribes_to_public(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="minted")
    client, rec = await connected_as(server, clients, app, "u1")
    assert (await rec.next("connected")).client
    sub = client.new_subscription("public:hello", SubEvents(rec))
    await sub.subscribe()
    ctx = await rec.next("subscribed")
    assert ctx.channel == "public:hello" and sub.state == SubscriptionState.SUBSCRIBED
    presence = await sub.presence()
    assert [c.user for c in presence.clients.values()] == ["u1"]


async def test_app_signed_token_connects(server: ServerProcess, clients: list[Client]) -> None:
    """A token the app's backend signed with its app_secret, no round trip to the server."""
    app = server.create_app(name="signed")
    rec = Recorder()
    client = await connected(server, clients, rec, token=app_signed_token(app, "backend-user"))
    assert (await rec.next("connected")).client and client.state == ClientState.CONNECTED
    sub = await subscribed(client, "public:signed", rec)
    presence = await sub.presence()
    assert [c.user for c in presence.clients.values()] == ["backend-user"]


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
    sub = await subscribed(client, "public:seed", rec)
    presence = await sub.presence()
    assert [c.user for c in presence.clients.values()] == ["seed-user"]


async def test_expired_connection_token_asks_for_a_new_one(
    server: ServerProcess, clients: list[Client]
) -> None:
    """Error 109 on connect: the client calls get_token and connects with the fresh token."""
    app = server.create_app(name="expired")
    tokens = iter([app_signed_token(app, "u1", expires_in=-60), app_signed_token(app, "u1")])
    calls: list[int] = []

    async def get_token() -> str:
        calls.append(1)
        return next(tokens)

    rec = Recorder()
    client = make_client(server, rec, token=next(tokens), get_token=get_token)
    clients.append(client)
    await client.connect()
    await rec.next("connected", timeout=10)
    assert len(calls) == 1


# --- publications ---------------------------------------------------------------------------------


async def test_publication_carries_data_and_tags(
    server: ServerProcess, clients: list[Client]
) -> None:
    """Engine API publish with tags: the subscriber gets data, tags and the offset."""
    app = server.create_app(name="tags")
    client, rec = await connected_as(server, clients, app, "u1")
    await subscribed(client, "public:news", rec)
    result = engine_api(
        server,
        app,
        "publish",
        {"channel": "public:news", "data": {"title": "t", "n": [1, 2]}, "tags": {"kind": "x"}},
    )
    ctx = await rec.next("publication")
    assert ctx.pub.data == {"title": "t", "n": [1, 2]}
    assert ctx.pub.tags == {"kind": "x"}
    assert ctx.pub.offset == result["result"]["offset"] == 1
    assert ctx.pub.info is None  # published by the backend, not by a client


async def test_broadcast_reaches_a_subscriber_with_event_tag(
    server: ServerProcess, clients: list[Client]
) -> None:
    """POST /api/broadcast → ctx.data == data and ctx.tags["event"] == event."""
    app = server.create_app(name="bc")
    client, rec = await connected_as(server, clients, app, "u1")
    await subscribed(client, "public:chat", rec)
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{server.base_url}/api/broadcast",
            headers={"X-API-Key": str(app["api_key"])},
            json={"room": "public:chat", "event": "new-message", "data": {"text": "hello"}},
        )
    assert r.status_code == 200, r.text
    assert r.json()["subscriber_count"] == 1
    ctx = await rec.next("publication")
    assert ctx.pub.data == {"text": "hello"}
    assert ctx.pub.tags == {"event": "new-message"}
    assert ctx.pub.offset == 1


# --- private channels and server-side subscriptions -----------------------------------------------


async def test_private_channel_needs_a_subscription_token(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="priv")
    client, rec = await connected_as(server, clients, app, "u1")
    denied = client.new_subscription("room-42", SubEvents(rec))
    await denied.subscribe()
    unsub = await rec.next("unsubscribed")
    assert unsub.code == 103 and denied.state == SubscriptionState.UNSUBSCRIBED
    client.remove_subscription(denied)

    async def get_token(channel: str) -> str:
        return subscription_token(server, app, "u1", channel)

    await subscribed(client, "room-42", rec, get_token=get_token)
    engine_api(server, app, "publish", {"channel": "room-42", "data": {"n": 1}})
    assert (await rec.next("publication")).pub.data == {"n": 1}


async def test_subscription_token_of_another_user_is_refused(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="other-user")
    client, rec = await connected_as(server, clients, app, "alice")
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
    engine_api(server, app, "publish", {"channel": "public:feed", "data": "f", "tags": {"a": "b"}})
    ctx = await rec.next("server_publication")
    assert (ctx.channel, ctx.pub.data, ctx.pub.tags) == ("public:feed", "f", {"a": "b"})


async def test_server_side_subscription_recovers_after_network_loss(
    server: ServerProcess, clients: list[Client]
) -> None:
    """The client sends its server-side subs' positions on reconnect; missed ones come back."""
    app = server.create_app(name="srvsub-recover")
    rec = Recorder()
    async with TcpProxy(server.port) as proxy:
        await connected(
            server,
            clients,
            rec,
            url=proxy.ws_url,
            token=realtime_token(server, app, "u1", channels=["public:feed"]),
        )
        first = await rec.next("server_subscribed")
        assert first.recoverable
        engine_api(server, app, "publish", {"channel": "public:feed", "data": 0})
        assert (await rec.next("server_publication")).pub.data == 0

        proxy.hold()
        proxy.drop()
        await rec.next("connecting", lost)
        for i in (1, 2):
            engine_api(server, app, "publish", {"channel": "public:feed", "data": i})
        proxy.release()

        again = await rec.next("server_subscribed", timeout=10)
        assert again.channel == "public:feed" and again.was_recovering and again.recovered
        got = [(await rec.next("server_publication")).pub.data for _ in range(2)]
        assert got == [1, 2]


# --- join/leave, presence, history ----------------------------------------------------------------


async def test_join_leave_presence_and_history(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="jl")
    a, rec_a = await connected_as(server, clients, app, "alice")
    sub_a = await subscribed(a, "public:room", rec_a)
    b, rec_b = await connected_as(server, clients, app, "bob")
    sub_b = await subscribed(b, "public:room", rec_b)
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
    assert [p.data for p in history.publications] == [{"i": 0}, {"i": 1}]
    assert [p.offset for p in history.publications] == [1, 2]
    latest = await sub_a.history(limit=1, reverse=True)
    assert latest.publications[0].data == {"i": 2} and latest.offset == 3

    await sub_b.unsubscribe()
    left = await rec_a.next("leave")
    assert left.info.user == "bob" and left.info.client == b.client_id
    stats = await sub_a.presence_stats()
    assert (stats.num_clients, stats.num_users) == (1, 1)


async def test_conn_info_and_chan_info_reach_presence_and_join(
    server: ServerProcess, clients: list[Client]
) -> None:
    """`info` of the connection token and of the subscription token travel untouched to
    presence and join events (Centrifugo's conn_info and chan_info)."""
    app = server.create_app(name="info")
    set_namespaces(
        server,
        app,
        {"room": {"presence": True, "join_leave": True, "allow_presence_for_subscriber": True}},
    )
    r = httpx.post(
        f"{server.base_url}/api/realtime/token",
        json={"userId": "alice", "info": {"name": "Alice"}},
        headers={"Authorization": f"apikey {app['api_key']}"},
    )
    assert r.status_code == 200, r.text
    rec_a, rec_b = Recorder(), Recorder()
    b = await connected(server, clients, rec_b, token=realtime_token(server, app, "bob"))
    sub_b = b.new_subscription(
        "room:1",
        SubEvents(rec_b),
        token=subscription_token(server, app, "bob", "room:1"),
        join_leave=True,
    )
    await sub_b.subscribe()
    await sub_b.ready(5)
    a = await connected(server, clients, rec_a, token=r.json()["token"])
    token_a = app_signed_token(app, "alice", channel="room:1", info={"role": "moderator"})
    await subscribed(a, "room:1", rec_a, token=token_a)

    joined = (await rec_b.next("join", lambda ctx: ctx.info.user == "alice")).info
    assert (joined.conn_info, joined.chan_info) == ({"name": "Alice"}, {"role": "moderator"})
    presence = await sub_b.presence()
    alice = presence.clients[a.client_id]
    assert (alice.conn_info, alice.chan_info) == ({"name": "Alice"}, {"role": "moderator"})


async def test_concurrent_publications_arrive_in_offset_order(
    server: ServerProcess, clients: list[Client]
) -> None:
    """Fifty publishes racing each other: every one arrives once, in offset order."""
    app = server.create_app(name="order")
    client, rec = await connected_as(server, clients, app, "u1")
    await subscribed(client, "public:burst", rec)
    async with httpx.AsyncClient(headers={"X-API-Key": str(app["api_key"])}) as http:
        answers = await asyncio.gather(
            *(
                http.post(
                    f"{server.base_url}/realtime/api/publish",
                    json={"channel": "public:burst", "data": i},
                )
                for i in range(50)
            )
        )
    assert sorted(a.json()["result"]["offset"] for a in answers) == list(range(1, 51))
    pubs = [(await rec.next("publication")).pub for _ in range(50)]
    assert [p.offset for p in pubs] == list(range(1, 51))
    assert sorted(p.data for p in pubs) == list(range(50))


async def test_fan_out_to_many_subscribers(server: ServerProcess, clients: list[Client]) -> None:
    """Twenty connections on one channel (with ten more channels each, subscribed before the
    connection is up): each gets every publication, in order."""
    app = server.create_app(name="fanout")
    recs = [Recorder() for _ in range(20)]
    for i, rec in enumerate(recs):
        client = make_client(server, rec, token=realtime_token(server, app, f"u{i}"))
        clients.append(client)
        for n in range(10):
            client.new_subscription(f"public:extra-{n}", SubEvents(Recorder()))
        client.new_subscription("public:all", SubEvents(rec))
        for sub in client.subscriptions().values():
            await sub.subscribe()
        await client.connect()
    for client in clients:
        await client.ready(5)
        for sub in client.subscriptions().values():
            await sub.ready(5)
    channels = engine_api(server, app, "channels", {})["result"]["channels"]
    assert len(channels) == 11 and channels["public:all"]["num_clients"] == 20
    for i in range(10):
        engine_api(server, app, "publish", {"channel": "public:all", "data": i})
    for rec in recs:
        assert [(await rec.next("publication")).pub.data for _ in range(10)] == list(range(10))


async def test_resubscribe_during_a_publication_stream_has_no_gap_or_duplicate(
    server: ServerProcess, clients: list[Client]
) -> None:
    """The client reconnects while a backend keeps publishing: history replay and live
    publications join without a gap or a duplicate, whatever the timing."""
    app = server.create_app(name="stream")
    client, rec = await connected_as(server, clients, app, "u1")
    await subscribed(client, "public:stream", rec)
    total = 150

    async def publish_all() -> None:
        async with httpx.AsyncClient(headers={"X-API-Key": str(app["api_key"])}) as http:
            for i in range(1, total + 1):
                r = await http.post(
                    f"{server.base_url}/realtime/api/publish",
                    json={"channel": "public:stream", "data": i},
                )
                assert r.json()["result"]["offset"] == i

    publisher = asyncio.create_task(publish_all())
    await rec.next("publication", lambda ctx: ctx.pub.offset >= 10)
    await client.disconnect()
    await client.connect()
    again = await rec.next("subscribed")
    assert again.was_recovering and again.recovered
    await rec.next("publication", lambda ctx: ctx.pub.offset >= 60)
    await client.disconnect()
    await client.connect()
    again = await rec.next("subscribed")
    assert again.was_recovering and again.recovered
    await asyncio.wait_for(publisher, 30)
    await rec.next("publication", lambda ctx: ctx.pub.offset == total)
    offsets = [ctx.pub.offset for kind, ctx in rec.log if kind == "publication"]
    assert offsets == list(range(1, total + 1))


async def test_leave_when_a_connection_is_lost(
    server: ServerProcess, clients: list[Client]
) -> None:
    """A subscriber whose network goes away leaves the channel and its presence."""
    app = server.create_app(name="jl-lost")
    a, rec_a = await connected_as(server, clients, app, "alice")
    sub_a = await subscribed(a, "public:room", rec_a)
    async with TcpProxy(server.port) as proxy:
        b, rec_b = await connected_as(server, clients, app, "bob", url=proxy.ws_url)
        await subscribed(b, "public:room", rec_b)
        await rec_a.next("join", lambda ctx: ctx.info.user == "bob")
        proxy.hold()
        proxy.drop()
        assert (await rec_a.next("leave")).info.user == "bob"
        presence = await sub_a.presence()
        assert [c.user for c in presence.clients.values()] == ["alice"]
        await b.disconnect()


# --- recovery -------------------------------------------------------------------------------------


async def test_recovery_after_reconnect(server: ServerProcess, clients: list[Client]) -> None:
    """disconnect() then connect(): missed publications come back in order, recovered=True."""
    app = server.create_app(name="recover")
    client, rec = await connected_as(server, clients, app, "u1")
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
    got = [(await rec.next("publication")).pub for _ in range(3)]
    assert [(p.data, p.offset) for p in got] == [(1, 2), (2, 3), (3, 4)]


async def test_recovery_after_network_loss(server: ServerProcess, clients: list[Client]) -> None:
    """The link dies under the client (no close frame); it reconnects by itself and recovers."""
    app = server.create_app(name="recover-net")
    rec = Recorder()
    async with TcpProxy(server.port) as proxy:
        client = await connected(
            server, clients, rec, url=proxy.ws_url, token=realtime_token(server, app, "u1")
        )
        sub = client.new_subscription("public:stream", SubEvents(rec))
        await sub.subscribe()
        await rec.next("subscribed")
        engine_api(server, app, "publish", {"channel": "public:stream", "data": 0})
        assert (await rec.next("publication")).pub.data == 0

        proxy.hold()  # the client's reconnect waits at the proxy until the gap exists
        proxy.drop()
        await rec.next("connecting", lost)
        for i in range(1, 4):
            engine_api(server, app, "publish", {"channel": "public:stream", "data": i})
        proxy.release()

        again = await rec.next("subscribed", timeout=10)
        assert again.was_recovering and again.recovered
        assert [(await rec.next("publication")).pub.data for _ in range(3)] == [1, 2, 3]
        engine_api(server, app, "publish", {"channel": "public:stream", "data": 4})
        live = (await rec.next("publication")).pub
        assert (live.data, live.offset) == (4, 5)


async def test_recovery_is_honest_when_the_gap_is_gone(
    server: ServerProcess, clients: list[Client]
) -> None:
    """More missed than history keeps: recovered=False, not a silent partial recovery."""
    app = server.create_app(name="norecover")
    set_namespaces(
        server,
        app,
        {"small": {"history_size": 2, "history_ttl": 60, "allow_subscribe_for_client": True}},
    )
    client, rec = await connected_as(server, clients, app, "u1")
    sub = client.new_subscription("small:s", SubEvents(rec))
    await sub.subscribe()
    await rec.next("subscribed")
    await client.disconnect()
    for i in range(5):
        engine_api(server, app, "publish", {"channel": "small:s", "data": i})
    await client.connect()
    again = await rec.next("subscribed")
    assert again.was_recovering and not again.recovered
    assert again.stream_position.offset == 5
    assert not rec.kinds("publication")  # no partial replay of the 2 the history still has


async def test_recovery_is_honest_when_the_epoch_changed(
    tmp_path: Path, clients: list[Client]
) -> None:
    """A node restart loses the in-memory streams: the client reconnects by itself (shutdown
    code 3001), and its subscription comes back with recovered=False under a new epoch."""
    port, admin = free_port(), "adm_" + secrets.token_urlsafe(32)
    rec = Recorder()
    with running_server(tmp_path, port=port, admin_key=admin) as first:
        app = first.create_app(name="epoch")
        client = await connected(
            first, clients, rec, token=app_signed_token(app, "u1"), max_reconnect_delay=0.5
        )
        sub = client.new_subscription("public:e", SubEvents(rec))
        await sub.subscribe()
        before = (await rec.next("subscribed")).stream_position
        engine_api(first, app, "publish", {"channel": "public:e", "data": "old"})
        assert (await rec.next("publication")).pub.data == "old"
    assert (await rec.next("connecting", lost)).code == 3001

    with running_server(tmp_path, port=port, admin_key=admin) as second:
        again = await rec.next("subscribed", timeout=15)
        assert again.was_recovering and not again.recovered
        assert again.stream_position.epoch != before.epoch
        engine_api(second, app, "publish", {"channel": "public:e", "data": "new"})
        pub = (await rec.next("publication")).pub
        assert (pub.data, pub.offset) == ("new", 1)


async def test_history_from_another_epoch_is_unrecoverable(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="epoch-history")
    client, rec = await connected_as(server, clients, app, "u1")
    sub = await subscribed(client, "public:h", rec)
    engine_api(server, app, "publish", {"channel": "public:h", "data": 1})
    engine_api(server, app, "publish", {"channel": "public:h", "data": 2})
    epoch = (await sub.history(limit=0)).epoch
    since = await sub.history(limit=10, since=StreamPosition(offset=1, epoch=epoch))
    assert [p.data for p in since.publications] == [2]
    with pytest.raises(CentrifugeError) as err:
        await sub.history(limit=10, since=StreamPosition(offset=1, epoch="not-" + epoch))
    assert getattr(err.value, "code", None) == 112


async def test_delta_requested_falls_back_to_full_publications(
    server: ServerProcess, clients: list[Client]
) -> None:
    """A client asking for fossil deltas still gets every publication whole."""
    app = server.create_app(name="delta")
    client, rec = await connected_as(server, clients, app, "u1")
    await subscribed(client, "public:d", rec, delta=DeltaType.FOSSIL)
    for text in ("hello world", "hello world!", "bye"):
        engine_api(server, app, "publish", {"channel": "public:d", "data": {"t": text}})
    got = [(await rec.next("publication")).pub.data for _ in range(3)]
    assert got == [{"t": "hello world"}, {"t": "hello world!"}, {"t": "bye"}]


# --- token refresh --------------------------------------------------------------------------------


async def test_connection_token_refresh(server: ServerProcess, clients: list[Client]) -> None:
    """3-second tokens refreshed through get_token: the connection outlives the first token's
    deadline (exp + close delay) without ever being closed."""
    app = server.create_app(name="refresh")
    calls: list[float] = []
    third_call = asyncio.Event()

    async def get_token() -> str:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) >= 3:
            third_call.set()
        return app_signed_token(app, "u1", expires_in=3)

    rec = Recorder()
    client = await connected(server, clients, rec, get_token=get_token)
    await subscribed(client, "public:r", rec)
    # Call 1 connects, call 2 refreshes at ~3 s, call 3 at ~6 s: past the first deadline (~5 s).
    await asyncio.wait_for(third_call.wait(), 15)
    assert troubles(rec) == []
    assert client.state == ClientState.CONNECTED
    engine_api(server, app, "publish", {"channel": "public:r", "data": "after refresh"})
    assert (await rec.next("publication")).pub.data == "after refresh"


async def test_connection_expires_without_refresh(
    server: ServerProcess, clients: list[Client]
) -> None:
    """The control for the refresh test: with no get_token the server closes the connection
    as expired (3005, a reconnect code) once the token's deadline has passed."""
    app = server.create_app(name="no-refresh")
    rec = Recorder()
    await connected(server, clients, rec, token=app_signed_token(app, "u1", expires_in=2))
    ctx = await rec.next("connecting", lost, timeout=2 + EXPIRED_CLOSE_DELAY + 4)
    assert ctx.code == 3005


async def test_refresh_with_another_user_s_token_disconnects(
    server: ServerProcess, clients: list[Client]
) -> None:
    """A refresh must not switch users: the server closes with 3500 (invalid token)."""
    app = server.create_app(name="refresh-other")
    users = iter(["alice", "mallory"])

    async def get_token() -> str:
        return app_signed_token(app, next(users), expires_in=2)

    rec = Recorder()
    client = await connected(server, clients, rec, get_token=get_token)
    ctx = await rec.next("disconnected", timeout=8)
    assert ctx.code == 3500 and client.state == ClientState.DISCONNECTED


async def test_subscription_token_refresh(server: ServerProcess, clients: list[Client]) -> None:
    """3-second subscription tokens refreshed through the subscription's get_token
    (sub_refresh): the subscription outlives the first token's deadline."""
    app = server.create_app(name="subrefresh")
    calls: list[str] = []
    third_call = asyncio.Event()

    async def get_token(channel: str) -> str:
        calls.append(channel)
        if len(calls) >= 3:
            third_call.set()
        return app_signed_token(app, "u1", expires_in=3, channel=channel)

    client, rec = await connected_as(server, clients, app, "u1")
    sub = await subscribed(client, "private-feed", rec, get_token=get_token)
    await asyncio.wait_for(third_call.wait(), 15)
    assert calls == ["private-feed"] * len(calls)
    assert [(k, c) for k, c in rec.kinds("subscribing", "unsubscribed", "error") if lost(c)] == []
    assert sub.state == SubscriptionState.SUBSCRIBED
    engine_api(server, app, "publish", {"channel": "private-feed", "data": "fresh"})
    assert (await rec.next("publication")).pub.data == "fresh"


async def test_subscription_expires_without_refresh(
    server: ServerProcess, clients: list[Client]
) -> None:
    """The control: a subscription token that is not refreshed ends the subscription with
    2501 (expired, the client resubscribes) once its deadline has passed."""
    app = server.create_app(name="sub-no-refresh")
    client, rec = await connected_as(server, clients, app, "u1")
    token = app_signed_token(app, "u1", expires_in=2, channel="private-x")
    await subscribed(client, "private-x", rec, token=token)
    ctx = await rec.next("subscribing", lost, timeout=2 + EXPIRED_CLOSE_DELAY + 4)
    assert ctx.code == 2501


# --- client publish, server API effects -----------------------------------------------------------


async def test_client_publish_follows_namespace_options(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="cpub")
    set_namespaces(
        server,
        app,
        {"chat": {"allow_subscribe_for_client": True, "allow_publish_for_subscriber": True}},
    )
    client, rec = await connected_as(server, clients, app, "u1")
    public = await subscribed(client, "public:x", rec)
    with pytest.raises(CentrifugeError) as denied:
        await public.publish({"no": 1})
    assert getattr(denied.value, "code", None) == 103
    history = engine_api(server, app, "history", {"channel": "public:x", "limit": 10})
    assert history["result"]["publications"] == []

    other, other_rec = await connected_as(server, clients, app, "u2")
    await subscribed(other, "chat:room", other_rec)
    chat = client.new_subscription("chat:room", SubEvents(rec))
    await chat.subscribe()
    await chat.ready(5)
    await chat.publish({"text": "from client"})
    for r in (rec, other_rec):
        ctx = await r.next("publication")
        assert ctx.pub.data == {"text": "from client"} and ctx.pub.info.user == "u1"


@pytest.mark.parametrize(
    ("code", "reconnects"), [(3503, False), (3999, False), (4501, False), (3011, True)]
)
async def test_server_api_disconnect(
    server: ServerProcess, clients: list[Client], code: int, reconnects: bool
) -> None:
    """The client is closed with the given code and reason; it reconnects only for the
    reconnect ranges (3000-3499, 4000-4499)."""
    app = server.create_app(name=f"kick-{code}")
    client, rec = await connected_as(server, clients, app, "victim")
    engine_api(
        server,
        app,
        "disconnect",
        {"user": "victim", "disconnect": {"code": code, "reason": "bye now"}},
    )
    if reconnects:
        ctx = await rec.next("connecting", lost)
        assert (ctx.code, ctx.reason) == (code, "bye now")
        await rec.next("connected")
        assert client.state == ClientState.CONNECTED
    else:
        ctx = await rec.next("disconnected")
        assert (ctx.code, ctx.reason) == (code, "bye now")
        assert client.state == ClientState.DISCONNECTED
        assert troubles(rec) == [("disconnected", ctx)]


async def test_server_api_disconnect_reaches_only_that_user(
    server: ServerProcess, clients: list[Client]
) -> None:
    app = server.create_app(name="kick-one")
    _, rec_a = await connected_as(server, clients, app, "a")
    b, rec_b = await connected_as(server, clients, app, "b")
    engine_api(server, app, "disconnect", {"user": "a"})
    assert (await rec_a.next("disconnected")).code == 3503
    await subscribed(b, "public:still", rec_b)
    assert b.state == ClientState.CONNECTED and troubles(rec_b) == []


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
    channels = engine_api(server, app, "channels", {})
    assert "alerts" not in channels["result"]["channels"]


async def test_server_api_unsubscribe_of_a_client_side_subscription(
    server: ServerProcess, clients: list[Client]
) -> None:
    """Server API unsubscribe (code 2000) ends a client-side subscription for good."""
    app = server.create_app(name="srvapi-unsub")
    client, rec = await connected_as(server, clients, app, "u1")
    sub = await subscribed(client, "public:kicked", rec)
    engine_api(server, app, "unsubscribe", {"user": "u1", "channel": "public:kicked"})
    ctx = await rec.next("unsubscribed")
    assert ctx.code == 2000 and sub.state == SubscriptionState.UNSUBSCRIBED


# --- ping/pong ------------------------------------------------------------------------------


async def test_ping_pong_keeps_an_idle_connection(
    server: ServerProcess, clients: list[Client]
) -> None:
    """The node pings every second and drops a client that misses a pong (3012); the client
    reconnects if it hears no ping within interval + 0.5 s. Idle for several intervals, the
    connection must stay up in both directions."""
    app = server.create_app(name="ping")
    rec = Recorder()
    client = await connected(
        server, clients, rec, token=realtime_token(server, app, "u1"), max_server_ping_delay=0.5
    )
    await subscribed(client, "public:idle", rec)
    with pytest.raises(TimeoutError):  # idle for several ping intervals: nothing happens
        await rec.next("connecting", lost, timeout=PING_INTERVAL * 3.5)
    assert troubles(rec) == []
    assert client.state == ClientState.CONNECTED
    engine_api(server, app, "publish", {"channel": "public:idle", "data": "awake"})
    assert (await rec.next("publication")).pub.data == "awake"


# --- tenancy --------------------------------------------------------------------------------------


async def test_apps_are_isolated(server: ServerProcess, clients: list[Client]) -> None:
    """Same channel name in two apps: no messages, presence, history or channels cross over."""
    a, b = server.create_app(name="A"), server.create_app(name="B")
    rec = Recorder()
    client = await connected(server, clients, rec, token=realtime_token(server, a, "alice"))
    sub = await subscribed(client, "public:lobby", rec)
    published_b = engine_api(server, b, "publish", {"channel": "public:lobby", "data": "for B"})
    assert published_b["result"]["offset"] == 1
    engine_api(server, a, "publish", {"channel": "public:lobby", "data": "for A"})
    ctx = await rec.next("publication")
    assert (ctx.pub.data, ctx.pub.offset) == ("for A", 1)  # B's came first, never arrived
    assert [p.data for p in (await sub.history(limit=10)).publications] == ["for A"]

    presence_b = engine_api(server, b, "presence", {"channel": "public:lobby"})
    assert presence_b["result"]["presence"] == {}
    stats_b = engine_api(server, b, "presence_stats", {"channel": "public:lobby"})
    assert stats_b["result"].get("num_clients", 0) == 0
    history_b = engine_api(server, b, "history", {"channel": "public:lobby", "limit": 10})
    assert [p["data"] for p in history_b["result"]["publications"]] == ["for B"]
    assert engine_api(server, b, "channels", {})["result"]["channels"] == {}
    assert "public:lobby" in engine_api(server, a, "channels", {})["result"]["channels"]

    async with httpx.AsyncClient() as http:  # B's broadcast to the same room stays in B
        r = await http.post(
            f"{server.base_url}/api/broadcast",
            headers={"X-API-Key": str(b["api_key"])},
            json={"room": "public:lobby", "event": "e", "data": "B again"},
        )
    assert r.status_code == 200 and r.json()["subscriber_count"] == 0
    engine_api(server, a, "publish", {"channel": "public:lobby", "data": "A again"})
    assert (await rec.next("publication")).pub.data == "A again"


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
    assert client.state == ClientState.DISCONNECTED

    rec2 = Recorder()
    client2 = await connected(server, clients, rec2, token=realtime_token(server, b, "u"))
    sub = client2.new_subscription(
        "room", SubEvents(rec2), token=subscription_token(server, a, "u", "room")
    )
    await sub.subscribe()
    assert (await rec2.next("unsubscribed")).code == 103
    own = client2.new_subscription(
        "room2", SubEvents(rec2), token=app_signed_token(a, "u", channel="room2")
    )  # signed with A's secret, claiming A: still not a token of B
    await own.subscribe()
    assert (await rec2.next("unsubscribed")).code == 103
