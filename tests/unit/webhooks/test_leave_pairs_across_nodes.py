"""Held webhook leaves matched across nodes (webhooks.events with its LeavePeers): a join on
one node undoes a leave held on another; the pair is reported whole or not at all, also when
the holder's delay ran out on the way or the holder is gone."""

from __future__ import annotations

import asyncio
from typing import Any

from xshathra.model import AppId, ChannelRef
from xshathra.protocol.codes import LifecycleEvent
from xshathra.webhooks.events import WebhookEvents


class RecordingEvents(WebhookEvents):
    """Reports into a list instead of the outbox; every app has a hook for everything."""

    def __init__(self, name: str, delay: float) -> None:
        super().__init__(db=None, leave_delay=delay)  # type: ignore[arg-type]
        self.name = name
        self.reported: list[tuple[str, str, str]] = []

    async def emit(
        self, ref: ChannelRef, event: str, data: bytes, user_id: str | None, **_: Any
    ) -> list[str]:
        self.reported.append((event, ref.name, user_id or ""))
        return []

    async def emit_pusher(self, ref: ChannelRef, event: dict[str, str], **_: Any) -> list[str]:
        return []  # Pusher-format events are not held: not this test's business

    async def _wanted(self, ref: ChannelRef, event: str) -> bool:
        return True


class Bus:
    """Two nodes' peers, delivering at once; `running` says which nodes are up."""

    def __init__(self, nodes: dict[str, RecordingEvents]) -> None:
        self.nodes = nodes
        self.running = set(nodes)

    def peers(self, me: str) -> Any:
        bus = self

        class Peers:
            def leave_held(
                self, app_id: str, room: str, user: str, pair: str, delay: float
            ) -> None:
                for name, node in bus.nodes.items():
                    if name != me:
                        node.leave_held_elsewhere(me, app_id, room, user, pair, delay)

            def leave_undone(
                self,
                holder: str,
                app_id: str,
                room: str,
                user: str,
                pair: str,
                event: str,
                data: bytes,
            ) -> bool:
                if holder not in bus.running:
                    return False
                bus.nodes[holder].leave_undone_here(app_id, room, user, pair, event, data)
                return True

        return Peers()


def cluster(delay: float) -> tuple[RecordingEvents, RecordingEvents, Bus]:
    a, b = RecordingEvents("a", delay), RecordingEvents("b", delay)
    bus = Bus({"a": a, "b": b})
    a.bind_peers(bus.peers("a"))
    b.bind_peers(bus.peers("b"))
    return a, b, bus


ROOM = ChannelRef(AppId("app"), "room")


async def test_a_move_within_the_delay_reports_no_pair() -> None:
    a, b, _ = cluster(0.2)
    await a.lifecycle(ROOM, LifecycleEvent.USER_LEFT, "u", "c1")
    await a.user_presence("app", "u", online=False)
    await b.lifecycle(ROOM, LifecycleEvent.USER_JOINED, "u", "c2")
    await b.user_presence("app", "u", online=True)
    await asyncio.sleep(0.3)  # past the delay: a leave still held would be reported by now
    assert a.reported == [] and b.reported == []


async def test_a_join_after_the_holders_delay_ran_out_is_reported_by_the_holder() -> None:
    a, b, _ = cluster(0.05)
    await a.lifecycle(ROOM, LifecycleEvent.ROOM_VACATED, "", "")
    await asyncio.sleep(0.1)  # a's delay ran out: the leave went out
    assert a.reported == [("room-vacated", "room", "")]
    # b's record of it ran out too: b reports its join itself.
    await b.lifecycle(ROOM, LifecycleEvent.ROOM_OCCUPIED, "", "")
    assert b.reported == [("room-occupied", "room", "")]
    # And when b still believed it held (clocks apart), a reports the join in b's stead.
    a.leave_undone_here("app", "room", "", "room", "room-occupied", b"{}")
    await asyncio.sleep(0)
    await asyncio.gather(*a._tasks)
    assert a.reported[-1] == ("room-occupied", "room", "")


async def test_a_join_whose_holder_is_gone_is_reported_here() -> None:
    a, b, bus = cluster(5.0)
    await a.user_presence("app", "u", online=False)
    bus.running.discard("a")  # stopped (reporting what it held) or died
    await b.user_presence("app", "u", online=True)
    assert b.reported == [("user-online", "", "u")]
