"""The Centrifugo-compatible server API, driven by the unmodified PyPI client `cent` pointed at
`http://HOST/realtime/api`: every method, each with an effect observed by a real
centrifuge-python subscriber or by another method."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cent import (
    AsyncClient,
    BatchRequest,
    BroadcastRequest,
    ChannelsRequest,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RefreshRequest,
    SubscribeRequest,
    UnsubscribeRequest,
)
from cent import (
    Client as Cent,
)
from cent.dto import Disconnect
from cent.exceptions import CentApiResponseError, CentUnauthorizedError
from centrifuge import Client, ClientState, Subscription

from tests.support.clients import Recorder, SubEvents, make_client, realtime_token
from tests.support.server import ServerProcess

Json = dict[str, Any]


@dataclass
class Live:
    """An app, a `cent` client for it, and a connected centrifuge client on `public:api`."""

    app: Json
    cent: Cent
    rec: Recorder
    client: Client
    sub: Subscription


@pytest.fixture
async def live(server: ServerProcess) -> AsyncIterator[Live]:
    app = server.create_app(name="cent")
    rec = Recorder()
    client = make_client(server, rec, token=realtime_token(server, app, "u1"))
    await client.connect()
    sub = client.new_subscription("public:api", SubEvents(rec))
    await sub.subscribe()
    await sub.ready(5)
    yield Live(app, Cent(f"{server.base_url}/realtime/api", str(app["api_key"])), rec, client, sub)
    await client.disconnect()


async def call(fn: Any, request: Any) -> Any:
    """cent's sync client blocks: run it in a thread so the event loop keeps delivering."""
    return await asyncio.to_thread(fn, request)


async def test_publish(live: Live) -> None:
    result = await call(
        live.cent.publish, PublishRequest(channel="public:api", data={"a": 1}, tags={"k": "v"})
    )
    assert result.offset == 1 and result.epoch
    ctx = await live.rec.next("publication")
    assert ctx.pub.data == {"a": 1} and ctx.pub.tags == {"k": "v"} and ctx.pub.offset == 1
    history = await live.sub.history(limit=10)
    assert [p.data for p in history.publications] == [{"a": 1}]
    assert history.epoch == result.epoch


async def test_broadcast(live: Live) -> None:
    both = await call(
        live.cent.broadcast, BroadcastRequest(channels=["public:api", "public:other"], data="b")
    )
    assert len(both.responses) == 2
    assert [r.result.offset for r in both.responses] == [1, 1]
    assert (await live.rec.next("publication")).pub.data == "b"
    other = await call(live.cent.history, HistoryRequest(channel="public:other", limit=10))
    assert [p.data for p in other.publications] == ["b"]


async def test_subscribe_and_unsubscribe(live: Live) -> None:
    await call(live.cent.subscribe, SubscribeRequest(user="u1", channel="alerts"))
    assert (await live.rec.next("server_subscribed")).channel == "alerts"
    await call(live.cent.publish, PublishRequest(channel="alerts", data="fire"))
    ctx = await live.rec.next("server_publication")
    assert (ctx.channel, ctx.pub.data) == ("alerts", "fire")
    channels = await call(live.cent.channels, ChannelsRequest())
    assert channels.channels["alerts"].num_clients == 1

    await call(live.cent.unsubscribe, UnsubscribeRequest(user="u1", channel="alerts"))
    assert (await live.rec.next("server_unsubscribed")).channel == "alerts"
    channels = await call(live.cent.channels, ChannelsRequest())
    assert "alerts" not in channels.channels and "public:api" in channels.channels

    await call(live.cent.unsubscribe, UnsubscribeRequest(user="u1", channel="public:api"))
    assert (await live.rec.next("unsubscribed")).code == 2000


