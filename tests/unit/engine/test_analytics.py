"""What the node counts for analytics, read back as the snapshot `/api/analytics` serves."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.unit.engine.conftest import MakeHarness, create_app
from tests.unit.engine.fakes import Harness
from xshathra.analytics.recorder import AnalyticsRecorder
from xshathra.storage.database import Database
from xshathra.tenancy.apps import NamespaceOptions

OPEN = NamespaceOptions(allow_subscribe_for_client=True, allow_publish_for_client=True)


def _recorder(h: Harness) -> AnalyticsRecorder:
    analytics = h.node.analytics
    assert isinstance(analytics, AnalyticsRecorder)
    return analytics


async def test_snapshot_counts_connections_events_and_users(make_harness: MakeHarness) -> None:
    """Connections opened and open now, publications of any origin and those of the API,
    users online now and seen in the period."""
    h = await make_harness(namespaces={"open": OPEN})
    a1, _a2, b = await h.connect("alice"), await h.connect("alice"), await h.connect("bob")
    await h.publish("open:x", 1)  # server API
    await h.publish("open:x", 2)
    await a1.result("publish", {"channel": "open:x", "data": 3})  # client
    snap = await _recorder(h).snapshot(h.app.app_id, 3600)
    assert snap.connections_total == 3 and snap.connections_current == 3
    assert snap.events_total == 3 and snap.events_broadcasts == 2
    assert snap.users_online == 2 and snap.users_total == 2

    b.session.disconnect(3000)
    snap = await _recorder(h).snapshot(h.app.app_id, 3600)
    assert snap.connections_total == 3 and snap.connections_current == 2
    assert snap.users_online == 1 and snap.users_total == 2


async def test_flushing_does_not_change_the_figures(make_harness: MakeHarness) -> None:
    """Counts moved to the database read the same as counts still in memory: nothing is lost
    or counted twice."""
    h = await make_harness()
    await h.connect("alice")
    await h.connect("bob")
    await h.publish("public:f", 1)
    before = await _recorder(h).snapshot(h.app.app_id, 86400)
    await _recorder(h).flush()
    after = await _recorder(h).snapshot(h.app.app_id, 86400)
    assert (
        (
            after.connections_total,
            after.connections_current,
            after.events_total,
            after.events_broadcasts,
            after.users_online,
            after.users_total,
        )
        == (
            before.connections_total,
            before.connections_current,
            before.events_total,
            before.events_broadcasts,
            before.users_online,
            before.users_total,
        )
        == (2, 2, 1, 1, 2, 2)
    )
    assert sum(p.connections for p in after.series) == 2
    assert sum(p.events for p in after.series) == 1


async def test_snapshot_is_per_app(make_harness: MakeHarness, db: Database) -> None:
    """Another app's connections and publications are not counted."""
    h = await make_harness()
    other = await create_app(db)
    await h.connect("alice", app=other)
    await h.publish("public:o", 1, app=other)
    snap = await _recorder(h).snapshot(h.app.app_id, 3600)
    assert (snap.connections_total, snap.connections_current, snap.events_total) == (0, 0, 0)
    assert snap.users_online == 0 and snap.users_total == 0


async def test_refused_connections_are_not_counted(harness: Harness) -> None:
    """A connect that fails (bad token) opens nothing and counts nothing."""
    client, _ = await harness.connect_reply("garbage")
    assert client.transport.closed is not None
    snap = await _recorder(harness).snapshot(harness.app.app_id, 3600)
    assert snap.connections_total == 0


async def test_users_have_a_series_of_distinct_users_per_bucket(
    make_harness: MakeHarness, db: Database
) -> None:
    """Each point carries the distinct users active in its bucket (kept per hour): a user
    seen two hours ago counts there only; one connected now counts in this hour even after
    leaving, and a day's point unites its hours."""
    import time

    h = await make_harness()
    recorder = _recorder(h)
    now = int(time.time())
    hour = now // 3600 * 3600
    await db.analytics.flush({}, {(h.app.app_id, hour - 7200, "carol")}, "other", {}, now)
    _alice, bob = await h.connect("alice"), await h.connect("bob")
    await recorder.flush()
    bob.session.disconnect(3000)
    await recorder.flush()
    day = await recorder.snapshot(h.app.app_id, 86400)
    by_time = {p.timestamp: p.users for p in day.series}
    assert by_time[hour] == 2  # alice and bob: bob left, but was active this hour
    assert by_time[hour - 7200] == 1 and by_time[hour - 3600] == 0
    assert day.users_total == 3
    minutes = await recorder.snapshot(h.app.app_id, 3600)
    assert minutes.series[-1].users == 2  # a minute's point has its hour's figure
    month = await recorder.snapshot(h.app.app_id, 30 * 86400)
    assert month.series[-1].users >= 2  # today's (carol too when two hours ago was today)


class _SlowFlush:
    """The SQL store, with each flush's write held until the test lets it commit."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.entered = asyncio.Event()
        self.commit = asyncio.Event()

    async def flush(self, *args: Any) -> None:
        self.entered.set()
        await self.commit.wait()
        await self._store.flush(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_a_snapshot_during_a_flush_sees_what_is_being_written(db: Database) -> None:
    """A flush takes the counts out of memory before its write commits: a snapshot read in
    between must still count them (a just acknowledged broadcast was missing from
    /api/analytics on PostgreSQL), and never twice."""
    slow = _SlowFlush(db.analytics)
    recorder = AnalyticsRecorder(slow, "unit-slow")
    recorder.publication("app-1", broadcast=True)
    flushing = asyncio.create_task(recorder.flush())
    await slow.entered.wait()
    reading = asyncio.create_task(recorder.snapshot("app-1", 3600))
    await asyncio.sleep(0)  # let the snapshot run as far as it can while the write waits
    slow.commit.set()
    await flushing
    snap = await reading
    assert snap.events_total == 1 and snap.events_broadcasts == 1
