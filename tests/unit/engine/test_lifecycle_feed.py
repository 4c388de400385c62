"""The app-wide lifecycle feed of the live console (engine/lifecycle.py) on real nodes: two
nodes whose memory brokers share one control bus, as a Redis or NATS cluster does. Events of a
watched app reach the watcher from the other node, in order; another app's never do; nothing
goes on the bus while nobody watches; webhooks hear each event once, watched or not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.unit.engine.conftest import SECRET, create_app
from tests.unit.engine.fakes import Client, FakeTransport, Harness
from xshathra.analytics.recorder import AnalyticsRecorder
from xshathra.brokers.memory import MemoryBroker
from xshathra.engine.client import ClientSession
from xshathra.engine.control import ConsoleWatch, LifecycleNotice, decode_control
from xshathra.engine.lifecycle import AppEvent
from xshathra.engine.node import Node
from xshathra.engine.options import EngineOptions
from xshathra.model import ChannelRef
from xshathra.presence.memory import MemoryPresenceStore
from xshathra.protocol.codes import LifecycleEvent
from xshathra.storage.database import Database
from xshathra.tenancy.tokens import TokenService

DEADLINE = 5.0


class BusBroker(MemoryBroker):
    """A memory broker whose control messages reach every node on `bus` (and are kept)."""

    def __init__(self, bus: list[BusBroker]) -> None:
        super().__init__()
        self.bus = bus
        bus.append(self)
        self.sent: list[Any] = []

    async def publish_control(self, data: bytes) -> None:
        self.sent.append(decode_control(data))
        for broker in self.bus:
            if broker._handler is not None:
                broker._handler.on_control(data)

    def feed_messages(self) -> list[Any]:
        return [m for m in self.sent if isinstance(m, ConsoleWatch | LifecycleNotice)]


class CountingEvents:
    """Webhook events as the node tells them: counted, to show none is told twice."""

    def __init__(self) -> None:
        self.lifecycle_calls: list[tuple[str, str, str]] = []

    async def publication(self, *args: Any) -> None:
        return None

    async def lifecycle(
        self, ref: ChannelRef, event: LifecycleEvent, user: str, client: str
    ) -> None:
        self.lifecycle_calls.append((ref.name, event.value, client))

    async def user_presence(self, app_id: str, user: str, online: bool) -> None:
        pass

    async def member(self, ref: Any, user: str, added: bool) -> None:
        pass

    async def cache_miss(self, ref: Any) -> None:
        pass

    def leave_held_elsewhere(
        self, holder: str, app_id: str, room: str, user: str, pair: str, delay: float
    ) -> None:
        pass

    def leave_undone_here(
        self, app_id: str, room: str, user: str, pair: str, event: str, data: bytes
    ) -> None:
        pass

    def invalidate(self, app_id: str) -> None:
        pass


@pytest.fixture
async def pair(db: Database) -> AsyncIterator[tuple[list[Harness], list[BusBroker], Any]]:
    bus: list[BusBroker] = []
    events = CountingEvents()
    tokens = TokenService(SECRET)
    app = await create_app(db)
    harnesses = []
    for name in ("a", "b"):
        node = Node(
            options=EngineOptions(node_name=name, node_stats_interval=0.2),
            broker=BusBroker(bus),
            presence=MemoryPresenceStore(),
            apps=db.apps,
            tokens=tokens,
            analytics=AnalyticsRecorder(db.analytics, f"unit-{name}"),
            events=events,
        )
        await node.start()
        harnesses.append(Harness(node, app, tokens))
    try:
        yield harnesses, bus, events
    finally:
        for h in harnesses:
            await h.node.close()


async def _until(check: Any) -> None:
    """Until `check()` holds: what it reads is written by the nodes' background tasks."""
    async with asyncio.timeout(DEADLINE):
        while not check():  # noqa: ASYNC110 - no event to wait on in the code under test
            await asyncio.sleep(0.01)


async def test_nobody_watching_puts_nothing_on_the_bus(
    pair: tuple[list[Harness], list[BusBroker], CountingEvents],
) -> None:
    (a, _), bus, events = pair
    client = await a.connect("u1")
    await client.subscribe("public:chat")
    client.session.disconnect(3000, "bye")
    # joined and left (and occupied, vacated) for webhooks
    await _until(lambda: len(events.lifecycle_calls) == 4)
    assert [m for b in bus for m in b.feed_messages()] == []


async def test_a_watcher_on_one_node_hears_the_other_nodes_events_of_its_app_only(
    pair: tuple[list[Harness], list[BusBroker], CountingEvents], db: Database
) -> None:
    (a, b), bus, events = pair
    await _until(lambda: len(b.node.cluster.peers()) == 1)  # b knows a is live
    heard: list[AppEvent | None] = []
    stop = await b.node.watch_lifecycle(a.app.app_id, heard.append)
    other = await create_app(db)

    stranger = await a.connect("stranger", app=other)  # another app, same node
    await stranger.subscribe("public:chat")
    client = await a.connect("u1")
    await client.subscribe("public:chat")
    await client.result("unsubscribe", {"channel": "public:chat"})
    client.session.disconnect(3000, "bye")
    await _until(lambda: len(heard) == 4)
    assert [(e.kind, e.channel, e.user, e.node) for e in heard if e] == [
        ("connected", "", "u1", "a"),
        ("subscribed", "public:chat", "u1", "a"),
        ("unsubscribed", "public:chat", "u1", "a"),
        ("disconnected", "", "u1", "a"),
    ]
    assert {e.client for e in heard if e} == {client.session.client_id}
    assert {e.transport for e in heard if e} == {"websocket"}
    # Webhooks heard the client's join and leave once each, not again for the console.
    mine = client.session.client_id
    await _until(lambda: sum(c == mine for _, _, c in events.lifecycle_calls) == 2)
    await asyncio.sleep(0.05)  # anything told twice would be queued by now
    assert sorted(e for _, e, c in events.lifecycle_calls if c == mine) == [
        "user-joined",
        "user-left",
    ], events.lifecycle_calls

    # Once the watcher stops, its node no longer asks and hears nothing more.
    stop()
    assert not b.node.lifecycle.watched_here(a.app.app_id)
    again = await a.connect("u2")
    await _until(lambda: any(isinstance(m, LifecycleNotice) for m in bus[0].sent[-3:]))
    assert len(heard) == 4
    again.session.disconnect(3000, "bye")


async def test_a_watcher_hears_its_own_nodes_events_and_none_when_the_node_stops(
    db: Database,
) -> None:
    bus: list[BusBroker] = []
    tokens = TokenService(SECRET)
    app = await create_app(db)
    node = Node(
        options=EngineOptions(),
        broker=BusBroker(bus),
        presence=MemoryPresenceStore(),
        apps=db.apps,
        tokens=tokens,
        analytics=AnalyticsRecorder(db.analytics, "unit"),
    )
    await node.start()
    heard: list[AppEvent | None] = []
    await node.watch_lifecycle(app.app_id, heard.append)
    transport = FakeTransport()
    client = Client(ClientSession(node, transport), transport)
    token = tokens.mint_connection_token(app.app_id, "u1", 600).token
    assert "connect" in await client.call("connect", {"token": token})
    await _until(lambda: len(heard) == 1)
    assert heard[0] is not None and heard[0].kind == "connected"
    # One node alone: nothing forwarded over the bus (nobody elsewhere asked).
    assert not [m for m in bus[0].sent if isinstance(m, LifecycleNotice)]
    await node.close()
    assert heard[-1] is None  # the console's stream ends as the node stops