async def test_subscribe_one_client_of_a_user(server: ServerProcess, live: Live) -> None:
    """`client` narrows subscribe to one connection of the user."""
    other_rec = Recorder()
    other = make_client(server, other_rec, token=realtime_token(server, live.app, "u1"))
    await other.connect()
    await other.ready(5)
    try:
        await call(
            live.cent.subscribe,
            SubscribeRequest(user="u1", channel="only-one", client=other.client_id),
        )
        assert (await other_rec.next("server_subscribed")).channel == "only-one"
        await call(live.cent.publish, PublishRequest(channel="only-one", data=1))
        assert (await other_rec.next("server_publication")).pub.data == 1
        assert live.rec.kinds("server_subscribed", "server_publication") == []
    finally:
        await other.disconnect()


async def test_disconnect(live: Live) -> None:
    await call(live.cent.disconnect, DisconnectRequest(user="u1"))
    ctx = await live.rec.next("disconnected")
    assert ctx.code == 3503 and live.client.state == ClientState.DISCONNECTED


async def test_disconnect_with_custom_code(live: Live) -> None:
    await call(
        live.cent.disconnect,
        DisconnectRequest(user="u1", disconnect=Disconnect(code=4600, reason="custom")),
    )
    ctx = await live.rec.next("disconnected")
    assert (ctx.code, ctx.reason) == (4600, "custom")


async def test_refresh_expired(live: Live) -> None:
    """`refresh` with expired=true closes the connection as expired (3005): the client
    reconnects (its token is still valid) and resubscribes."""
    first_client_id = live.client.client_id
    await call(live.cent.refresh, RefreshRequest(user="u1", expired=True))
    await live.rec.next("connecting", lambda ctx: ctx.code == 3005)
    await live.rec.next("connected", timeout=10)
    assert live.client.client_id != first_client_id
    await live.rec.next("subscribed")
    await call(live.cent.publish, PublishRequest(channel="public:api", data="back"))
    assert (await live.rec.next("publication")).pub.data == "back"


async def test_presence_and_presence_stats(server: ServerProcess, live: Live) -> None:
    presence = await call(live.cent.presence, PresenceRequest(channel="public:api"))
    assert list(presence.presence) == [live.client.client_id]
    assert presence.presence[live.client.client_id].user == "u1"
    stats = await call(live.cent.presence_stats, PresenceStatsRequest(channel="public:api"))
    assert (stats.num_clients, stats.num_users) == (1, 1)

    await live.sub.unsubscribe()
    await live.rec.next("unsubscribed")
    stats = await call(live.cent.presence_stats, PresenceStatsRequest(channel="public:api"))
    assert (stats.num_clients, stats.num_users) == (0, 0)


async def test_history_and_history_remove(live: Live) -> None:
    for i in range(3):
        await call(live.cent.publish, PublishRequest(channel="public:api", data=i))
    history = await call(
        live.cent.history, HistoryRequest(channel="public:api", limit=2, reverse=True)
    )
    assert [p.data for p in history.publications] == [2, 1] and history.offset == 3
    forward = await call(live.cent.history, HistoryRequest(channel="public:api", limit=2))
    assert [p.data for p in forward.publications] == [0, 1]
    await call(live.cent.history_remove, HistoryRemoveRequest(channel="public:api"))
    emptied = await call(live.cent.history, HistoryRequest(channel="public:api", limit=10))
    assert emptied.publications == [] and emptied.offset == 3
    assert (await live.sub.history(limit=10)).publications == []


async def test_channels_and_info(live: Live) -> None:
    channels = await call(live.cent.channels, ChannelsRequest())
    assert set(channels.channels) == {"public:api"}
    assert channels.channels["public:api"].num_clients == 1
    assert (await call(live.cent.channels, ChannelsRequest(pattern="public:*"))).channels
    filtered = await call(live.cent.channels, ChannelsRequest(pattern="nothing*"))
    assert filtered.channels == {}
    info = await call(live.cent.info, InfoRequest())
    node = info.nodes[0]
    assert (node.num_clients, node.num_users, node.num_channels) == (1, 1, 1)

    await live.sub.unsubscribe()
    await live.rec.next("unsubscribed")
    assert (await call(live.cent.channels, ChannelsRequest())).channels == {}


