"""Turns channel events into durable webhook deliveries (the transactional outbox).

`emit` writes one delivery row per matching webhook before it returns, so whoever awaits it
(a publish being acknowledged) knows the event is safely queued. Webhook lists are cached per
app and invalidated when they change. Past the app's cap on pending deliveries, the extra rows
are recorded as failed ("dropped") and counted.

A publication's rows are written *before* the broker publish and held (not due) until it went
out: a failed write then answers an error with nothing published, so the client's retry is no
duplicate. After the publish the rows are released (batched by the dispatcher, off the publish
path); if the publish fails they are removed. Should the node die between the two, the hold ends
and the rows are delivered anyway: at least once, as every delivery.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Protocol

import msgspec

from xshathra.model import AppId, ChannelRef
from xshathra.protocol.codes import LifecycleEvent
from xshathra.webhooks import pusher
from xshathra.webhooks.models import NewDelivery, Webhook

if TYPE_CHECKING:
    from xshathra.webhooks.dispatcher import WebhookDispatcher
    from xshathra.webhooks.store import WebhookStores

CACHE_SECONDS = 30.0
# How long a publication's deliveries wait for the publish to go out before they fall due
# anyway (only a node that died in between leaves them held that long). Longer than a broker
# operation may take (their timeouts are 5 s), so a slow publish is not overtaken.
HOLD_SECONDS = 15.0

log = logging.getLogger("xshathra.webhooks")

# (app id, room, user, pair): what a held leave waits for. The pair names which of the three
# leave/join pairs it is, so that an anonymous user's user-left never meets a room-vacated.
HeldKey = tuple[str, str, str, str]


class LeavePeers(Protocol):
    """The other nodes, over the control bus (the node implements it): so that a user or room
    that left on one node and came back on another within the delay reports no pair either."""

    def leave_held(self, app_id: str, room: str, user: str, pair: str, delay: float) -> None:
        """Tell the others this node holds a leave of `pair` for (room, user)."""

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
        """Tell node `holder` its held leave was undone here by `event` (not reported here).
        False when `holder` is not running (stopped, having reported its held leaves, or
        died): then nobody would report the join, so the caller does."""


class WebhookBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The JSON every receiver gets (SPEC §5)."""

    id: str
    app_id: str
    event: str
    room: str
    data: msgspec.Raw
    user_id: str | None = None
    timestamp: int


_encoder = msgspec.json.Encoder()


TEST_EVENT = "test"


def make_test_delivery(webhook: Webhook) -> NewDelivery:
    """A delivery of the `test` event to one webhook, whatever events it wants: a person
    checks their receiver (URL, signature check) without waiting for real traffic."""
    event_id = "evt_" + secrets.token_hex(12)
    body = _encoder.encode(
        WebhookBody(
            id=event_id,
            app_id=webhook.app_id,
            event=TEST_EVENT,
            room="",
            data=msgspec.Raw(b'{"test":true,"message":"A test event: your receiver works."}'),
            timestamp=int(time.time() * 1000),
        )
    ).decode()
    return NewDelivery(
        id="dlv_" + secrets.token_hex(12),
        webhook_id=webhook.id,
        app_id=webhook.app_id,
        event_id=event_id,
        event=TEST_EVENT,
        room="",
        body=body,
    )


class HeldDeliveries:
    """A publication's deliveries, written and held until the publish went out."""

    __slots__ = ("_events", "ids")

    def __init__(self, events: WebhookEvents, ids: list[str]) -> None:
        self._events = events
        self.ids = ids

    def release(self) -> None:
        """The publication went out: make the deliveries due."""
        self._events.released(self.ids)

    async def cancel(self) -> None:
        """The publication failed: remove them. Never raises (the caller is already failing);
        logs the error's type only, as a driver's text can hold SQL parameters."""
        try:
            await self._events.cancel(self.ids)
        except Exception as exc:
            log.warning("webhook deliveries of a failed publish kept: %s", type(exc).__name__)


