"""An app's lifecycle events (client connected / disconnected, subscribed / unsubscribed) for
whoever watches the app live: the dashboard's console, served by any node of the cluster.

The events are told to listeners only, never to webhooks or analytics (those have their own
calls in `Node`, unchanged), so nothing is counted or delivered twice.

Cluster-wide: a node with a listener for an app announces it on the control bus
(`ConsoleWatch`, re-sent every `ttl / 3` seconds while it lasts); every node that has heard
such an announcement within `ttl` forwards the app's events over the bus (`LifecycleNotice`),
and the listening nodes hand them to their listeners. A node started after the announcement
learns of it at its next re-send. An app nobody watches costs two dict lookups per event at
the emitting node and no message on the bus; events are keyed by app, so no listener ever
hears another app's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xshathra.engine.control import ConsoleWatch, LifecycleNotice
from xshathra.model import AppId

if TYPE_CHECKING:
    from xshathra.engine.client import ClientSession
    from xshathra.engine.node import Node

log = logging.getLogger("xshathra.lifecycle")

WATCH_TTL = 15.0  # seconds another node's console counts without a re-announcement
CONNECTED, DISCONNECTED = "connected", "disconnected"
SUBSCRIBED, UNSUBSCRIBED = "subscribed", "unsubscribed"


@dataclass(frozen=True, slots=True)
class AppEvent:
    """One lifecycle event of an app, as a console shows it."""

    kind: str  # CONNECTED, DISCONNECTED, SUBSCRIBED or UNSUBSCRIBED
    app_id: str
    user: str
    client: str
    transport: str
    channel: str  # "" for connected / disconnected
    node: str  # the name of the node the client is connected to
    at: float  # unix seconds


# Called on the event loop with each event of the watched app; None: the node is stopping
# and will tell no more (the listener ends its stream).
Listener = Callable[[AppEvent | None], None]


class LifecycleFeed:
    def __init__(self, node: Node, *, ttl: float = WATCH_TTL) -> None:
        self._node = node
        self._ttl = ttl
        self._listeners: dict[AppId, set[Listener]] = {}  # watched here
        self._elsewhere: dict[AppId, float] = {}  # watched on another node: until (monotonic)
        self._announcers: dict[AppId, asyncio.Task[None]] = {}

    # --- emitting (the node's connection and subscription hooks) ------------------------------

    def emit(self, kind: str, session: ClientSession, channel: str = "", user: str = "") -> None:
        app_id = session.app_id
        if app_id not in self._listeners and app_id not in self._elsewhere:
            return  # nobody watches the app: the cost of a feed nobody uses
        node = self._node
        event = AppEvent(
            kind=kind,
            app_id=app_id,
            user=user or session.user,
            client=session.client_id,
            transport=getattr(session.transport, "name", "websocket"),
            channel=channel,
            node=node.name,
            at=time.time(),
        )
        self._tell(event)
        until = self._elsewhere.get(app_id)
        if until is None:
            return
        if time.monotonic() > until:
            del self._elsewhere[app_id]  # that console went away without a word
            return
        notice = LifecycleNotice(
            app_id=app_id,
            kind=kind,
            user=event.user,
            client=event.client,
            transport=event.transport,
            channel=channel,
            node_name=event.node,
            at=event.at,
        )
        node.spawn(node.send_control(notice))

    def _tell(self, event: AppEvent | None, app_id: str = "") -> None:
        for listener in list(self._listeners.get(AppId(event.app_id if event else app_id), ())):
            try:
                listener(event)
            except Exception:  # one console's failure is not the others' or the node's
                log.exception("a lifecycle listener failed")

    # --- the control bus ------------------------------------------------------------------------

    def on_watch(self, msg: ConsoleWatch) -> None:
        """Another node watches the app: forward its events until the announcement expires."""
        if msg.origin_node != self._node.node_id:
            self._elsewhere[AppId(msg.app_id)] = time.monotonic() + max(1.0, msg.ttl)

    def on_notice(self, msg: LifecycleNotice) -> None:
        """Another node's event of an app watched here."""
        if msg.origin_node == self._node.node_id or msg.app_id not in self._listeners:
            return
        event = AppEvent(
            kind=msg.kind,
            app_id=msg.app_id,
            user=msg.user,
            client=msg.client,
            transport=msg.transport,
            channel=msg.channel,
            node=msg.node_name,
            at=msg.at,
        )
        self._tell(event)

    # --- watching -------------------------------------------------------------------------------

    async def watch(self, app_id: str, listener: Listener) -> Callable[[], None]:
        """Tell `listener` the app's events from every node, from when this returns: the
        announcement has reached every live node by then (a cluster query sent after it is
        answered after it, the bus keeping one sender's order). Returns the call that stops."""
        key = AppId(app_id)
        first = key not in self._listeners
        self._listeners.setdefault(key, set()).add(listener)
        if first:
            self._announcers[key] = self._node.loop.create_task(self._announce(key))
        try:
            await self._node.send_control(ConsoleWatch(app_id=key, ttl=self._ttl))
            await self._node.cluster.query(key, "channels")
        except Exception as exc:  # the broker is away: this node's events still come
            log.warning("console announcement not confirmed: %s", type(exc).__name__)

        def stop() -> None:
            listeners = self._listeners.get(key)
            if listeners is None:
                return
            listeners.discard(listener)
            if not listeners:
                del self._listeners[key]
                task = self._announcers.pop(key, None)
                if task is not None:
                    task.cancel()

        return stop

    async def _announce(self, app_id: AppId) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                await self._node.send_control(ConsoleWatch(app_id=app_id, ttl=self._ttl))
            except Exception as exc:  # the next turn tries again
                log.debug("console announcement failed: %s", type(exc).__name__)

    def watched_here(self, app_id: str) -> bool:
        return AppId(app_id) in self._listeners

    async def close(self) -> None:
        """The node stops: every listener hears None (its stream ends), announcers stop."""
        for app_id in list(self._listeners):
            self._tell(None, app_id)
        self._listeners.clear()
        for task in self._announcers.values():
            task.cancel()
        for task in list(self._announcers.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._announcers.clear()