async def test_batch(live: Live) -> None:
    result = await call(
        live.cent.batch,
        BatchRequest(
            requests=[
                PublishRequest(channel="public:api", data="one"),
                PresenceStatsRequest(channel="public:api"),
                HistoryRequest(channel="public:api", limit=10),
            ]
        ),
    )
    assert result.replies[0].offset == 1
    assert result.replies[1].num_clients == 1
    assert [p.data for p in result.replies[2].publications] == ["one"]  # in order
    assert (await live.rec.next("publication")).pub.data == "one"


async def test_batch_error_entry(server: ServerProcess, live: Live) -> None:
    """One failing command in a batch answers its own error; the others still run."""
    r = httpx.post(
        f"{server.base_url}/realtime/api/batch",
        headers={"X-API-Key": str(live.app["api_key"])},
        json={
            "commands": [
                {"publish": {"channel": "bad channel", "data": 1}},
                {"publish": {"channel": "public:api", "data": 2}},
            ]
        },
    )
    assert r.status_code == 200, r.text
    replies = r.json()["replies"]
    assert replies[0]["error"]["code"] == 107 and replies[1]["publish"]["offset"] == 1
    assert (await live.rec.next("publication")).pub.data == 2


async def test_async_cent_client(live: Live, server: ServerProcess) -> None:
    """cent's AsyncClient works the same."""
    cent = AsyncClient(f"{server.base_url}/realtime/api", str(live.app["api_key"]))
    try:
        result = await cent.publish(PublishRequest(channel="public:api", data="async"))
        assert result.offset == 1
        assert (await live.rec.next("publication")).pub.data == "async"
        presence = await cent.presence(PresenceRequest(channel="public:api"))
        assert [c.user for c in presence.presence.values()] == ["u1"]
    finally:
        await cent.close()


async def test_api_is_scoped_to_the_key_s_app(server: ServerProcess, live: Live) -> None:
    """Another app's key sees none of this app's channels, presence or subscribers."""
    other = server.create_app(name="cent-other")
    cent_b = Cent(f"{server.base_url}/realtime/api", str(other["api_key"]))
    assert (await call(cent_b.channels, ChannelsRequest())).channels == {}
    presence = await call(cent_b.presence, PresenceRequest(channel="public:api"))
    assert presence.presence == {}
    await call(cent_b.publish, PublishRequest(channel="public:api", data="from B"))
    await call(cent_b.disconnect, DisconnectRequest(user="u1"))
    await call(live.cent.publish, PublishRequest(channel="public:api", data="from A"))
    assert (await live.rec.next("publication")).pub.data == "from A"
    assert live.client.state == ClientState.CONNECTED


async def test_errors(server: ServerProcess) -> None:
    app = server.create_app(name="cent-err")
    cent = Cent(f"{server.base_url}/realtime/api", str(app["api_key"]))
    with pytest.raises(CentApiResponseError) as bad:
        await call(cent.publish, PublishRequest(channel="bad channel", data=1))
    assert bad.value.code == 107
    with pytest.raises(CentApiResponseError) as unavailable:
        await call(cent.history, HistoryRequest(channel="no-history", limit=1))
    assert unavailable.value.code == 108
    with pytest.raises(CentUnauthorizedError):
        await call(
            Cent(f"{server.base_url}/realtime/api", "wrong").publish,
            PublishRequest(channel="c", data=1),
        )
    r = httpx.post(
        f"{server.base_url}/realtime/api/nope", headers={"X-API-Key": str(app["api_key"])}, json={}
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == 104
    r = httpx.post(
        f"{server.base_url}/realtime/api/publish",
        headers={"Authorization": f"apikey {app['api_key']}", "content-type": "application/json"},
        content=b"{broken",
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == 107
