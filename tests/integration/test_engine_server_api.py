"""The Centrifugo-compatible server API, driven by the unmodified PyPI client `cent` pointed at
`http://HOST/realtime/api`: every method, each with an observable effect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cent import (
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
from cent.exceptions import CentApiResponseError, CentUnauthorizedError
from centrifuge import Client

from tests.support.clients import Recorder, SubEvents, make_client, realtime_token
from tests.support.server import ServerProcess

Json = dict[str, Any]


@pytest.fixture
async def subscribed(server: ServerProcess) -> AsyncIterator[tuple[Cent, Recorder, Client, Json]]:
    """An app, a `cent` client for it, and a live centrifuge client on `public:api`."""
    app = server.create_app(name="cent")
    rec = Recorder()
    client = make_client(server, rec, token=realtime_token(server, app, "u1"))
    await client.connect()
    sub = client.new_subscription("public:api", SubEvents(rec))
    await sub.subscribe()
    await sub.ready(5)
    yield Cent(f"{server.base_url}/realtime/api", str(app["api_key"])), rec, client, app
    await client.disconnect()


async def call(fn: Any, request: Any) -> Any:
    """cent's sync client blocks: run it in a thread so the event loop keeps delivering."""
    return await asyncio.to_thread(fn, request)


async def test_publish_and_broadcast(subscribed: tuple[Cent, Recorder, Client, Json]) -> None:
    cent, rec, _, _ = subscribed
    result = await call(
        cent.publish, PublishRequest(channel="public:api", data={"a": 1}, tags={"k": "v"})
    )
    assert result.offset == 1 and result.epoch
    ctx = await rec.next("publication")
    assert ctx.pub.data == {"a": 1} and ctx.pub.tags == {"k": "v"}
    both = await call(cent.broadcast, BroadcastRequest(channels=["public:api", "other"], data="b"))
    assert len(both.responses) == 2 and both.responses[0].result.offset == 2
    assert (await rec.next("publication")).pub.data == "b"


async def test_presence_history_and_removal(
    subscribed: tuple[Cent, Recorder, Client, Json],
) -> None:
    cent, _, _, _ = subscribed
    presence = await call(cent.presence, PresenceRequest(channel="public:api"))
    assert [c.user for c in presence.presence.values()] == ["u1"]
    stats = await call(cent.presence_stats, PresenceStatsRequest(channel="public:api"))
    assert (stats.num_clients, stats.num_users) == (1, 1)
    for i in range(3):
        await call(cent.publish, PublishRequest(channel="public:api", data=i))
    history = await call(cent.history, HistoryRequest(channel="public:api", limit=2, reverse=True))
    assert [p.data for p in history.publications] == [2, 1] and history.offset == 3
    await call(cent.history_remove, HistoryRemoveRequest(channel="public:api"))
    emptied = await call(cent.history, HistoryRequest(channel="public:api", limit=10))
    assert emptied.publications == [] and emptied.offset == 3


async def test_channels_and_info(subscribed: tuple[Cent, Recorder, Client, Json]) -> None:
    cent, _, _, _ = subscribed
    channels = await call(cent.channels, ChannelsRequest())
    assert channels.channels["public:api"].num_clients == 1
    filtered = await call(cent.channels, ChannelsRequest(pattern="nothing*"))
    assert filtered.channels == {}
    info = await call(cent.info, InfoRequest())
    assert info.nodes[0].num_clients == 1 and info.nodes[0].num_channels == 1


async def test_subscribe_unsubscribe_disconnect_refresh(
    subscribed: tuple[Cent, Recorder, Client, Json],
) -> None:
    cent, rec, _, _ = subscribed
    await call(cent.subscribe, SubscribeRequest(user="u1", channel="alerts"))
    assert (await rec.next("server_subscribed")).channel == "alerts"
    await call(cent.unsubscribe, UnsubscribeRequest(user="u1", channel="alerts"))
    assert (await rec.next("server_unsubscribed")).channel == "alerts"
    await call(cent.refresh, RefreshRequest(user="u1", expired=True))
    # Expired is a reconnect code: the client goes back to connecting, then connects again.
    await rec.next("connecting", lambda ctx: ctx.code == 3005)
    await rec.next("connected", timeout=10)
    await call(cent.disconnect, DisconnectRequest(user="u1"))
    assert (await rec.next("disconnected")).code == 3503


async def test_batch(subscribed: tuple[Cent, Recorder, Client, Json]) -> None:
    cent, rec, _, _ = subscribed
    result = await call(
        cent.batch,
        BatchRequest(
            requests=[
                PublishRequest(channel="public:api", data="one"),
                PresenceStatsRequest(channel="public:api"),
            ]
        ),
    )
    assert result.replies[0].offset == 1 and result.replies[1].num_clients == 1
    assert (await rec.next("publication")).pub.data == "one"


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