class WebhookEvents:
    def __init__(
        self,
        db: WebhookStores,
        dispatcher: WebhookDispatcher | None = None,
        *,
        max_pending_per_app: int | None = None,
        leave_delay: float = 0.0,
    ) -> None:
        self._db = db
        self._dispatcher = dispatcher
        self._max_pending = max_pending_per_app
        self._cache: dict[str, tuple[float, list[Webhook]]] = {}
        # user-left, room-vacated and user-offline wait this long (seconds): a user or room
        # back within it (a page reload, a connection moved to another node) cancels both the
        # leave and the join that undoes it.
        self._leave_delay = leave_delay
        self._held: dict[HeldKey, list[_HeldLeave]] = {}
        # Leaves other nodes hold (their LeaveHeld): key -> [(holder node, until (monotonic))].
        self._held_elsewhere: dict[HeldKey, list[tuple[str, float]]] = {}
        self._peers: LeavePeers | None = None
        self._tasks: set[asyncio.Task[object]] = set()

    def bind_peers(self, peers: LeavePeers) -> None:
        self._peers = peers

    def invalidate(self, app_id: str) -> None:
        self._cache.pop(app_id, None)

    async def _webhooks(self, app_id: str) -> list[Webhook]:
        now = time.monotonic()
        cached = self._cache.get(app_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        hooks = [h for h in await self._db.webhooks.list_webhooks(app_id) if h.enabled]
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[app_id] = (now + CACHE_SECONDS, hooks)
        return hooks

    def released(self, ids: list[str]) -> None:
        if self._dispatcher is not None:
            self._dispatcher.release(ids)
        # Without a dispatcher here the rows fall due when their hold ends.

    async def cancel(self, ids: list[str]) -> None:
        await self._db.deliveries.cancel(ids)

    async def emit(
        self,
        ref: ChannelRef,
        event: str,
        data: bytes,
        user_id: str | None,
        *,
        hold: bool = False,
    ) -> list[str]:
        """Queue the event for every webhook of the app that wants it; return the ids queued.
        With `hold` the rows are not due until released (see `HeldDeliveries`)."""
        hooks = [h for h in await self._webhooks(ref.app_id) if h.wants(event, ref.name)]
        if not hooks:
            return []
        event_id = "evt_" + secrets.token_hex(12)
        body = _encoder.encode(
            WebhookBody(
                id=event_id,
                app_id=ref.app_id,
                event=event,
                room=ref.name,
                data=msgspec.Raw(data),
                user_id=user_id or None,
                timestamp=int(time.time() * 1000),
            )
        ).decode()
        return await self._enqueue(ref, hooks, event_id, event, body, hold)

    async def emit_pusher(
        self, ref: ChannelRef, event: dict[str, str], *, hold: bool = False
    ) -> list[str]:
        """Queue a Pusher-format event for the webhooks that list its name (webhooks.pusher)."""
        name = event["name"]
        hooks = [h for h in await self._webhooks(ref.app_id) if h.enabled and name in h.events]
        if not hooks:
            return []
        event_id = "evt_" + secrets.token_hex(12)
        return await self._enqueue(ref, hooks, event_id, name, pusher.body(event), hold)

    async def _enqueue(
        self,
        ref: ChannelRef,
        hooks: list[Webhook],
        event_id: str,
        event: str,
        body: str,
        hold: bool,
    ) -> list[str]:
        items = [
            NewDelivery(
                id="dlv_" + secrets.token_hex(12),
                webhook_id=h.id,
                app_id=ref.app_id,
                event_id=event_id,
                event=event,
                room=ref.name,
                body=body,
            )
            for h in hooks
        ]
        dropped = await self._db.deliveries.enqueue(
            items, max_pending=self._max_pending, hold_seconds=HOLD_SECONDS if hold else 0.0
        )
        if self._dispatcher is not None:
            if dropped:
                self._dispatcher.outcomes["dropped"] += dropped
            if not hold:
                self._dispatcher.wake()
        return [d.id for d in items[: len(items) - dropped]]

    # --- what the engine calls ----------------------------------------------------------------

    async def publication(
        self, ref: ChannelRef, tags: dict[str, str] | None, data: bytes, user: str | None
    ) -> HeldDeliveries | None:
        """Before the publish: write the deliveries, held until `release` (or `cancel`)."""
        event = (tags or {}).get("event") or "publication"
        ids = await self.emit(ref, event, data, user, hold=True)
        if event.startswith("client-"):
            found = pusher.client_event(ref.name, event, data, user)
            ids += await self.emit_pusher(ref, found, hold=True)
        return HeldDeliveries(self, ids) if ids else None

    async def lifecycle(
        self, ref: ChannelRef, event: LifecycleEvent, user: str, client: str
    ) -> None:
        # Pusher-format webhooks (SPEC §10) are reported as they happen, never held.
        found = pusher.lifecycle_event(event, ref.name)
        if found is not None:
            await self.emit_pusher(ref, found)
        data = _encoder.encode({"channel": ref.name, "client": client} if client else {})
        await self._paired(ref, event.value, user, data)

    async def user_presence(self, app_id: str, user: str, online: bool) -> None:
        """A user's first connection opened (online) or last closed (offline), cluster-wide.
        Events of no room: room filters do not apply."""
        event = "user-online" if online else "user-offline"
        await self._paired(ChannelRef(AppId(app_id), ""), event, user, b"{}")

    async def _paired(self, ref: ChannelRef, event: str, user: str, data: bytes) -> None:
        """Report a join or leave event, holding leaves `leave_delay` seconds: a join that comes
        within it, on this node or another, cancels the leave and is not reported either."""
        pair = _PAIRS.get(event)
        if self._leave_delay <= 0 or pair is None:
            await self.emit(ref, event, data, user or None)
            return
        name, delayed = pair
        key: HeldKey = (ref.app_id, ref.name, user if name != "room" else "", name)
        if not delayed:
            held = self._held.get(key)
            if held:
                # Back within the delay: the leave and this join both go unreported.
                held.pop(0).cancel()
                if not held:
                    del self._held[key]
                return
            holder = self._take_held_elsewhere(key)
            # Held by another node: it drops the leave (or, if its delay ran out on the way
            # and the leave went out, reports this join in our stead).
            if (
                holder is not None
                and self._peers is not None
                and self._peers.leave_undone(
                    holder, ref.app_id, ref.name, key[2], name, event, data
                )
            ):
                return
            await self.emit(ref, event, data, user or None)
            return
        entry = _HeldLeave(lambda: self.emit(ref, event, data, user or None))
        entry.timer = asyncio.get_running_loop().call_later(
            self._leave_delay, self._release_leave, key, entry
        )
        self._held.setdefault(key, []).append(entry)
        if self._peers is not None and await self._wanted(ref, event):
            self._peers.leave_held(ref.app_id, ref.name, key[2], name, self._leave_delay)

    async def _wanted(self, ref: ChannelRef, event: str) -> bool:
        """Whether any webhook of the app wants the leave or its join (else the other nodes
        need not hear of it: no control message per subscription of an app without hooks)."""
        join = _JOIN_OF[event]
        hooks = await self._webhooks(ref.app_id)
        return any(h.wants(event, ref.name) or h.wants(join, ref.name) for h in hooks)

    def _take_held_elsewhere(self, key: HeldKey) -> str | None:
        entries = self._held_elsewhere.get(key)
        if not entries:
            return None
        now = time.monotonic()
        while entries and entries[0][1] <= now:
            entries.pop(0)  # its delay ran out: reported by now
        holder = entries.pop(0)[0] if entries else None
        if not entries:
            del self._held_elsewhere[key]
        return holder

    def leave_held_elsewhere(
        self, holder: str, app_id: str, room: str, user: str, pair: str, delay: float
    ) -> None:
        """Another node holds a leave (its LeaveHeld): a join here within `delay` undoes it."""
        if len(self._held_elsewhere) > 10_000:  # bounded: forget those whose delay ran out
            now = time.monotonic()
            for stale in [k for k, v in self._held_elsewhere.items() if v[-1][1] <= now]:
                del self._held_elsewhere[stale]
        until = time.monotonic() + delay
        self._held_elsewhere.setdefault((app_id, room, user, pair), []).append((holder, until))

    def leave_undone_here(
        self, app_id: str, room: str, user: str, pair: str, event: str, data: bytes
    ) -> None:
        """Another node saw the join that undoes a leave held here: drop the leave; if it was
        reported already (the delay ran out meanwhile), report the join the other node held
        back, so the pair is reported whole or not at all."""
        key: HeldKey = (app_id, room, user, pair)
        held = self._held.get(key)
        if held:
            held.pop(0).cancel()
            if not held:
                del self._held[key]
            return
        self._spawn(self.emit(ChannelRef(AppId(app_id), room), event, data, user or None))

    def _release_leave(self, key: HeldKey, entry: _HeldLeave) -> None:
        held = self._held.get(key)
        if held is None or entry not in held:
            return
        held.remove(entry)
        if not held:
            del self._held[key]
        self._spawn(entry.emit())

    async def cache_miss(self, ref: ChannelRef) -> None:
        """A Pusher cache channel had no event for a new subscriber (Pusher-format only)."""
        await self.emit_pusher(ref, pusher.cache_miss_event(ref.name))

    async def member(self, ref: ChannelRef, user: str, added: bool) -> None:
        """A presence channel's member added or removed, cluster-wide (Pusher-format only)."""
        found = pusher.member_event(ref.name, user, added)
        if found is not None:
            await self.emit_pusher(ref, found)

    def _spawn(self, work: Coroutine[object, object, object]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Report every held leave now (the node is stopping), then wait for the writes."""
        held, self._held = self._held, {}
        for entries in held.values():
            for entry in entries:
                entry.cancel()
                self._spawn(entry.emit())
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class _HeldLeave:
    """One delayed user-left or room-vacated: what reports it, and its timer."""

    __slots__ = ("emit", "timer")

    def __init__(self, emit: Callable[[], Coroutine[object, object, object]]) -> None:
        self.emit = emit
        self.timer: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


# Event -> (its pair's name, whether it is the delayed leave); and each leave's join.
_PAIRS: dict[str, tuple[str, bool]] = {
    LifecycleEvent.USER_LEFT.value: ("user", True),
    LifecycleEvent.USER_JOINED.value: ("user", False),
    LifecycleEvent.ROOM_VACATED.value: ("room", True),
    LifecycleEvent.ROOM_OCCUPIED.value: ("room", False),
    "user-offline": ("presence", True),
    "user-online": ("presence", False),
}
_JOIN_OF = {
    LifecycleEvent.USER_LEFT.value: LifecycleEvent.USER_JOINED.value,
    LifecycleEvent.ROOM_VACATED.value: LifecycleEvent.ROOM_OCCUPIED.value,
    "user-offline": "user-online",
}
