"""One Pusher client connection: protocol 7's state machine over the engine's session.

`PusherSession` is a `ClientSession` whose messages are Pusher events: it joins the same hub,
presence store and broker as Centrifuge clients (one channel space per app), so the node's
fan-out, ping sweep, server API (disconnect, unsubscribe) and cleanup serve it unchanged. It
never touches the socket; its frames are encoded by `protocol.pusher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Mapping

import msgspec

from xshathra.engine.channels import NAMESPACE_SEPARATOR
from xshathra.engine.client import (
    ClientSession,
    ClientTransport,
    State,
    Subscription,
    origin_allowed,
)
from xshathra.engine.errors import ClientError
from xshathra.engine.node import Node
from xshathra.engine.writer import OutgoingFrame
from xshathra.model import ClientInfoData
from xshathra.protocol import messages as m
from xshathra.protocol import pusher as p
from xshathra.protocol.codes import DisconnectCode, ErrorCode, UnsubscribeCode
from xshathra.tenancy.apps import NamespaceOptions

log = logging.getLogger("xshathra.pusher")

# Centrifuge disconnect codes the engine uses, as the Pusher close code with the same effect on
# the client (reconnect now, after a back-off, or never).
_CLOSE_CODES: dict[int, p.PusherCode] = {
    DisconnectCode.SHUTDOWN: p.PusherCode.RECONNECT,
    DisconnectCode.NO_PONG: p.PusherCode.PONG_NOT_RECEIVED,
    DisconnectCode.SLOW: p.PusherCode.OVER_CAPACITY,
    DisconnectCode.TOO_MANY_REQUESTS: p.PusherCode.OVER_CAPACITY,
    DisconnectCode.CONNECTION_LIMIT: p.PusherCode.OVER_CONNECTION_QUOTA,
    DisconnectCode.PERMISSION_DENIED: p.PusherCode.APP_DISABLED,
    DisconnectCode.STALE: p.PusherCode.CLOSED_INACTIVE,
    DisconnectCode.FORCE_NO_RECONNECT: p.PusherCode.UNAUTHORIZED,
}


def new_socket_id() -> str:
    """Pusher's `socket_id` shape (`\\d+\\.\\d+`), which server libraries check."""
    return f"{secrets.randbits(40)}.{secrets.randbits(40)}"


