"""What a node forgets when an app changes or is deleted, on this node and (through the
control message) on every other: every per-app cache, the webhook list included (M4: a
deleted app's cached webhooks made the next publish under its id fail for 30 s)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.unit.engine.fakes import Harness
from xshathra.analytics.recorder import AnalyticsRecorder
from xshathra.brokers.memory import MemoryBroker
from xshathra.engine.control import AppChanged
from xshathra.engine.node import Node
from xshathra.engine.options import EngineOptions
from xshathra.model import ChannelRef
from xshathra.presence.memory import MemoryPresenceStore
from xshathra.storage.database import Database
from xshathra.tenancy.apps import Application, AppStore
from xshathra.tenancy.tokens import TokenService

DEADLINE = 2.0


class RecordingEvents:
    """A ChannelEvents that only records which apps' caches it was told to drop."""

    def __init__(self) -> None:
        self.invalidated: list[str] = []
        self.changed = asyncio.Event()

    async def publication(
        self, ref: ChannelRef, tags: dict[str, str] | None, data: bytes, user: str | None
    ) -> None:
        pass

    async def lifecycle(self, ref: ChannelRef, event: str, user: str, client: str) -> None:
        pass

    async def user_presence(self, app_id: str, user: str, online: bool) -> None:
        pass

    async def member(self, ref: ChannelRef, user: str, added: bool) -> None:
        pass

    async def cache_miss(self, ref: ChannelRef) -> None:
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
        self.invalidated.append(app_id)
        self.changed.set()


async def test_an_app_change_drops_its_webhook_cache_here_and_on_other_nodes(
    db: Database,
) -> None:
    broker = MemoryBroker()
    events = RecordingEvents()
    node = Node(
        options=EngineOptions(),
        broker=broker,
        presence=MemoryPresenceStore(),
        apps=db.apps,
        tokens=TokenService("s" * 48),
        analytics=AnalyticsRecorder(db.analytics, "unit-node"),
        events=events,
    )
    await node.start()
    try:
        node.notify_app_changed("app-a")  # type: ignore[arg-type]
        assert events.invalidated == ["app-a"]  # at once, before any control message
        events.changed.clear()
        # What another node's change looks like here: the app_changed control message.
        await node.send_control(AppChanged(app_id="app-b"))
        await asyncio.wait_for(events.changed.wait(), DEADLINE)
        assert events.invalidated[-1] == "app-b"
    finally:
        await node.close()


class HeldStore:
    """The node's AppStore, whose next get_app answers the row as it was and then waits."""

    def __init__(self, inner: AppStore) -> None:
        self.inner = inner
        self.reading, self.release = asyncio.Event(), asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_app(self, app_id: str) -> Application | None:
        found = await self.inner.get_app(app_id)
        if not self.release.is_set():
            self.reading.set()
            await self.release.wait()
        return found


async def test_a_connect_that_read_the_app_before_its_deletion_is_closed(
    harness: Harness, db: Database
) -> None:
    """M4: a connection whose connect read the app just before the admin deleted it (the
    control message found no connection to close yet) is closed once it registers."""
    held = HeldStore(db.apps)
    harness.node.apps = held
    client = harness.open()
    client.send({"id": 1, "connect": {"token": harness.token()}})
    await asyncio.wait_for(held.reading.wait(), DEADLINE)
    applied = asyncio.Event()
    harness.node.app_change_listeners.append(lambda _: applied.set())
    assert await db.apps.delete_app(harness.app.app_id)
    await harness.node.send_control(AppChanged(app_id=harness.app.app_id))
    await asyncio.wait_for(applied.wait(), DEADLINE)  # applied while the connect still waits
    held.release.set()
    assert (await client.transport.wait_closed())[0] == 3507
