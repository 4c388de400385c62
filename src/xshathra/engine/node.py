"""The node: the engine's one facade. It owns the hub, talks to the broker and the presence
store, runs the ping sweep, validates publications, and executes what the server API asks of
connections; callers outside the engine use its methods, never its hub or backends.

It knows nothing of HTTP, SQL, settings or a concrete backend: those are handed in by
`server.py`, the limits as a frozen `EngineOptions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

import msgspec
import msgspec.structs

from xshathra import __version__
from xshathra.brokers import ClusterBroker
from xshathra.engine.channels import is_valid_channel, namespace_of
from xshathra.engine.client import ClientSession, State, Subscription, refusal_code
from xshathra.engine.cluster import Cluster
from xshathra.engine.control import (
    AccessChanged,
    AppChanged,
    ConnectionSummary,
    ConsoleWatch,
    ControlMessage,
    Disconnect,
    Emulation,
    LeaveHeld,
    LeaveUndone,
    LifecycleNotice,
    NodeStats,
    Query,
    QueryReply,
    Refresh,
    Subscribe,
    SubscriberCount,
    Unsubscribe,
    WebhooksChanged,
    decode_control,
    encode_control,
)
from xshathra.engine.deadlines import Deadlines
from xshathra.engine.errors import ClientError
from xshathra.engine.hub import Hub, SubscriberFeatures, publication_message
from xshathra.engine.lifecycle import (
    CONNECTED,
    DISCONNECTED,
    SUBSCRIBED,
    UNSUBSCRIBED,
    LifecycleFeed,
    Listener,
)
from xshathra.engine.options import EngineOptions
from xshathra.engine.proxy import ProxyCaller, ProxyUnavailable, answered, refuse, result_of
from xshathra.engine.writer import FlushScheduler
from xshathra.model import (
    AppId,
    BrokerPublication,
    ChannelRef,
    ClientInfoData,
    HistoryOptions,
    PublishOptions,
    StreamPosition,
)
from xshathra.presence import PresenceStore
from xshathra.protocol import messages as m
from xshathra.protocol import proxy as p
from xshathra.protocol.codes import DisconnectCode, ErrorCode, LifecycleEvent, UnsubscribeCode
from xshathra.tenancy.access import AccessRules, AccessStore
from xshathra.tenancy.apps import Application, NamespaceOptions, keys_equal, lowest
from xshathra.tenancy.tokens import TokenService

if TYPE_CHECKING:
    from collections.abc import Callable


class Analytics(Protocol):
    """Where the node counts usage (hot path: no I/O)."""

    def bind_online(
        self,
        online: Callable[[str], tuple[int, set[str]]],
        apps_online: Callable[[], list[str]] | None = None,
    ) -> None: ...

    def connection_opened(self, app_id: str, user: str) -> None: ...

    def publication(self, app_id: str, *, broadcast: bool) -> None: ...


class HeldEvent(Protocol):
    """A publication's event, made durable before the publish and held until it went out."""

    def release(self) -> None: ...

    async def cancel(self) -> None: ...


class ChannelEvents(Protocol):
    """Who hears about channel events beyond subscribers (webhooks). `publication` is awaited
    before the broker publish, so its implementation must make the event durable (and hold it
    until `release`, or drop it on `cancel`)."""

    async def publication(
        self, ref: ChannelRef, tags: dict[str, str] | None, data: bytes, user: str | None
    ) -> HeldEvent | None: ...

    async def lifecycle(
        self, ref: ChannelRef, event: LifecycleEvent, user: str, client: str
    ) -> None: ...

    def invalidate(self, app_id: str) -> None: ...

    async def user_presence(self, app_id: str, user: str, online: bool) -> None:
        """The user's first connection on any node opened (online), or last closed."""

    async def member(self, ref: ChannelRef, user: str, added: bool) -> None:
        """A presence channel's user got their first subscription on any node (added), or
        lost their last (Pusher's member_added / member_removed)."""

    async def cache_miss(self, ref: ChannelRef) -> None:
        """A subscriber of a Pusher cache channel found no cached event."""

    def leave_held_elsewhere(
        self, holder: str, app_id: str, room: str, user: str, pair: str, delay: float
    ) -> None:
        """Node `holder` holds a leave for `delay` seconds (its `LeaveHeld`)."""

    def leave_undone_here(
        self, app_id: str, room: str, user: str, pair: str, event: str, data: bytes
    ) -> None:
        """Another node saw the join that undoes a leave held here (its `LeaveUndone`)."""


class AppLookup(Protocol):
    """Where the node reads apps: the store, or (as `server.py` assembles it) a cache in front
    of it that every app change empties on every node (`app_change_listeners`, the control
    bus), so a disabled app or regenerated key still counts at once."""

    async def get_app(self, app_id: str) -> Application | None: ...

    async def find_by_client_key(self, client_key: str) -> Application | None: ...


# The broker's cluster-wide counters name channels; a user's connections are counted under a
# name no channel can have (the channel grammar has no "<"), so the two never meet.
USER_COUNTER_PREFIX = "<user>"
# A presence channel's subscriptions of one user: "<member>" + user + US + channel (the user id
# may hold anything but the channel grammar has no US, so the split is unambiguous).
MEMBER_COUNTER_PREFIX = "<member>"
# Subscriber-count notices (Pusher's subscription counting), throttled as Pusher does: every
# change up to this many subscribers, else at most one per interval.
COUNT_EVERY_CHANGE_UPTO = 100
COUNT_INTERVAL = 5.0


@dataclass(slots=True)
class _CountNotice:
    sent_at: float = 0.0  # monotonic
    timer: asyncio.TimerHandle | None = None


log = logging.getLogger("xshathra.node")