class PusherSession(ClientSession):
    __slots__ = ("_client_events", "_client_events_at", "_opened", "_signin_timer", "members")

    def __init__(self, node: Node, transport: ClientTransport) -> None:
        super().__init__(node, transport)
        self.client_id = new_socket_id()
        # Per presence channel: user id -> how many of their connections this client knows of,
        # so that a user with two tabs is added and removed once, as Pusher does.
        self.members: dict[str, dict[str, int]] = {}
        self._client_events = float(p.CLIENT_EVENTS_PER_SECOND)
        self._client_events_at = time.monotonic()
        # Set once the connection is open or refused; made only for a client that sends before
        # `connection_established` (pusher-js waits for it), so idle connections do not pay.
        self._opened: asyncio.Event | None = None
        # Apps that require sign-in: closes the connection unless it signs in first.
        self._signin_timer: asyncio.TimerHandle | None = None

    # --- opening ------------------------------------------------------------------------------

    async def open(self, key: str, query: Mapping[str, str]) -> None:
        """Find the app by its public key and greet the client, or close with Pusher's code."""
        try:
            await self._open(key, query)
        except Exception:
            log.exception("opening a Pusher connection failed")
            self._refuse(p.PusherCode.RECONNECT, "Internal error")
        finally:
            if self._opened is not None:
                self._opened.set()

    async def _open(self, key: str, query: Mapping[str, str]) -> None:
        version = query.get("protocol")
        if not version:
            self._refuse(p.PusherCode.NO_VERSION, "No protocol version supplied")
            return
        if not version.isdigit():
            self._refuse(p.PusherCode.INVALID_VERSION, "Invalid version string format")
            return
        if not 5 <= int(version) <= p.PROTOCOL_VERSION:
            self._refuse(p.PusherCode.UNSUPPORTED_VERSION, "Unsupported protocol version")
            return
        node = self.node
        app_changes = node.app_changes
        app = await node.app_for_client_key(key) if key else None
        if app is None:
            self._refuse(p.PusherCode.APP_NOT_FOUND, f"App key {key[:64]} not in this cluster")
            return
        if not app.status:
            self._refuse(p.PusherCode.APP_DISABLED, "Application disabled")
            return
        if not origin_allowed(app.allowed_domain, self.transport.origin):
            self._refuse(p.PusherCode.UNAUTHORIZED, "Origin not allowed")
            return
        if self.closed:
            return
        if node.hub.connection_count(app.app_id) >= node.options.max_connections_per_app:
            self._refuse(p.PusherCode.OVER_CONNECTION_QUOTA, "Over connection quota")
            return
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        self.app, self.app_id = app, app.app_id
        self.state = State.CONNECTED
        node.register(self, app_changes)
        self.send_event(p.connection_established(self.client_id))
        if app.pusher_user_authentication:
            self._signin_timer = node.loop.call_later(
                node.options.pusher_signin_timeout, self._signin_overdue
            )

    def _signin_overdue(self) -> None:
        """Pusher's enforced user authentication: not signed in within the timeout."""
        self._signin_timer = None
        if self.state is State.CONNECTED:
            self._refuse(p.PusherCode.UNAUTHORIZED, "Connection not authorized within timeout")

    def _refuse(self, code: p.PusherCode, message: str) -> None:
        self.disconnect(int(code), message)

    # --- sending ------------------------------------------------------------------------------

    def send_event(self, payload: bytes) -> None:
        self.writer.enqueue(OutgoingFrame(payload))

    def send_push(self, push: m.Push) -> None:
        """The engine's own pushes: Pusher has no server-side unsubscribe, so a subscription
        the engine dropped for lost state is quietly made again (the client keeps it)."""
        if push.unsubscribe is not None and push.unsubscribe.code == UnsubscribeCode.INSUFFICIENT:
            self.node.loop.create_task(self._resubscribe(push.channel))

    async def _resubscribe(self, channel: str) -> None:
        with contextlib.suppress(Exception):
            await self._join(channel, None, quiet=True)

    def disconnect(self, code: int, reason: str | None = None) -> None:
        """Close with the Pusher code that has the Centrifuge code's effect on the client."""
        if self.state is State.CLOSED:
            return
        if self._signin_timer is not None:
            self._signin_timer.cancel()
            self._signin_timer = None
        pusher_code = (
            code if 4000 <= code < 4400 else int(_CLOSE_CODES.get(code, p.PusherCode.RECONNECT))
        )
        message = reason or "closed"
        if code == DisconnectCode.SLOW:
            # Nothing more is queued for a client that does not read (as the engine does).
            self.writer.close()
        else:
            # pusher-js reads the code from `pusher:error` as well as from the close frame.
            self.send_event(p.error_event(pusher_code, message))
        super().disconnect(pusher_code, message)

    # --- messages -----------------------------------------------------------------------------

    async def _handle_frame(self, frame: bytes) -> None:
        if not self._allow_command():
            self.disconnect(p.PusherCode.OVER_CAPACITY, "Too many messages")
            return
        self.awaiting_pong = False  # any message shows the client is alive
        if self.state is State.CONNECTING:
            # Sent before `connection_established`: handled, in order, once the app is known.
            if self._opened is None:
                self._opened = asyncio.Event()
            await self._opened.wait()
        if self.state is not State.CONNECTED:
            return
        try:
            event = p.decode_event(frame)
        except p.PusherDecodeError:
            self.send_event(p.error_event(None, "Invalid message: not a Pusher event"))
            return
        name = event.event
        try:
            if name == "pusher:ping":
                self.send_event(p.PONG)
            elif name == "pusher:pong":
                pass
            elif name == "pusher:subscribe":
                await self._subscribe_event(p.decode_subscribe(event.data))
            elif name == "pusher:unsubscribe":
                channel = p.decode_unsubscribe(event.data).channel
                await self._drop_subscription(channel)
                self.members.pop(channel, None)
            elif name == "pusher:signin":
                self._signin(p.decode_signin(event.data))
            elif name.startswith(p.CLIENT_EVENT_PREFIX):
                await self._client_event(name, event.channel, bytes(event.data))
            else:
                self.send_event(p.error_event(None, f"Unsupported event: {name[:64]}"))
        except p.PusherDecodeError:
            self.send_event(p.error_event(None, f"Invalid data for {name[:64]}"))

    # --- subscriptions ------------------------------------------------------------------------

    async def _subscribe_event(self, req: p.SubscribeData) -> None:
        channel = req.channel
        app = self.app
        assert app is not None
        if len(channel) > p.MAX_CHANNEL_NAME:
            self._sub_error(channel, "InvalidChannel", "Channel name too long", 400)
            return
        if channel.startswith(p.SERVER_TO_USER_PREFIX):
            if not self.user or channel != p.SERVER_TO_USER_PREFIX + self.user:
                self._sub_error(channel, "AuthError", "Only the signed-in user", 403)
                return
            await self._join_checked(channel, None)
            return
        if self._needs_auth(channel):
            expected = p.channel_auth(
                app.client_api_key,
                app.app_secret,
                self.client_id,
                channel,
                req.channel_data if p.is_presence(channel) else None,
            )
            if not req.auth or not p.auth_matches(expected, req.auth):
                self._sub_error(channel, "AuthError", "Invalid signature", 401)
                return
        member: p.ChannelData | None = None
        if p.is_presence(channel):
            try:
                member = p.decode_channel_data(req.channel_data or "")
            except p.PusherDecodeError:
                self._sub_error(channel, "AuthError", "Invalid channel_data", 400)
                return
        await self._join_checked(channel, member)

    async def _join_checked(self, channel: str, member: p.ChannelData | None) -> None:
        try:
            await self._join(channel, member, quiet=False)
        except ClientError as exc:
            self._sub_error(channel, "SubscriptionError", exc.message or "refused", 400)

    def _needs_auth(self, channel: str) -> bool:
        """`private-` and `presence-` channels, as in Pusher; and a namespaced channel (a name
        Pusher itself never has) unless its namespace lets any client subscribe: the Centrifuge
        side would ask a subscription token there, the app's signature is its equivalent."""
        if p.is_private(channel):
            return True
        return (
            NAMESPACE_SEPARATOR in channel and not self._options(channel).allow_subscribe_for_client
        )

    def _sub_error(self, channel: str, kind: str, message: str, status: int) -> None:
        self.send_event(p.subscription_error(channel, kind, message, status))

    def _pusher_options(self, channel: str) -> NamespaceOptions:
        """The namespace's options, with presence and join/leave as Pusher's channel type has
        them: on for `presence-` channels, off for every other (no history is read)."""
        presence = p.is_presence(channel)
        return msgspec.structs.replace(
            self._options(channel),
            presence=presence,
            join_leave=presence,
            force_push_join_leave=presence,
        )

    async def _join(self, channel: str, member: p.ChannelData | None, *, quiet: bool) -> None:
        node = self.node
        ref = node.channel_ref(self.app_id, channel)
        if channel in self.subs:
            if not quiet:
                await self._succeeded(channel, self.subs[channel])
            return
        if len(self.subs) >= node.options.max_channels_per_connection:
            raise ClientError(ErrorCode.LIMIT_EXCEEDED, "too many channels")
        options = self._pusher_options(channel)
        user = None
        chan_info = b""
        if member is not None:
            user = str(member.user_id)
            chan_info = bytes(member.user_info)
            _, users = await node.presence_stats(ref)
            if users >= p.MAX_PRESENCE_MEMBERS:
                present = await node.presence(ref)
                if all(info.user != user for info in present.values()):
                    self._sub_error(
                        channel, "LimitReached", "Presence channel member limit reached", 4100
                    )
                    return
        sub = Subscription(
            ref=ref, options=options, chan_info=chan_info, join_leave=options.join_leave, user=user
        )
        self.subs[channel] = sub
        try:
            await node.add_pending_subscriber(ref, self)
            if options.presence:
                await node.presence_store.add_presence(ref, self.sub_info(sub))
                await node.broker.publish_join(ref, self.sub_info(sub))
        except BaseException:
            self.subs.pop(channel, None)
            with contextlib.suppress(Exception):
                await node.remove_subscriber(ref, self)
            if options.presence:
                with contextlib.suppress(Exception):
                    await node.presence_store.remove_presence(ref, self.client_id)
            raise
        if self.state is State.CLOSED or self.subs.get(channel) is not sub:
            return
        if not quiet:
            await self._succeeded(channel, sub)
        cached = 0
        if not quiet and p.is_cache(channel):
            cached = await self._send_cached(channel, sub)
            if self.closed or self.subs.get(channel) is not sub:
                return  # its cleanup removes the pending subscription
        sub.live = True
        for offset, frame in node.hub.promote(ref, self):
            if 0 < offset <= cached:
                continue  # the cached event itself, published while this one was pending
            self.writer.enqueue(frame)
        node.subscription_added(self, sub)

    async def _send_cached(self, channel: str, sub: Subscription) -> int:
        """A cache channel's last event (kept as history of one, for CACHE_TTL) to its new
        subscriber, first of all events; else `pusher:cache_miss` and the app's cache_miss
        webhook. Returns the event's offset (0 on a miss)."""
        node = self.node
        try:
            last = await node.history(sub.ref, 1, None, True)
        except Exception as exc:  # a broker outage: a miss, not a failed subscription
            log.warning("cache channel read failed: %s", type(exc).__name__)
            last = m.HistoryResult()
        if last.publications:
            pub = last.publications[0]
            self.send_event(
                p.encode_event(p.event_name(pub.tags), p.event_data(bytes(pub.data)), channel)
            )
            return pub.offset
        self.send_event(p.cache_miss(channel))
        if node.events is not None:
            node.spawn(node.events.cache_miss(sub.ref))
        return 0

    async def _succeeded(self, channel: str, sub: Subscription) -> None:
        if not sub.options.presence:
            self.send_event(p.subscription_succeeded(channel))
            return
        present = await self.node.presence(sub.ref)
        counts: dict[str, int] = {}
        members: dict[str, bytes] = {}
        for info in present.values():
            if not info.user:
                continue  # an anonymous Centrifuge client: no Pusher member
            counts[info.user] = counts.get(info.user, 0) + 1
            members.setdefault(info.user, info.chan_info)
        # The member list includes this connection, which never hears of its own join.
        self.members[channel] = counts
        self.send_event(p.subscription_succeeded(channel, members))

    def wants_join_leave(self, channel: str, info: ClientInfoData, join: bool) -> bool:
        """Told of a user's first connection joining and last leaving only, never of itself."""
        sub = self.subs.get(channel)
        if sub is None or not sub.join_leave or info.client == self.client_id or not info.user:
            return False
        counts = self.members.setdefault(channel, {})
        held = counts.get(info.user, 0)
        if join:
            counts[info.user] = held + 1
            return held == 0
        if held <= 1:
            counts.pop(info.user, None)
            return held == 1
        counts[info.user] = held - 1
        return False

    def subscriber_count_changed(self, channel: str, count: int) -> None:
        if channel in self.subs:
            self.send_event(p.subscription_count(channel, count))

    async def server_subscribe(self, channel: str) -> None:
        """Server API `subscribe`: joined without auth, and told as if it had asked."""
        if self.state is State.CONNECTED and channel not in self.subs:
            with contextlib.suppress(ClientError):
                await self._join(channel, None, quiet=False)

    # --- client events and sign-in ------------------------------------------------------------

    async def _client_event(self, name: str, channel: str | None, data: bytes) -> None:
        app = self.app
        assert app is not None
        if not getattr(app, "pusher_client_events", False):
            self.send_event(p.error_event(None, "Client events are not enabled for this app"))
            return
        if not channel or not p.is_private(channel) or p.is_encrypted(channel):
            self.send_event(
                p.error_event(None, "Client events are allowed on private and presence channels")
            )
            return
        sub = self.subs.get(channel)
        if sub is None:
            self.send_event(
                p.error_event(None, f"Not subscribed to {channel[: p.MAX_CHANNEL_NAME]}")
            )
            return
        if not self._allow_client_event():
            self.send_event(
                p.error_event(
                    p.PusherCode.CLIENT_EVENT_REJECTED,
                    f"Client event rejected: at most {p.CLIENT_EVENTS_PER_SECOND} per second",
                )
            )
            return
        if len(name) > p.MAX_EVENT_NAME:
            self.send_event(p.error_event(None, "Event name too long"))
            return
        if len(data) > p.MAX_CLIENT_EVENT_BYTES:
            self.send_event(
                p.error_event(
                    None, f"Client event data too large (at most {p.MAX_CLIENT_EVENT_BYTES} bytes)"
                )
            )
            return
        try:
            payload = self.node.publication_data(data)
            await self.node.publish(
                sub.ref,
                payload,
                sub.options,
                info=self.sub_info(sub),
                tags={"event": name},
                origin="client",
            )
        except ClientError as exc:
            self.send_event(p.error_event(None, exc.message or "Client event refused"))
        except Exception as exc:
            log.warning("client event failed on a backend: %s", type(exc).__name__)
            self.send_event(p.error_event(None, "Client event could not be sent"))

    def _allow_client_event(self) -> bool:
        """Pusher's limit: 10 client events per second per connection (a token bucket)."""
        now = time.monotonic()
        rate = float(p.CLIENT_EVENTS_PER_SECOND)
        self._client_events = min(rate, self._client_events + (now - self._client_events_at) * rate)
        self._client_events_at = now
        if self._client_events < 1.0:
            return False
        self._client_events -= 1.0
        return True

    def _signin(self, req: p.SigninData) -> None:
        app = self.app
        assert app is not None
        expected = p.signin_auth(app.client_api_key, app.app_secret, self.client_id, req.user_data)
        try:
            user = p.decode_user_data(req.user_data)
        except p.PusherDecodeError:
            user = None
        if user is None or not user.id or not p.auth_matches(expected, req.auth):
            self._refuse(
                p.PusherCode.UNAUTHORIZED, "Invalid signin: the connection is unauthorized"
            )
            return
        # Known by its user from now on (terminate_connections, analytics, the server API).
        if self._signin_timer is not None:
            self._signin_timer.cancel()
            self._signin_timer = None
        hub = self.node.hub
        hub.remove_connection(self)
        self.user = user.id
        hub.add_connection(self)
        self.send_event(
            p.encode_event(
                "pusher:signin_success", msgspec.json.encode({"user_data": req.user_data}).decode()
            )
        )