def namespace_kind(channel: str) -> str:
    """A bounded label for metrics: `public`, `default` (no namespace) or `custom`."""
    namespace = namespace_of(channel)
    if namespace == "public":
        return "public"
    return "default" if namespace == "" else "custom"


def _check_text(tags: dict[str, str]) -> None:
    """Refuse tags that cannot be encoded as UTF-8 (a lone surrogate that a lenient JSON
    parser let in): checked before anything reaches the broker, so history, webhooks and every
    subscriber's frame only ever hold what encodes. Tags are few and short: no hot-path cost."""
    for key, value in tags.items():
        try:
            key.encode()
            value.encode()
        except UnicodeEncodeError:
            raise ClientError(ErrorCode.BAD_REQUEST, "tags must be valid Unicode text") from None


class EmulationOutcome(Enum):
    NO_NODE = "no_node"  # the node named is not running (as far as this one knows)
    DELIVERED = "delivered"  # to a session of this node
    NO_SESSION = "no_session"  # none here by that id: closed, or never existed
    ORIGIN_REFUSED = "origin_refused"  # from a browser origin the session's app does not allow
    FORWARDED = "forwarded"  # to the node named, over the control bus


@dataclass(frozen=True, slots=True)
class AppInfo:
    """One app's share of this node, as the server API's `info` reports it."""

    num_clients: int
    num_users: int
    num_channels: int
    num_subs: int


class Counters:
    """Plain counters for observability; read at scrape time, never locked."""

    __slots__ = ("delivered", "publications", "refusals")

    def __init__(self) -> None:
        # (origin, namespace kind) -> count; kinds are bounded: public, default, custom.
        self.publications: dict[tuple[str, str], int] = {}
        self.delivered = 0
        # Why clients were refused over a quota or an access rule (a bounded set of reasons).
        self.refusals: dict[str, int] = {}

    def refused(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1


class Node:
    def __init__(
        self,
        *,
        options: EngineOptions,
        broker: ClusterBroker,
        presence: PresenceStore,
        apps: AppLookup,
        tokens: TokenService,
        analytics: Analytics,
        events: ChannelEvents | None = None,
        proxy: ProxyCaller | None = None,
        node_id: str | None = None,
        access: AccessStore | None = None,
    ) -> None:
        self.options = options
        self.broker = broker
        self.presence_store = presence
        self.apps = apps
        self.tokens = tokens
        self.analytics = analytics
        self.events = events
        self.access = access
        # Each app's access rules (blocked users, revoked tokens), read once per
        # `access_rules_ttl` and dropped by every AccessChanged: a connect checks them in memory.
        self._rules: dict[AppId, tuple[float, AccessRules]] = {}
        # Bumped by every AccessChanged: a connect whose check spans one checks again.
        self.access_changes = 0
        self.proxy = proxy  # asks apps' backends (SPEC §9); None: every proxy call fails (100)
        self.stats = Counters()
        self.hub = Hub()
        self.deadlines = Deadlines()  # connection expiries, swept once for all
        # One Application object per app with connections here, shared by its sessions.
        self._apps: dict[AppId, Application] = {}
        # Told (synchronously) whenever an app changes on any node: caches drop the app.
        self.app_change_listeners: list[Callable[[AppId], None]] = []
        # Bumped by every app change: a connect whose read of its app spans one checks again.
        self.app_changes = 0
        self.version = __version__
        self.node_id = node_id or secrets.token_hex(8)
        self.name = options.node_name or self.node_id
        self.started_at = time.time()
        self.loop = asyncio.get_running_loop()
        self.scheduler = FlushScheduler(self.loop)
        self._ping_task: asyncio.Task[None] | None = None
        self._presence_task: asyncio.Task[None] | None = None
        self._position_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        # Last publication position seen per channel with local subscribers (gap detection).
        self._last_offsets: dict[ChannelRef, tuple[str, int]] = {}
        # (presence channel, user) -> subscriptions of the user there on this node
        self._members: dict[tuple[ChannelRef, str], int] = {}
        # Channels over COUNT_EVERY_CHANGE_UPTO subscribers whose count notices are throttled.
        self._count_notices: dict[ChannelRef, _CountNotice] = {}
        self.cluster = Cluster(
            self,
            interval=options.node_stats_interval,
            query_timeout=options.cluster_query_timeout,
        )
        # Connected sessions of emulation transports, by emulation session id.
        self._emulated: dict[str, ClientSession] = {}
        # Apps' lifecycle events for live consoles on any node (engine/lifecycle.py).
        self.lifecycle = LifecycleFeed(self)
        analytics.bind_online(self._online, self.hub.app_ids)

    async def start(self) -> None:
        await self.broker.start(self)
        self._ping_task = self.loop.create_task(self._ping_loop())
        self._presence_task = self.loop.create_task(self._presence_loop())
        self._position_task = self.loop.create_task(self._position_loop())
        self.deadlines.start(self.loop)
        self.cluster.start()

    def node_running(self, node_id: str) -> bool:
        """This node, or another whose heartbeat is recent (engine.cluster)."""
        return node_id == self.node_id or self.cluster.is_live(node_id)

    # The webhook events' peers (webhooks.events.LeavePeers): held leaves across nodes.
    def leave_held(self, app_id: str, room: str, user: str, pair: str, delay: float) -> None:
        msg = LeaveHeld(app_id=app_id, room=room, user=user, pair=pair, delay=delay)
        self.spawn_control(msg)

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
        if not self.node_running(holder):
            return False  # stopped (its held leaves were reported) or died: report the join
        self.spawn_control(
            LeaveUndone(
                app_id=app_id,
                holder=holder,
                room=room,
                user=user,
                pair=pair,
                event=event,
                data=data,
            )
        )
        return True

    def spawn_control(self, msg: ControlMessage) -> None:
        """Send `msg` on the control bus in the background (from a bus callback)."""
        self._spawn(self.send_control(msg))

    def on_reconnect(self) -> None:
        """The broker lost messages while away: every subscriber resubscribes and recovers."""
        self._rules.clear()  # an AccessChanged may have been among them

        async def resubscribe_all() -> None:
            for session in self.hub.all_connections():
                for channel, sub in list(session.subs.items()):
                    if sub.positioned:  # see _resubscribe_channel
                        session.disconnect(DisconnectCode.INSUFFICIENT_STATE)
                        break
                    try:
                        await session.server_unsubscribe(
                            channel, UnsubscribeCode.INSUFFICIENT, "insufficient state"
                        )
                    except Exception as exc:  # keep going: every client must hear it
                        log.warning("resubscribe notice failed: %s", type(exc).__name__)

        self._spawn(resubscribe_all())

    async def _presence_loop(self) -> None:
        """Refresh this node's presence entries so a shared store can expire a dead node's."""
        while True:
            await asyncio.sleep(max(1.0, self.options.presence_ttl / 3))
            for session in self.hub.all_connections():
                for sub in list(session.subs.values()):
                    if sub.options.presence and sub.live:
                        with contextlib.suppress(Exception):
                            await self.presence_store.add_presence(sub.ref, session.sub_info(sub))

    async def close(self) -> None:
        """Disconnect every client with a reconnect code and stop background work."""
        for session in self.hub.all_connections():
            session.disconnect(DisconnectCode.SHUTDOWN)
        await self.lifecycle.close()
        await self.cluster.stop()
        for task in (
            self._ping_task,
            self._presence_task,
            self._position_task,
        ):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.deadlines.stop()
        for task in list(self._background):
            task.cancel()
        await self.broker.close()
        await self.presence_store.close()

    def spawn(self, coro: object) -> None:
        """Run `coro` in the background, held until done (a session's server-side refresh)."""
        self._spawn(coro)

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = self.loop.create_task(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task failed: %s", type(task.exception()).__name__)

    def _online(self, app_id: str) -> tuple[int, set[str]]:
        return self.hub.connection_count(AppId(app_id)), self.hub.user_ids(AppId(app_id))

    async def get_app(self, app_id: str) -> Application | None:
        """The app as stored now (a regenerated key or a disabled app counts at once), as one
        object shared by all of its connections on this node rather than a copy each."""
        app = await self.apps.get_app(app_id)
        return self._shared(app) if app is not None else None

    def _shared(self, app: Application) -> Application:
        known = self._apps.get(app.app_id)
        if known is not None and known == app:
            return known
        if self.hub.connection_count(app.app_id):
            self._apps[app.app_id] = app
        return app

    async def app_by_client_key(self, client_key: str, app_id: str = "") -> Application | None:
        """The app whose public client key this is (a client connecting without a token
        names its app so); with `app_id`, only if that app's key it is."""
        if app_id:
            app = await self.get_app(app_id)
            if app is None or not keys_equal(app.client_api_key, client_key):
                return None
            return app
        found = await self.apps.find_by_client_key(client_key)
        return self._shared(found) if found is not None else None

    async def rpc(self, app: Application, method: str, data: bytes) -> bytes:
        """The server API's `rpc`: the method's RPC namespace proxy, with no client. 104 when
        the app has none for it, 100 when the backend does not answer, else its own error."""
        target = app.proxies.rpc_target(method)
        if target is None:
            raise ClientError(ErrorCode.METHOD_NOT_FOUND)
        if self.proxy is None:
            raise ProxyUnavailable()
        reply = await self.proxy.call(
            app,
            target,
            p.RPCRequest(app_id=app.app_id, method=method, data=p.raw_json(data)),
            p.RPCReply,
        )
        if reply is None:
            raise ProxyUnavailable()
        if reply.disconnect is not None:  # no connection to end: an error to the caller
            raise ClientError(ErrorCode.INTERNAL, reply.disconnect.reason or None)
        refuse(reply.error, None)
        result = result_of(reply)
        return answered(result.data, result.b64data) or b""

    async def app_for_client_key(self, client_api_key: str) -> Application | None:
        """The app whose public key this is (how Pusher clients name their app), as stored now."""
        app = await self.apps.find_by_client_key(client_api_key)
        return await self.get_app(app.app_id) if app is not None else None

    # --- sessions ---------------------------------------------------------------------------

    async def recheck_access(self, session: ClientSession) -> None:
        """A block or revocation arrived while `session` was being admitted (after its check,
        before it was registered, so the change did not find it): check it again."""
        rules = await self.access_rules(session.app_id)
        reason = rules.refusal(session.user, session.token_id, session.issued_at, time.time())
        if reason is not None:
            self.stats.refused("blocked" if reason == "user is blocked" else "revoked")
            session.disconnect(refusal_code(reason), reason)

    def register(
        self,
        session: ClientSession,
        app_changes: int | None = None,
        access_changes: int | None = None,
    ) -> None:
        """Add a connected session. `app_changes` is `self.app_changes` from before its app
        was read: if an app changed since, the app may have been disabled or deleted while
        the change found this session not yet registered, so its app is checked again.
        `access_changes` likewise for blocks and revocations."""
        if session.app is not None:
            self._apps.setdefault(session.app_id, session.app)
        self.hub.add_connection(session)
        self.lifecycle.emit(CONNECTED, session)
        self.analytics.connection_opened(session.app_id, session.user)
        if self.events is not None and session.user:
            self._spawn(self._count_user(session.app_id, session.user))
        if app_changes is not None and app_changes != self.app_changes:
            self._spawn(self._app_changed(session.app_id))
        if access_changes is not None and access_changes != self.access_changes:
            self._spawn(self.recheck_access(session))

    def unregister(self, session: ClientSession, subs: list[Subscription]) -> None:
        """A connection closed: forget it now, clean shared state in the background."""
        if session.emulation_id:
            self._emulated.pop(session.emulation_id, None)
        if session.app is not None:
            for sub in subs:  # a console shows them before the disconnect, as they happen
                self.lifecycle.emit(UNSUBSCRIBED, session, sub.ref.name, session.sub_info(sub).user)
            self.lifecycle.emit(DISCONNECTED, session)
            self.hub.remove_connection(session)
            if not self.hub.connection_count(session.app_id):
                self._apps.pop(session.app_id, None)
            if self.events is not None and session.user:
                self._spawn(self._count_user(session.app_id, session.user))
        emptied = [s.ref for s in subs if self.hub.remove_subscriber(s.ref, session)]
        if subs or emptied:
            self._spawn(self._cleanup(session, subs, emptied))

    async def _cleanup(
        self, session: ClientSession, subs: list[Subscription], emptied: list[ChannelRef]
    ) -> None:
        for sub in subs:
            self.subscription_removed(session, sub, closed=True)
            try:
                if sub.options.presence:
                    await self.presence_store.remove_presence(sub.ref, session.client_id)
                if sub.options.join_leave:
                    await self.broker.publish_leave(sub.ref, session.sub_info(sub))
            except Exception:
                log.exception("cleanup of a closed connection failed")
        for ref in emptied:
            if not self.hub.has_channel(ref):
                self._last_offsets.pop(ref, None)
                with contextlib.suppress(Exception):
                    await self.broker.unsubscribe(ref)
        for ref in {s.ref for s in subs}:
            with contextlib.suppress(Exception):
                await self._count_subscribers(ref, session.app)

    async def _count_user(self, app_id: AppId, user: str) -> None:
        """Publish how many connections the user has here now; the cluster-wide transition
        from or to none is the user's going online or offline (one node sees each). The count
        is read when this runs, so a connect and close in quick succession may report
        nothing at all, never an offline before its online."""
        ref = ChannelRef(app_id, USER_COUNTER_PREFIX + user)
        local = len(self.hub.user_connections(app_id, user))
        before, after = await self.broker.set_subscriber_count(ref, local)
        if self.events is None:
            return
        if before == 0 and after > 0:
            await self.events.user_presence(app_id, user, True)
        elif before > 0 and after == 0:
            await self.events.user_presence(app_id, user, False)

    async def add_pending_subscriber(
        self, ref: ChannelRef, session: ClientSession, features: SubscriberFeatures | None = None
    ) -> None:
        if self.hub.add_pending(ref, session, features):
            await self.broker.subscribe(ref)
        await self._count_subscribers(ref, session.app)

    async def _count_subscribers(self, ref: ChannelRef, app: Application | None) -> None:
        """Publish this node's count; the cluster-wide transition decides occupancy events.
        `app` is the subscriber's, which this node may have forgotten already (its last
        connection here just closed)."""
        before, after = await self.broker.set_subscriber_count(ref, self.hub.subscriber_count(ref))
        if before != after and after > 0 and app is not None and app.counts_subscribers(ref.name):
            self._count_changed(ref, after)
        if self.events is not None:
            if before == 0 and after > 0:
                self._spawn(self.events.lifecycle(ref, LifecycleEvent.ROOM_OCCUPIED, "", ""))
            elif before > 0 and after == 0:
                self._spawn(self.events.lifecycle(ref, LifecycleEvent.ROOM_VACATED, "", ""))

    async def remove_subscriber(self, ref: ChannelRef, session: ClientSession) -> None:
        if self.hub.remove_subscriber(ref, session):
            self._last_offsets.pop(ref, None)
            await self.broker.unsubscribe(ref)
        await self._count_subscribers(ref, session.app)

    def _count_changed(self, ref: ChannelRef, count: int) -> None:
        """Tell the channel's subscribers on every node its new count, when its app asks for
        it. As Pusher throttles it: every change while the channel has at most
        `COUNT_EVERY_CHANGE_UPTO` subscribers, else at most once per `COUNT_INTERVAL` seconds
        (from this node), the last one read when it is sent."""
        notice = self._count_notices.get(ref)
        now = time.monotonic()
        if count <= COUNT_EVERY_CHANGE_UPTO and notice is None:
            self._spawn(self._send_count(ref, count))
            return
        if notice is None:
            notice = self._count_notices[ref] = _CountNotice()
        if notice.timer is not None:
            return  # a send is due: it reads the count then
        wait = notice.sent_at + COUNT_INTERVAL - now
        if wait <= 0:
            notice.sent_at = now
            self._spawn(self._send_count(ref, count))
            if count <= COUNT_EVERY_CHANGE_UPTO:
                del self._count_notices[ref]  # small again: every change from now on
            return
        notice.timer = self.loop.call_later(wait, self._count_due, ref)

    def _count_due(self, ref: ChannelRef) -> None:
        notice = self._count_notices.get(ref)
        if notice is None:
            return
        notice.timer = None
        notice.sent_at = time.monotonic()
        self._spawn(self._send_count(ref, None))

    async def _send_count(self, ref: ChannelRef, count: int | None) -> None:
        if count is None:
            count = await self.broker.subscriber_count(ref)
            if count <= COUNT_EVERY_CHANGE_UPTO:
                self._count_notices.pop(ref, None)
            if count == 0:
                return
        await self.send_control(SubscriberCount(app_id=ref.app_id, channel=ref.name, count=count))

    def subscription_added(self, session: ClientSession, sub: Subscription) -> None:
        user = session.sub_info(sub).user  # a Pusher presence member's own user id
        self.lifecycle.emit(SUBSCRIBED, session, sub.ref.name, user)
        if self.events is None:
            return
        self._spawn(
            self.events.lifecycle(sub.ref, LifecycleEvent.USER_JOINED, user, session.client_id)
        )
        if sub.options.presence and user:
            key = (sub.ref, user)
            self._members[key] = self._members.get(key, 0) + 1
            self._spawn(self._count_member(sub.ref, user))

    def subscription_removed(
        self, session: ClientSession, sub: Subscription, *, closed: bool = False
    ) -> None:
        """`closed`: the connection closed (`unregister` told the consoles already)."""
        user = session.sub_info(sub).user
        if not closed:
            self.lifecycle.emit(UNSUBSCRIBED, session, sub.ref.name, user)
        if self.events is None:
            return
        self._spawn(
            self.events.lifecycle(sub.ref, LifecycleEvent.USER_LEFT, user, session.client_id)
        )
        if sub.options.presence and user:
            key = (sub.ref, user)
            held = self._members.get(key, 0)
            if held <= 0:
                return  # added before events were on, or counted already: nothing to undo
            if held == 1:
                del self._members[key]
            else:
                self._members[key] = held - 1
            self._spawn(self._count_member(sub.ref, user))

    async def _count_member(self, ref: ChannelRef, user: str) -> None:
        """Publish how many subscriptions the user has in the presence channel here; the
        cluster-wide transition from or to none is the member's being added or removed (one
        node sees each, as for a channel's occupancy), however many tabs the user has open."""
        assert self.events is not None
        counter = ChannelRef(ref.app_id, f"{MEMBER_COUNTER_PREFIX}{user}\x1f{ref.name}")
        local = self._members.get((ref, user), 0)
        before, after = await self.broker.set_subscriber_count(counter, local)
        if before == 0 and after > 0:
            await self.events.member(ref, user, True)
        elif before > 0 and after == 0:
            await self.events.member(ref, user, False)

    async def _ping_loop(self) -> None:
        """One sweep for all connections: drop those that missed the last pong, ping the rest."""
        interval = self.options.ping_interval
        while True:
            await asyncio.sleep(interval)
            for session in self.hub.all_connections():
                if session.state is not State.CONNECTED:
                    continue
                if session.awaiting_pong:
                    session.disconnect(DisconnectCode.NO_PONG)
                    continue
                # A unidirectional client cannot answer: its ping only shows it the stream lives.
                session.awaiting_pong = not session.transport.unidirectional
                session.writer.enqueue(self.hub.ping_frame(session.transport))

    # --- broker events ------------------------------------------------------------------------

    def on_publication(self, ref: ChannelRef, pub: BrokerPublication) -> None:
        if pub.offset:
            # Brokers deliver at most once: a jump in offsets means publications were lost
            # between the broker and this node. Subscribers then resubscribe and recover.
            last = self._last_offsets.get(ref)
            self._last_offsets[ref] = (pub.epoch, max(pub.offset, last[1] if last else 0))
            if last is not None and last[0] == pub.epoch:
                if pub.offset <= last[1]:
                    return  # already delivered
                if pub.offset != last[1] + 1:
                    self._spawn(self._resubscribe_channel(ref))
                    return
            elif last is not None:
                # A new epoch: the stream was lost (history expired or removed). Positioned
                # subscribers cannot continue from their position.
                self._spawn(self._resubscribe_channel(ref, positioned_only=True))
        self.stats.delivered += self.hub.broadcast_publication(ref, pub)

    async def _resubscribe_channel(self, ref: ChannelRef, *, positioned_only: bool = False) -> None:
        for session in self.hub.subscribers(ref):
            sub = session.subs.get(ref.name)
            if sub is not None and sub.positioned:
                # Positioning promises an unbroken stream: a gap ends the connection (3010),
                # and the client reconnects and recovers.
                session.disconnect(DisconnectCode.INSUFFICIENT_STATE)
                continue
            if positioned_only:
                continue
            await session.server_unsubscribe(
                ref.name, UnsubscribeCode.INSUFFICIENT, "insufficient state"
            )

    def track_position(self, ref: ChannelRef, position: StreamPosition) -> None:
        """A positioned subscriber starts at `position`: publications after it must follow
        on without a gap (unless a publication already told this node a later position)."""
        if position.epoch and ref not in self._last_offsets:
            self._last_offsets[ref] = (position.epoch, position.offset)

    async def _position_loop(self) -> None:
        """Positioned subscriptions: compare each channel's stream top with what this node
        delivered. A top still ahead one whole interval later means the last publications
        were lost on the way (a later publication would have shown the gap): 3010."""
        interval = self.options.position_check_interval
        suspects: dict[ChannelRef, tuple[str, int]] = {}
        while True:
            await asyncio.sleep(interval)
            refs = {
                sub.ref
                for session in self.hub.all_connections()
                for sub in session.subs.values()
                if sub.positioned and sub.live
            }
            found: dict[ChannelRef, tuple[str, int]] = {}
            for ref in refs:
                try:
                    top = (await self.broker.history(ref, HistoryOptions(limit=0))).position
                except Exception as exc:  # the broker away: checked again next time
                    log.warning("position check failed: %s", type(exc).__name__)
                    continue
                seen = self._last_offsets.get(ref)
                if seen is None or (top.epoch == seen[0] and top.offset <= seen[1]):
                    continue
                before = suspects.get(ref)
                if before is not None and (seen[0] != before[0] or seen[1] < before[1]):
                    self._last_offsets.pop(ref, None)
                    await self._resubscribe_channel(ref)
                    continue
                found[ref] = (top.epoch, top.offset)
            suspects = found

    def on_join(self, ref: ChannelRef, info: ClientInfoData) -> None:
        self.hub.broadcast_join_leave(ref, info, join=True)

    def on_leave(self, ref: ChannelRef, info: ClientInfoData) -> None:
        self.hub.broadcast_join_leave(ref, info, join=False)

    def on_control(self, data: bytes) -> None:
        try:
            msg = decode_control(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("ignoring a malformed control message")
            return
        if isinstance(msg, Emulation):
            # Handled here, not in a task: a session's commands keep the bus's order.
            if msg.node == self.node_id:
                self._emulate_here(msg.session, msg.data, msg.origin)
            return
        if isinstance(msg, NodeStats):
            # Here, not in a task: liveness and counts as of the bus's order, at once.
            self.cluster.on_stats(msg)
            return
        if isinstance(msg, LifecycleNotice):
            self.lifecycle.on_notice(msg)
            return
        if isinstance(msg, ConsoleWatch):
            # Handled here, not in a task: it takes effect before any later message of its
            # sender (the watcher's confirming query) is answered.
            self.lifecycle.on_watch(msg)
            return
        self._spawn(self._apply_control(msg))

    # --- bidirectional emulation ----------------------------------------------------------------

    def register_emulation(self, session: ClientSession) -> None:
        self._emulated[session.emulation_id] = session

    async def emulate(
        self, node_id: str, session_id: str, data: bytes, origin: str | None
    ) -> EmulationOutcome:
        """Commands of an emulation request, for the stream `session_id` held by `node_id`:
        handed to the session when it is here, else sent over the control bus to its node,
        which acts alone on it (what became of them there is not known here); nothing when
        that node is not running (Centrifugo's 404: the client reconnects)."""
        if node_id == self.node_id:
            return self._emulate_here(session_id, data, origin)
        if not self.node_running(node_id):
            return EmulationOutcome.NO_NODE
        await self.send_control(
            Emulation(node=node_id, session=session_id, data=data, origin=origin)
        )
        return EmulationOutcome.FORWARDED

    def _emulate_here(self, session_id: str, data: bytes, origin: str | None) -> EmulationOutcome:
        session = self._emulated.get(session_id)
        if session is None:
            return EmulationOutcome.NO_SESSION
        if not session.on_emulation(data, origin):
            return EmulationOutcome.ORIGIN_REFUSED
        return EmulationOutcome.DELIVERED

    async def _apply_control(self, msg: ControlMessage) -> None:
        app_id = AppId(msg.app_id)
        if isinstance(msg, LeaveHeld):
            if self.events is not None and msg.origin_node != self.node_id:
                self.events.leave_held_elsewhere(
                    msg.origin_node, app_id, msg.room, msg.user, msg.pair, msg.delay
                )
            return
        if isinstance(msg, LeaveUndone):
            if self.events is not None and msg.holder == self.node_id:
                self.events.leave_undone_here(
                    app_id, msg.room, msg.user, msg.pair, msg.event, msg.data
                )
            return
        if isinstance(msg, Query):
            await self.cluster.on_query(msg)
            return
        if isinstance(msg, QueryReply):
            self.cluster.on_reply(msg)
            return
        if isinstance(msg, AccessChanged):
            await self._access_changed(msg)
            return
        if isinstance(msg, AppChanged):
            await self._app_changed(app_id)
            return
        if isinstance(msg, WebhooksChanged):
            if self.events is not None:
                self.events.invalidate(app_id)
            return
        if isinstance(msg, SubscriberCount):
            for session in self.hub.subscribers(ChannelRef(app_id, msg.channel)):
                session.subscriber_count_changed(msg.channel, msg.count)
            return
        if isinstance(msg, Emulation | NodeStats | ConsoleWatch | LifecycleNotice):
            return  # on_control's, never spawned
        if msg.client:
            one = self.hub.connection(app_id, msg.client)
            targets = [one] if one is not None and (not msg.user or one.user == msg.user) else []
        else:
            targets = self.hub.user_connections(app_id, msg.user)
        for session in targets:
            if isinstance(msg, Disconnect):
                session.disconnect(msg.code, msg.reason or None)
            elif isinstance(msg, Unsubscribe):
                await session.server_unsubscribe(msg.channel, msg.code, msg.reason)
            elif isinstance(msg, Subscribe):
                await session.server_subscribe(msg.channel)
            elif isinstance(msg, Refresh):
                session.server_refresh(msg.expire_at)

    def notify_app_changed(self, app_id: AppId) -> None:
        self.app_changes += 1
        for listener in self.app_change_listeners:
            listener(app_id)
        if self.events is not None:
            # A deleted app's webhooks are gone from SQL: a cached list would make the next
            # publication under the id queue deliveries for them (a foreign-key error).
            self.events.invalidate(app_id)

    async def _app_changed(self, app_id: AppId) -> None:
        self.notify_app_changed(app_id)
        sessions = self.hub.app_connections(app_id)
        if not sessions:
            return
        app = await self.apps.get_app(app_id)
        if app is not None and app.status:
            self._apps[app_id] = app
        else:
            self._apps.pop(app_id, None)
        for session in sessions:
            if app is None:
                session.disconnect(DisconnectCode.PERMISSION_DENIED, "application deleted")
            elif not app.status:
                session.disconnect(DisconnectCode.PERMISSION_DENIED, "application is disabled")
            else:
                session.app = app

    async def watch_lifecycle(self, app_id: str, listener: Listener) -> Callable[[], None]:
        """Tell `listener` the app's lifecycle events (connected, disconnected, subscribed,
        unsubscribed) on every node of the cluster, from when this returns, until the returned
        call; None once this node stops. See engine/lifecycle.py."""
        return await self.lifecycle.watch(app_id, listener)

    async def send_control(self, msg: ControlMessage) -> None:
        """Act on connections and caches of every node, this one included (the broker's
        control bus delivers to its sender too)."""
        msg = msgspec.structs.replace(msg, origin_node=self.node_id)
        await self.broker.publish_control(encode_control(msg))

    # --- publishing and reading -----------------------------------------------------------------
    # Publish validation, written once: the client's publish command and the HTTP APIs call
    # `channel_ref` and `publication_data` before `publish`, which checks the tags itself.

    def channel_ref(self, app_id: AppId, channel: str) -> ChannelRef:
        """The app's channel; a 107 for a name outside the channel grammar."""
        if not is_valid_channel(channel):
            raise ClientError(ErrorCode.BAD_REQUEST, "invalid channel name")
        return ChannelRef(app_id, channel)

    def publication_data(self, data: bytes | msgspec.Raw, app: Application | None = None) -> bytes:
        """What a publication carries: `null` when no data was given; a 106 past the size
        limit (the node's, or the app's quota when lower). The data is never parsed."""
        payload = bytes(data) if data else b"null"
        limit = self.options.max_message_size
        if app is not None:
            limit = lowest(limit, app.quotas.max_message_size)
        if len(payload) > limit:
            self.stats.refused("message_size")
            raise ClientError(ErrorCode.LIMIT_EXCEEDED, "message too large")
        return payload

    async def publish(
        self,
        ref: ChannelRef,
        data: bytes,
        options: NamespaceOptions,
        *,
        info: ClientInfoData | None = None,
        tags: dict[str, str] | None = None,
        skip_history: bool = False,
        idempotency_key: str = "",
        origin: str = "api",
        delta: bool = False,
    ) -> StreamPosition:
        if tags:
            _check_text(tags)
        history = not skip_history and options.history_size > 0 and options.history_ttl > 0
        held: HeldEvent | None = None
        if self.events is not None:
            # Durable before the publication goes out: a failed write answers an error with
            # nothing published, so a retry is no duplicate. Held until the broker took it.
            held = await self.events.publication(ref, tags, data, info.user if info else None)
        try:
            position = await self.broker.publish(
                ref,
                data,
                PublishOptions(
                    history_size=options.history_size if history else 0,
                    history_ttl=options.history_ttl if history else 0,
                    tags=tags,
                    info=info,
                    idempotency_key=idempotency_key,
                    # Centrifugo's publish `delta`, or the namespace's `delta_publish`.
                    delta=delta or options.delta_publish,
                ),
            )
        except BaseException:
            if held is not None:
                await held.cancel()
            raise
        if held is not None:
            held.release()
        self.analytics.publication(ref.app_id, broadcast=origin == "api")
        key = (origin, namespace_kind(ref.name))
        self.stats.publications[key] = self.stats.publications.get(key, 0) + 1
        return position

    async def history(
        self,
        ref: ChannelRef,
        limit: int,
        since: m.StreamPosition | None,
        reverse: bool,
    ) -> m.HistoryResult:
        """History of a channel, Centrifuge-shaped; 112 if `since` names another epoch."""
        since_pos = StreamPosition(since.offset, since.epoch) if since is not None else None
        # As Centrifuge: 0 asks for the position only, -1 (or less) for everything kept.
        result = await self.broker.history(
            ref,
            HistoryOptions(
                limit=limit if limit >= 0 else -1,
                since=since_pos,
                reverse=reverse,
                # One reply carries at most this much: the caller pages on from the last offset.
                max_bytes=self.options.max_history_reply_bytes,
            ),
        )
        if since is not None and since.epoch and since.epoch != result.position.epoch:
            raise ClientError(ErrorCode.UNRECOVERABLE_POSITION)
        return m.HistoryResult(
            publications=[publication_message(p) for p in result.publications] or None,
            epoch=result.position.epoch,
            offset=result.position.offset,
        )

    async def remove_history(self, ref: ChannelRef) -> None:
        await self.broker.remove_history(ref)

    async def subscriber_count(self, ref: ChannelRef) -> int:
        """Subscribers of the channel on every node (a round trip to a shared broker)."""
        return await self.broker.subscriber_count(ref)

    # --- presence -------------------------------------------------------------------------------

    async def presence(self, ref: ChannelRef) -> dict[str, ClientInfoData]:
        """Clients present in the channel, by client id, on every node."""
        return await self.presence_store.presence(ref)

    async def presence_stats(self, ref: ChannelRef) -> tuple[int, int]:
        """(clients, distinct users) present in the channel, on every node."""
        return await self.presence_store.presence_stats(ref)

    # --- this node ------------------------------------------------------------------------------

    def channels(self, app_id: AppId) -> dict[str, int]:
        """The app's channels with subscribers on this node, with their subscriber counts."""
        return self.hub.channels(app_id)

    def connection_total(self) -> int:
        return self.hub.total_connections()

    def subscription_total(self) -> int:
        return self.hub.subscription_total()

    def history_bytes(self) -> int | None:
        """Bytes of history held in this process; None for a broker that keeps it elsewhere."""
        held: int | None = getattr(self.broker, "history_bytes", None)
        return held

    def app_info(self, app_id: AppId) -> AppInfo:
        channels = self.hub.channels(app_id)
        return AppInfo(
            num_clients=self.hub.connection_count(app_id),
            num_users=self.hub.user_count(app_id),
            num_channels=len(channels),
            num_subs=sum(channels.values()),
        )

    async def ping(self) -> None:
        """Raises if the broker cannot be reached (the health check)."""
        await self.broker.ping()

    # --- the cluster ----------------------------------------------------------------------------

    def local_stats(self, *, leaving: bool = False, hello: bool = False) -> NodeStats:
        """This node's heartbeat (see engine.cluster)."""
        return NodeStats(
            app_id="",
            name=self.name,
            version=self.version,
            uptime=int(time.time() - self.started_at),
            apps={} if leaving else self.hub.app_stats(),
            interval=self.options.node_stats_interval,
            leaving=leaving,
            hello=hello,
        )

    def answer_query(self, query: Query) -> QueryReply:
        """This node's share of a cluster query."""
        app_id = AppId(query.app_id)
        reply = QueryReply(app_id=app_id, query_id=query.query_id, to_node=query.origin_node)
        reply.origin_node = self.node_id
        if query.kind == "channels":
            reply.channels = self.hub.channels(app_id)
        elif query.kind == "connections":
            sessions = (
                self.hub.user_connections(app_id, query.user)
                if query.user
                else self.hub.app_connections(app_id)
            )
            reply.connections = {
                s.client_id: ConnectionSummary(
                    user=s.user,
                    transport=getattr(s.transport, "name", "websocket"),
                    protocol=s.transport.codec.name,
                    channels=list(s.subs),
                    token_id=s.token_id,
                    issued_at=s.issued_at or 0,
                )
                for s in sessions
                if s.state is State.CONNECTED
            }
        return reply

    async def cluster_channels(self, app_id: AppId) -> dict[str, int]:
        """The app's channels with subscribers on any live node, with their counts summed."""
        total: dict[str, int] = {}
        for reply in await self.cluster.query(app_id, "channels"):
            for name, count in reply.channels.items():
                total[name] = total.get(name, 0) + count
        return total

    async def cluster_connections(self, app_id: AppId, user: str) -> dict[str, ConnectionSummary]:
        """The app's connections (of `user` only, when given) on every live node."""
        found: dict[str, ConnectionSummary] = {}
        for reply in await self.cluster.query(app_id, "connections", user):
            found.update(reply.connections)
        return found

    def cluster_info(self, app_id: AppId) -> list[tuple[NodeStats, AppInfo]]:
        """Every live node (this one first, counted now) with the app's share of it."""
        mine = self.local_stats()
        nodes = [(mine, self.app_info(app_id))]
        nodes[0][0].origin_node = self.node_id
        for stats in self.cluster.peers():
            counts = stats.apps.get(app_id, (0, 0, 0, 0))
            nodes.append((stats, AppInfo(*counts)))
        return nodes

    async def user_connections_elsewhere(self, app_id: AppId, user: str) -> int:
        """The user's connections on the other nodes, from the broker's per-user counter (the
        one user-online/offline come from; kept only when channel events are on)."""
        if self.events is None or not user:
            return 0
        total = await self.broker.subscriber_count(ChannelRef(app_id, USER_COUNTER_PREFIX + user))
        return max(0, total - len(self.hub.user_connections(app_id, user)))

    def cluster_connection_count(self, app_id: AppId) -> int:
        """The app's connections here (now) and on the other live nodes (last heartbeat)."""
        return self.hub.connection_count(app_id) + self.cluster.connections_elsewhere(app_id)

    # --- access rules ---------------------------------------------------------------------------

    async def access_rules(self, app_id: AppId) -> AccessRules:
        """The app's rules from memory, read from the store at most once per TTL."""
        if self.access is None:
            return AccessRules()
        now = time.monotonic()
        cached = self._rules.get(app_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        rules = await self.access.load_rules(app_id)
        if len(self._rules) > 10_000:
            self._rules.clear()
        self._rules[app_id] = (now + self.options.access_rules_ttl, rules)
        return rules

    async def access_refusal(
        self, app_id: AppId, user: str, token_id: str, issued_at: int | None
    ) -> str | None:
        """Why the app refuses this user or token now (blocked, revoked), or None."""
        rules = await self.access_rules(app_id)
        return rules.refusal(user, token_id, issued_at, time.time())

    def _require_access(self) -> AccessStore:
        if self.access is None:
            raise ClientError(ErrorCode.NOT_AVAILABLE, "no access store configured")
        return self.access

    async def block_user(self, app_id: AppId, user: str, expire_at: int) -> None:
        await self._require_access().block_user(app_id, user, expire_at)
        await self.send_control(AccessChanged(app_id=app_id, user=user))

    async def unblock_user(self, app_id: AppId, user: str) -> None:
        await self._require_access().unblock_user(app_id, user)
        await self.send_control(AccessChanged(app_id=app_id, user=user))

    async def revoke_token(self, app_id: AppId, token_id: str, expire_at: int) -> None:
        await self._require_access().revoke_token(app_id, token_id, expire_at)
        await self.send_control(AccessChanged(app_id=app_id, token_id=token_id))

    async def invalidate_user_tokens(
        self, app_id: AppId, user: str, issued_before: int, expire_at: int, channel: str = ""
    ) -> None:
        """The user's connection tokens issued before `issued_before`, or with `channel` only
        their subscription tokens for that channel (Centrifugo PRO's semantics)."""
        await self._require_access().invalidate_user_tokens(
            app_id, user, issued_before, expire_at, channel
        )
        await self.send_control(
            AccessChanged(app_id=app_id, user=user, issued_before=issued_before, channel=channel)
        )

    async def _access_changed(self, msg: AccessChanged) -> None:
        """Drop the app's cached rules; close the connections they now refuse, and end the
        subscriptions whose subscription token they now refuse (2000, not to come back with
        the same token)."""
        app_id = AppId(msg.app_id)
        self._rules.pop(app_id, None)
        self.access_changes += 1
        if msg.user:
            sessions = self.hub.user_connections(app_id, msg.user)
        elif msg.token_id:
            sessions = [
                s
                for s in self.hub.app_connections(app_id)
                if s.token_id == msg.token_id
                or any(sub.token_id == msg.token_id for sub in s.subs.values())
            ]
        else:
            return
        if not sessions:
            return
        rules = await self.access_rules(app_id)
        now = time.time()
        for session in sessions:
            reason = rules.refusal(session.user, session.token_id, session.issued_at, now)
            if reason is not None:
                self.stats.refused("blocked" if reason == "user is blocked" else "revoked")
                session.disconnect(refusal_code(reason), reason)
                continue
            for channel, sub in list(session.subs.items()):
                if not sub.by_token:
                    continue
                why = rules.subscription_refusal(
                    session.user, channel, sub.token_id, sub.issued_at, now
                )
                if why is not None:
                    self.stats.refused("revoked")
                    await session.server_unsubscribe(channel, UnsubscribeCode.SERVER, why)
