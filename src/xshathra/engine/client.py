"""One client session: the Centrifuge command state machine for a single connection.

It owns the connection's credentials, subscriptions and timers, and answers commands in order.
It never touches sockets (the transport does) and never encodes a publication (the hub does);
it reads and writes its own frames through the codec its transport chose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

import msgspec.structs

from xshathra.engine.channels import is_valid_channel, namespace_of
from xshathra.engine.errors import ClientError, DisconnectError, error_message
from xshathra.engine.hub import (
    SubscriberFeatures,
    client_info_message,
    delta_publication_message,
    publication_message,
)
from xshathra.engine.proxy import ProxyUnavailable, answered, refuse, result_of
from xshathra.engine.writer import FrameSink, OutgoingFrame, Writer
from xshathra.model import (
    AppId,
    BrokerPublication,
    ChannelRef,
    ClientInfoData,
    HistoryOptions,
    StreamPosition,
)
from xshathra.protocol import messages as m
from xshathra.protocol import proxy as p
from xshathra.protocol.codec import ProtocolDecodeError
from xshathra.protocol.codes import (
    DISCONNECT_REASONS,
    TEMPORARY_ERRORS,
    DisconnectCode,
    ErrorCode,
    UnsubscribeCode,
)
from xshathra.protocol.delta import DELTA_TYPES
from xshathra.protocol.filters import FilterError, check_filter, filter_key, matches
from xshathra.tenancy.apps import Application, NamespaceOptions, lowest
from xshathra.tenancy.proxies import NO_PROXIES, ProxyTarget
from xshathra.tenancy.tokens import (
    ConnectionClaims,
    SubscriptionClaims,
    TokenError,
    TokenExpiredError,
)

if TYPE_CHECKING:
    from xshathra.engine.node import Node


def refusal_code(reason: str) -> DisconnectCode:
    """The disconnect code for an access-rule refusal: a blocked user is told not to come
    back (3503, force disconnect); a revoked token is an invalid token (3500)."""
    if reason == "user is blocked":
        return DisconnectCode.FORCE_NO_RECONNECT
    return DisconnectCode.INVALID_TOKEN


log = logging.getLogger("xshathra.client")


class ClientTransport(FrameSink, Protocol):
    @property
    def remote_ip(self) -> str: ...

    origin: str | None
    # The HTTP request that opened the connection, for backend proxies (SPEC §9): its headers
    # (None once dropped: the session drops them when its app has no proxy) and query string.
    request_headers: Sequence[tuple[str, str]] | None
    query: str

    @property
    def unidirectional(self) -> bool:
        """The client cannot send after its connect request (uni_websocket, uni_sse,
        uni_http_stream): its connect result goes out as a `connect` push, a refused connect
        as a disconnect, and no pong is awaited after a ping."""

    @property
    def emulation(self) -> bool:
        """The client sends its commands beside the stream, to the emulation endpoint (the
        `http_stream` and `sse` transports): the session gets an emulation session id, named
        in its connect result, that those requests are addressed by."""

    def close(self, code: int, reason: str) -> None:
        """Send a close frame with this code after what is queued, then close the connection."""


NO_CHANNELS: frozenset[str] = frozenset()  # shared: most tokens name no channels


class State(Enum):
    CONNECTING = 0
    CONNECTED = 1
    CLOSED = 2


@dataclass(slots=True)
class Subscription:
    ref: ChannelRef
    options: NamespaceOptions
    chan_info: bytes = b""
    join_leave: bool = False
    expires_at: int | None = None
    timer: asyncio.TimerHandle | None = None
    live: bool = False
    # Channel features (SPEC §8): a gap in the stream disconnects a positioned subscriber
    # with 3010; `features` holds its delta or tags filter, None for most subscriptions.
    positioned: bool = False
    features: SubscriberFeatures | None = None
    # Who this subscription is present as, when not the connection's user: a Pusher presence
    # member names its user per channel (`channel_data.user_id`).
    user: str | None = None
    # Made with a subscription token: its `jti` and `iat`, what revoke_token and
    # invalidate_user_tokens (with `channel`) name; both empty for any other subscription.
    token_id: str = ""
    issued_at: int | None = None
    by_token: bool = False


Finalizer = Callable[[], None]


ReplyT = TypeVar("ReplyT", bound=p.BaseReply)
RequestT = TypeVar("RequestT", bound=p.ProxyRequest)
# Retries of a failed server-side refresh (refresh or sub_refresh proxy), seconds apart.
PROXY_REFRESH_RETRY = 5.0


@dataclass(slots=True)
class Granted:
    """What a backend's connect reply (`subs`) or subscribe reply grants one subscription."""

    chan_info: bytes = b""
    expires_at: int | None = None
    data: bytes | None = None
    override: p.SubscribeOptionOverride | None = None


class ClientSession:
    """A connection's protocol state. Created by a transport once the WebSocket is open."""

    # Slots: thousands of idle sessions per node, so no per-instance dict.
    __slots__ = (
        "__weakref__",
        "_connect_timer",
        "_inbox",
        "_task",
        "_tokens",
        "_tokens_at",
        "app",
        "app_id",
        "awaiting_pong",
        "client_id",
        "conn_info",
        "emulation_id",
        "expires_at",
        "expiry_deadline",
        "issued_at",
        "meta",
        "node",
        "state",
        "subs",
        "token_channels",
        "token_id",
        "transport",
        "user",
        "writer",
    )

    def __init__(self, node: Node, transport: ClientTransport) -> None:
        self.node = node
        self.transport = transport
        self.writer = Writer(transport, node.scheduler, node.options.client_queue_max_bytes, self)
        self.client_id = str(uuid.uuid4())
        self.state = State.CONNECTING
        self.app: Application | None = None
        self.app_id = AppId("")
        self.user = ""
        self.conn_info = b""
        self.token_channels: frozenset[str] = NO_CHANNELS
        self.token_id = ""  # the connection token's jti
        self.issued_at: int | None = None  # and its iat
        self.expires_at: int | None = None
        self.meta = b""  # the connect proxy's `meta`: sent back in every later proxy request
        self.subs: dict[str, Subscription] = {}
        self.awaiting_pong = False
        self.emulation_id = ""  # set once connected over an emulation transport
        # Messages not handled yet; None while there are none (most of an idle connection's
        # life): even an empty list is 56 bytes per connection.
        self._inbox: list[bytes] | None = None
        self._task: asyncio.Task[None] | None = None
        self.expiry_deadline: float | None = None  # see engine.deadlines
        self._connect_timer: asyncio.TimerHandle | None = node.loop.call_later(
            node.options.connect_timeout, self._connect_timeout
        )
        self._tokens = float(node.options.client_command_burst)
        self._tokens_at = time.monotonic()

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def awaiting_connect(self) -> bool:
        """No command has been handed to this session yet (a unidirectional transport's next
        message is then its connect request)."""
        return self.state is State.CONNECTING and self._task is None and self._inbox is None

    # --- transport entry points ------------------------------------------------------------

    def on_message(self, data: bytes) -> None:
        """A complete WebSocket message arrived. Commands are handled in order, one at a time."""
        if self.state is State.CLOSED:
            return
        inbox = self._inbox
        if inbox is None:
            self._inbox = [data]
        elif len(inbox) >= 64:
            self.disconnect(DisconnectCode.TOO_MANY_REQUESTS)
            return
        else:
            inbox.append(data)
        if self._task is None:
            self._task = self.node.loop.create_task(self._drain())

    def on_emulation(self, data: bytes, origin: str | None) -> bool:
        """Commands sent to the emulation endpoint for this session. False (and ignored) when
        the request came from a browser origin the app does not allow."""
        if self.app is None or not origin_allowed(self.app.allowed_domain, origin):
            return False
        self.on_message(data)
        return True

    def on_transport_closed(self) -> None:
        """The connection is gone (closed by either side)."""
        if self.state is State.CLOSED:
            return
        self._close_state()

    # --- command handling -----------------------------------------------------------------

    async def _drain(self) -> None:
        try:
            while self._inbox and self.state is not State.CLOSED:
                await self._handle_frame(self._inbox.pop(0))
            self._inbox = None
        except DisconnectError as exc:
            self.disconnect(exc.code, exc.reason)
        except Exception:
            log.exception("unexpected error handling client %s", self.client_id)
            self.disconnect(DisconnectCode.SERVER_ERROR)
        finally:
            self._task = None

    def control_frame_allowed(self) -> bool:
        """A WebSocket ping costs a reply like a command does: it draws on the same rate."""
        return self.state is not State.CLOSED and self._allow_command()

    def _allow_command(self) -> bool:
        now = time.monotonic()
        options = self.node.options
        self._tokens = min(
            float(options.client_command_burst),
            self._tokens + (now - self._tokens_at) * options.client_command_rate,
        )
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    async def _handle_frame(self, frame: bytes) -> None:
        try:
            commands = self.transport.codec.decode_commands(frame)
        except ProtocolDecodeError:
            raise DisconnectError(DisconnectCode.BAD_REQUEST) from None
        for command in commands:
            if self.state is State.CLOSED:
                return
            if not self._allow_command():
                raise DisconnectError(DisconnectCode.TOO_MANY_REQUESTS)
            await self._dispatch(command)
            if command.connect is not None and self.state is State.CONNECTING:
                # The connect was refused (e.g. 109): centrifuge-js sends its subscribes in the
                # same frame; they are dropped, not answered with a 3501 that would stop it.
                return

    async def _dispatch(self, cmd: m.Command) -> None:
        if cmd.connect is not None:
            if self.transport.unidirectional:
                await self._connect_unidirectional(cmd.connect)
            else:
                await self._reply(cmd, "connect", self._connect(cmd.connect))
            return
        if self.state is not State.CONNECTED:
            raise DisconnectError(DisconnectCode.BAD_REQUEST, "connect first")
        if cmd.subscribe is not None:
            await self._reply(cmd, "subscribe", self._subscribe_cmd(cmd.subscribe))
        elif cmd.publish is not None:
            await self._reply(cmd, "publish", self._publish(cmd.publish))
        elif cmd.unsubscribe is not None:
            await self._reply(cmd, "unsubscribe", self._unsubscribe_cmd(cmd.unsubscribe))
        elif cmd.presence is not None:
            await self._reply(cmd, "presence", self._presence(cmd.presence))
        elif cmd.presence_stats is not None:
            await self._reply(cmd, "presence_stats", self._presence_stats(cmd.presence_stats))
        elif cmd.history is not None:
            await self._reply(cmd, "history", self._history(cmd.history))
        elif cmd.refresh is not None:
            await self._reply(cmd, "refresh", self._refresh(cmd.refresh))
        elif cmd.sub_refresh is not None:
            await self._reply(cmd, "sub_refresh", self._sub_refresh(cmd.sub_refresh))
        elif cmd.ping is not None:
            await self._reply(cmd, "ping", self._ping())
        elif cmd.rpc is not None:
            await self._reply(cmd, "rpc", self._rpc(cmd.rpc))
        elif cmd.send is not None:
            await self._send_message(cmd)
        elif cmd.id == 0:
            self.awaiting_pong = False  # an empty command is the pong to our ping
        else:
            self._send(m.Reply(id=cmd.id, error=_error(ErrorCode.METHOD_NOT_FOUND)))

    async def _reply(
        self, cmd: m.Command, field: str, work: Awaitable[tuple[object, Finalizer | None]]
    ) -> None:
        try:
            result, finalize = await work
        except ClientError as exc:
            self._send(m.Reply(id=cmd.id, error=_error(exc.code, exc.message, exc.temporary)))
            return
        except (DisconnectError, asyncio.CancelledError):
            raise
        except Exception as exc:
            # A backend failing (broker or store away): a temporary error the client retries,
            # instead of dropping the whole connection.
            log.warning("command failed on a backend: %s", type(exc).__name__)
            self._send(m.Reply(id=cmd.id, error=_error(ErrorCode.INTERNAL)))
            return
        if self.state is State.CLOSED:
            return
        self._send(m.Reply(id=cmd.id, **{field: result}))  # type: ignore[arg-type]
        if finalize is not None:
            # Right after the reply is queued, with no await between: buffered publications
            # follow the reply, never precede it.
            finalize()

    def _send(self, reply: m.Reply) -> None:
        self.writer.enqueue(OutgoingFrame(self.transport.codec.encode_reply(reply)))

    def send_push(self, push: m.Push) -> None:
        self._send(m.Reply(push=push))

    # --- connect ------------------------------------------------------------------------------

    async def _connect_unidirectional(self, req: m.ConnectRequest) -> None:
        """A uni client cannot answer an error reply: a refusal is a disconnect (as Centrifugo
        does), the result a `connect` push."""
        try:
            result, finalize = await self._connect(req)
        except ClientError as exc:
            code = (
                DisconnectCode.EXPIRED
                if exc.code == ErrorCode.TOKEN_EXPIRED
                else DisconnectCode.PERMISSION_DENIED
            )
            raise DisconnectError(code, exc.message) from None
        except (DisconnectError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.warning("unidirectional connect failed on a backend: %s", type(exc).__name__)
            raise DisconnectError(DisconnectCode.SERVER_ERROR) from None
        if self.state is State.CLOSED:
            return
        assert isinstance(result, m.ConnectResult)
        self._send(m.Reply(push=m.Push(connect=result)))
        if finalize is not None:
            finalize()

    async def _connect(self, req: m.ConnectRequest) -> tuple[object, Finalizer | None]:
        if self.state is not State.CONNECTING:
            raise DisconnectError(DisconnectCode.BAD_REQUEST, "already connected")
        node = self.node
        if not req.token:
            # Without a token only an app's connect proxy can let the client in (SPEC §9).
            return await self._connect_proxied(req)
        try:
            app_id = node.tokens.peek_app_id(req.token)
        except TokenError:
            raise DisconnectError(DisconnectCode.INVALID_TOKEN) from None
        app_changes = node.app_changes
        app = await node.get_app(app_id)
        if app is None:
            raise DisconnectError(DisconnectCode.INVALID_TOKEN)
        await node.tokens.prepare(req.token, app)  # the app's published keys, if it needs them
        # The token is verified before anything about the app is told: a client that cannot
        # sign for the app gets the same refusal whether the app exists, is disabled or fences
        # its origin (issue 11: those were readable before authentication).
        try:
            claims = node.tokens.verify_connection_token(req.token, app)
        except TokenExpiredError:
            raise ClientError(ErrorCode.TOKEN_EXPIRED) from None
        except TokenError:
            raise DisconnectError(DisconnectCode.INVALID_TOKEN) from None
        if not app.status:
            raise DisconnectError(DisconnectCode.PERMISSION_DENIED, "application is disabled")
        if not origin_allowed(app.allowed_domain, self.transport.origin):
            raise DisconnectError(DisconnectCode.PERMISSION_DENIED, "origin not allowed")
        return await self._register(req, app, claims, app_changes)

    async def _register(
        self,
        req: m.ConnectRequest,
        app: Application,
        claims: ConnectionClaims,
        app_changes: int,
        proxied: p.ConnectResult | None = None,
    ) -> tuple[object, Finalizer | None]:
        node = self.node
        access_changes = node.access_changes
        user_elsewhere = 0
        if app.quotas.max_connections_per_user is not None:
            user_elsewhere = await node.user_connections_elsewhere(app.app_id, claims.user)
        # A proxied connect has no token: only a block applies to it, not token revocations.
        issued_at = claims.issued_at if proxied is None else int(time.time())
        refusal = await node.access_refusal(app.app_id, claims.user, claims.token_id, issued_at)
        if refusal is not None:
            node.stats.refused("blocked" if refusal == "user is blocked" else "revoked")
            raise DisconnectError(refusal_code(refusal), refusal)
        if self.closed:
            raise DisconnectError(DisconnectCode.CONNECTION_CLOSED)
        # The quotas are checked with no await before the registration below: two connects on
        # this node cannot both take the last place.
        if node.hub.connection_count(app.app_id) >= node.options.max_connections_per_app:
            raise DisconnectError(DisconnectCode.CONNECTION_LIMIT)
        quotas = app.quotas
        if (
            quotas.max_connections is not None
            and node.cluster_connection_count(app.app_id) >= quotas.max_connections
        ):
            node.stats.refused("connection_quota")
            raise DisconnectError(DisconnectCode.CONNECTION_LIMIT, "application connection quota")
        if (
            quotas.max_connections_per_user is not None
            and len(node.hub.user_connections(app.app_id, claims.user)) + user_elsewhere
            >= quotas.max_connections_per_user
        ):
            node.stats.refused("user_quota")
            raise DisconnectError(DisconnectCode.CONNECTION_LIMIT, "user connection quota")
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        self.app, self.app_id, self.user = app, app.app_id, claims.user
        self.conn_info = claims.info or b""
        self.token_channels = frozenset(claims.channels) if claims.channels else NO_CHANNELS
        self.token_id, self.issued_at = claims.token_id, issued_at
        if app.proxies == NO_PROXIES:
            # Kept for proxies only: thousands of idle connections need not hold their headers.
            self.transport.request_headers = None
        elif proxied is None:
            self._emulate_headers(req)
        self.state = State.CONNECTED
        node.register(self, app_changes, access_changes)
        try:
            return await self._connected(req, claims, proxied)
        except (ClientError, DisconnectError, asyncio.CancelledError):
            raise
        except Exception as exc:
            # Registered but not answered: an error reply would leave the client believing
            # it is not connected while the server holds it as connected. End it cleanly;
            # 3004 tells the client to reconnect.
            log.warning("connect failed after registration: %s", type(exc).__name__)
            raise DisconnectError(DisconnectCode.SERVER_ERROR) from None

    async def _connect_proxied(self, req: m.ConnectRequest) -> tuple[object, Finalizer | None]:
        """A connect without a token: the app named by `?key=<client_api_key>` asks its
        backend's connect proxy, whose answer makes the connection (or refuses it)."""
        node = self.node
        try:
            query = parse_qs(self.transport.query or "", max_num_fields=20)
        except ValueError:  # more fields than any client sends
            raise DisconnectError(DisconnectCode.BAD_REQUEST, "bad query string") from None
        key = (query.get("key") or [""])[0]
        wanted_app = (query.get("app_id") or [""])[0]
        if not key:
            raise DisconnectError(DisconnectCode.INVALID_TOKEN, "token required")
        app_changes = node.app_changes
        app = await node.app_by_client_key(key, wanted_app)
        target = app.proxies.client_target("connect") if app is not None else None
        if app is None or target is None:
            # The same refusal whether the key is unknown or the app has no connect proxy.
            raise DisconnectError(DisconnectCode.INVALID_TOKEN, "token required")
        if not app.status:
            raise DisconnectError(DisconnectCode.PERMISSION_DENIED, "application is disabled")
        if not origin_allowed(app.allowed_domain, self.transport.origin):
            raise DisconnectError(DisconnectCode.PERMISSION_DENIED, "origin not allowed")
        # Refused before the backend is asked: a full app costs its backend nothing.
        if node.hub.connection_count(app.app_id) >= node.options.max_connections_per_app:
            raise DisconnectError(DisconnectCode.CONNECTION_LIMIT)
        self._emulate_headers(req)
        request = self._proxy_request(
            p.ConnectRequest,
            app,
            name=req.name,
            version=req.version,
            data=req.data,
            channels=list(req.subs) if req.subs else None,
        )
        result = result_of(await self._ask(app, target, request, p.ConnectReply))
        info = answered(result.info, result.b64info)
        channels = list(result.channels or ())
        channels += [c for c in result.subs or () if c not in channels]
        claims = ConnectionClaims(
            app_id=app.app_id,
            user=result.user,
            expires_at=result.expire_at if result.expire_at > 0 else None,
            info=info,
            channels=tuple(channels),
        )
        self.meta = bytes(result.meta) if result.meta else b""
        return await self._register(req, app, claims, app_changes, result)

    def _emulate_headers(self, req: m.ConnectRequest) -> None:
        """Headers a browser cannot set on a WebSocket come in the connect request (the
        protocol's headers emulation); proxies see them as the upgrade request's."""
        if req.headers:
            emulated = [(str(k), str(v)) for k, v in list(req.headers.items())[:64]]
            self.transport.request_headers = [*(self.transport.request_headers or ()), *emulated]

    @property
    def _binary(self) -> bool:
        """The client speaks a binary protocol (protobuf): its payloads are bytes."""
        return self.transport.codec.name in p.BINARY_PROTOCOLS

    def _proxy_request(
        self,
        request_type: type[RequestT],
        app: Application,
        data: msgspec.Raw = m.EMPTY,
        **fields: Any,
    ) -> RequestT:
        """A proxy request of this client, `fields` (channel, method...) inside the envelope
        every one carries, built here only: the client's id, transport, protocol and
        encoding and the app; after the connect (which makes them) its user and the connect
        proxy's `meta` too. The client's `data` goes as `data`, or as `b64data` from a
        binary client (Centrifugo's shapes)."""
        kind = getattr(self.transport, "name", "websocket")
        binary = self._binary
        envelope: dict[str, Any] = {
            "app_id": app.app_id,
            "client": self.client_id,
            "transport": kind if isinstance(kind, str) else "websocket",
            # Centrifugo names two protocols; every text codec here speaks its JSON one.
            "protocol": self.transport.codec.name if binary else "json",
            "encoding": p.encoding(binary),
            **p.client_data(data, binary),
        }
        if request_type is not p.ConnectRequest:
            envelope["user"] = self.user
            envelope["meta"] = p.raw_json(self.meta)
        return request_type(**envelope, **fields)

    async def _ask(
        self,
        app: Application,
        target: ProxyTarget | None,
        request: p.ProxyRequest,
        reply_type: type[ReplyT],
    ) -> ReplyT:
        """Ask the app's backend; raise what its refusal says, or 100 if it did not answer
        (or no proxy of that name is configured any more)."""
        caller = self.node.proxy
        if caller is None or target is None:
            raise ProxyUnavailable()
        reply = await caller.call(app, target, request, reply_type, self.transport.request_headers)
        if reply is None:
            raise ProxyUnavailable()
        refuse(reply.error, reply.disconnect)
        if self.state is State.CLOSED:
            raise DisconnectError(DisconnectCode.CONNECTION_CLOSED)
        return reply

    def _server_refresh(self) -> bool:
        """With a refresh proxy the server refreshes the connection itself when it expires
        (as Centrifugo does); the client is not told to."""
        app = self.app
        return app is not None and app.proxies.client_target("refresh") is not None

    async def _connected(
        self,
        req: m.ConnectRequest,
        claims: ConnectionClaims,
        proxied: p.ConnectResult | None = None,
    ) -> tuple[object, Finalizer | None]:
        node = self.node
        self._set_expiry(claims.expires_at)

        # Server-side subscriptions: the token's (or connect proxy's) channels, recovered from
        # the client's positions when it sends them back in `subs` on reconnect.
        results: dict[str, m.SubscribeResult] = {}
        finalizers: list[Finalizer] = []
        granted_subs = (proxied.subs if proxied is not None else None) or {}
        for channel in claims.channels[: self._max_channels()]:
            if not is_valid_channel(channel) or channel in self.subs:
                continue
            recover = (req.subs or {}).get(channel) or m.SubscribeRequest(channel=channel)
            grant = granted_subs.get(channel)
            try:
                granted = None
                if grant is not None:
                    granted = Granted(
                        chan_info=p.payload(grant.info, grant.b64info) or b"",
                        data=p.payload(grant.data, grant.b64data, self._binary),
                        override=grant.override,
                    )
                result, fin = await self._subscribe(
                    channel, recover, server_side=True, granted=granted
                )
            except (ClientError, p.ProxyDecodeError):
                continue
            results[channel] = result
            finalizers.append(fin)
        ttl = self._ttl()
        data = b""
        if proxied is not None:
            try:
                data = p.payload(proxied.data, proxied.b64data, self._binary) or b""
            except p.ProxyDecodeError:
                data = b""
        server_refresh = self._server_refresh()
        if self.transport.emulation:
            # A bearer capability for the emulation endpoint: whoever knows it sends commands
            # as this client, so it is as unguessable as a token.
            self.emulation_id = secrets.token_urlsafe(18)
            node.register_emulation(self)
        connect_result = m.ConnectResult(
            client=self.client_id,
            version=node.version,
            expires=self.expires_at is not None and not server_refresh,
            ttl=0 if server_refresh else ttl,
            data=p.raw_json(data),
            subs=results or None,
            ping=node.options.ping_interval,
            pong=not self.transport.unidirectional,
            session=self.emulation_id,
            node=node.node_id,
        )

        def finalize() -> None:
            for fin in finalizers:
                fin()

        return connect_result, finalize

    def _connect_timeout(self) -> None:
        self._connect_timer = None
        if self.state is State.CONNECTING:
            self.disconnect(DisconnectCode.STALE, "no connect command")

    def _ttl(self) -> int:
        if self.expires_at is None:
            return 0
        return max(1, self.expires_at - int(time.time()))

    def _set_expiry(self, expires_at: int | None) -> None:
        self.expires_at = expires_at
        if expires_at is None:
            self.expiry_deadline = None
            return
        # A client refreshes within the grace; with a refresh proxy the server asks at once.
        grace = 0.0 if self._server_refresh() else self.node.options.expired_close_delay
        at = max(float(expires_at), time.time()) + grace
        self.expiry_deadline = at
        self.node.deadlines.add(self, at)

    def deadline_reached(self) -> None:
        self.expiry_deadline = None
        if self.state is not State.CONNECTED:
            return
        if self._server_refresh():
            self.node.spawn(self._proxy_refresh())
        else:
            self.disconnect(DisconnectCode.EXPIRED)

    async def _proxy_refresh(self) -> None:
        """The connection expired and the app has a refresh proxy: the backend extends it
        (`expire_at`, new `info`) or ends it (`expired`). A backend that does not answer is
        asked again a few times, until the grace a client would have had is over."""
        app = self.app
        target = app.proxies.client_target("refresh") if app is not None else None
        if app is None or target is None or self.state is not State.CONNECTED:
            return
        request = self._proxy_request(p.RefreshRequest, app)
        try:
            result = result_of(await self._ask(app, target, request, p.RefreshReply))
            info = p.payload(result.info, result.b64info)
        except DisconnectError as exc:
            self.disconnect(exc.code, exc.reason)
            return
        except (ClientError, p.ProxyDecodeError):
            expired_for = time.time() - (self.expires_at or 0)
            if expired_for >= self.node.options.expired_close_delay:
                self.disconnect(DisconnectCode.EXPIRED)
            else:
                self.expiry_deadline = time.time() + PROXY_REFRESH_RETRY
                self.node.deadlines.add(self, self.expiry_deadline)
            return
        if result.expired:
            self.disconnect(DisconnectCode.EXPIRED)
            return
        if info is not None:
            self.conn_info = info
        self._set_expiry(result.expire_at if result.expire_at > 0 else None)

    async def _refresh(self, req: m.RefreshRequest) -> tuple[object, Finalizer | None]:
        assert self.app is not None
        await self.node.tokens.prepare(req.token, self.app)
        try:
            claims = self.node.tokens.verify_connection_token(req.token, self.app)
        except TokenExpiredError:
            raise ClientError(ErrorCode.TOKEN_EXPIRED) from None
        except TokenError:
            raise DisconnectError(DisconnectCode.INVALID_TOKEN) from None
        if claims.user != self.user:
            raise DisconnectError(DisconnectCode.INVALID_TOKEN, "token is for another user")
        refusal = await self.node.access_refusal(
            self.app_id, claims.user, claims.token_id, claims.issued_at
        )
        if refusal is not None:
            raise DisconnectError(refusal_code(refusal), refusal)
        self.token_id, self.issued_at = claims.token_id, claims.issued_at
        if claims.info is not None:
            self.conn_info = claims.info
        self._set_expiry(claims.expires_at)
        return (
            m.RefreshResult(
                client=self.client_id,
                version=self.node.version,
                expires=self.expires_at is not None,
                ttl=self._ttl(),
            ),
            None,
        )

    # --- subscriptions ------------------------------------------------------------------------

    def info(self, chan_info: bytes = b"") -> ClientInfoData:
        return ClientInfoData(self.user, self.client_id, self.conn_info, chan_info)

    def sub_info(self, sub: Subscription) -> ClientInfoData:
        """This connection as present in one of its subscriptions (presence, join, leave)."""
        user = self.user if sub.user is None else sub.user
        return ClientInfoData(user, self.client_id, self.conn_info, sub.chan_info)

    def wants_join_leave(self, channel: str, info: ClientInfoData, join: bool) -> bool:
        """Whether this connection is told of `info` joining (or leaving) `channel`."""
        sub = self.subs.get(channel)
        return sub is not None and sub.join_leave

    def _max_channels(self) -> int:
        """Subscriptions this connection may hold: the node's limit, or the app's quota."""
        limit = self.node.options.max_channels_per_connection
        return lowest(limit, self.app.quotas.max_channels_per_connection if self.app else None)

    def _options(self, channel: str) -> NamespaceOptions:
        assert self.app is not None
        return self.app.namespace_options(namespace_of(channel))

    async def _subscribe_cmd(self, req: m.SubscribeRequest) -> tuple[object, Finalizer | None]:
        return await self._subscribe(req.channel, req, server_side=False)

    async def _subscribe(
        self,
        channel: str,
        req: m.SubscribeRequest,
        *,
        server_side: bool,
        granted: Granted | None = None,
    ) -> tuple[m.SubscribeResult, Finalizer]:
        node = self.node
        assert self.app is not None
        ref = node.channel_ref(self.app_id, channel)
        if channel in self.subs:
            raise ClientError(ErrorCode.ALREADY_SUBSCRIBED)
        if len(self.subs) >= self._max_channels():
            node.stats.refused("channel_limit")
            raise ClientError(ErrorCode.LIMIT_EXCEEDED, "channel limit of the connection")
        options = self._options(channel)
        chan_info = b""
        expires_at: int | None = None
        token_claims: SubscriptionClaims | None = None
        access_changes = 0
        if server_side:
            pass
        elif req.token:
            await node.tokens.prepare(req.token, self.app)
            try:
                claims = node.tokens.verify_subscription_token(req.token, self.app)
            except TokenExpiredError:
                raise ClientError(ErrorCode.TOKEN_EXPIRED) from None
            except TokenError:
                raise ClientError(
                    ErrorCode.PERMISSION_DENIED, "invalid subscription token"
                ) from None
            if claims.channel != channel or claims.user != self.user:
                raise ClientError(
                    ErrorCode.PERMISSION_DENIED, "token is for another channel or user"
                )
            access_changes = node.access_changes
            await self._refuse_revoked_sub_token(channel, claims.token_id, claims.issued_at)
            chan_info, expires_at = claims.info or b"", claims.expires_at
            token_claims = claims
        elif options.subscribe_proxy_enabled:
            granted = await self._proxy_subscribe(channel, req, options)
            if channel in self.subs:  # subscribed by the server meanwhile
                raise ClientError(ErrorCode.ALREADY_SUBSCRIBED)
        elif channel in self.token_channels or options.allow_subscribe_for_client:
            pass
        else:
            raise ClientError(ErrorCode.PERMISSION_DENIED)
        if granted is not None:
            chan_info = granted.chan_info or chan_info
            expires_at = granted.expires_at or expires_at
            options = _overridden(options, granted.override)

        features = _features(options, req)
        sub = Subscription(
            ref=ref,
            options=options,
            chan_info=chan_info,
            join_leave=options.join_leave and (options.force_push_join_leave or req.join_leave),
            positioned=_has_history(options)
            and (options.force_positioning or (req.positioned and options.allow_positioning)),
            features=features,
        )
        if token_claims is not None:
            sub.by_token = True
            sub.token_id, sub.issued_at = token_claims.token_id, token_claims.issued_at
        self.subs[channel] = sub
        info = self.info(chan_info)
        try:
            if token_claims is not None and access_changes != node.access_changes:
                # A revocation arrived while this token was checked, before the subscription
                # was here for it to find: check again with the rules as they are now.
                await self._refuse_revoked_sub_token(channel, sub.token_id, sub.issued_at)
            await node.add_pending_subscriber(ref, self, features)
            result, since_offset = await self._position(ref, options, req, features)
            result.positioned = sub.positioned
            result.delta = features is not None and features.delta
            if sub.positioned:
                node.track_position(ref, StreamPosition(result.offset, result.epoch))
            if options.presence:
                await node.presence_store.add_presence(ref, info)
            if options.join_leave:
                await node.broker.publish_join(ref, info)
            # Inside the undo: whatever fails here must not leave a pending subscriber behind.
            self._set_sub_expiry(sub, expires_at)
            # With a sub_refresh proxy the server refreshes; the client is not told to.
            if expires_at is not None and not options.sub_refresh_proxy_enabled:
                result.expires, result.ttl = True, max(1, expires_at - int(time.time()))
            if granted is not None and granted.data:
                result.data = p.raw_json(granted.data)
        except BaseException:
            # Undo everything, so a retry starts clean and nothing stays pending (a pending
            # entry would buffer publications forever).
            self.subs.pop(channel, None)
            if sub.timer is not None:
                sub.timer.cancel()
            with contextlib.suppress(Exception):
                await node.remove_subscriber(ref, self)
            if options.presence:
                with contextlib.suppress(Exception):
                    await node.presence_store.remove_presence(ref, self.client_id)
            raise
        if self.state is State.CLOSED or self.subs.get(channel) is not sub:
            raise ClientError(ErrorCode.INTERNAL, "subscription cancelled")

        def finalize() -> None:
            if self.subs.get(channel) is not sub or self.state is State.CLOSED:
                return
            sub.live = True
            last = since_offset
            for offset, frame in node.hub.promote(ref, self):
                # Only what the reply did not already carry, in order, without duplicates.
                if offset == 0 or offset > last:
                    self.writer.enqueue(frame)
                    last = max(last, offset)

        node.subscription_added(self, sub)
        return result, finalize

    async def _proxy_subscribe(
        self, channel: str, req: m.SubscribeRequest, options: NamespaceOptions
    ) -> Granted:
        app = self.app
        assert app is not None
        target = app.proxies.target(options.subscribe_proxy_name)
        request = self._proxy_request(p.SubscribeRequest, app, channel=channel, data=req.data)
        result = result_of(await self._ask(app, target, request, p.SubscribeReply))
        return Granted(
            chan_info=answered(result.info, result.b64info) or b"",
            expires_at=result.expire_at if result.expire_at > 0 else None,
            data=answered(result.data, result.b64data, self._binary),
            override=result.override,
        )

    def _recovered(
        self, pubs: list[BrokerPublication], features: SubscriberFeatures | None
    ) -> list[m.Publication] | None:
        """Recovered publications as this subscription gets them: filtered by its tags filter,
        each in full (a delta subscription's base is then the last of them)."""
        if features is None:
            return [publication_message(pub) for pub in pubs] or None
        if features.filter is not None:
            node = features.filter
            pubs = [pub for pub in pubs if matches(node, pub.tags)]
        if not features.delta:
            return [publication_message(pub) for pub in pubs] or None
        codec = self.transport.codec
        out = [delta_publication_message(pub, codec) for pub in pubs]
        return [msg for msg in out if msg is not None] or None

    async def _position(
        self,
        ref: ChannelRef,
        options: NamespaceOptions,
        req: m.SubscribeRequest,
        features: SubscriberFeatures | None = None,
    ) -> tuple[m.SubscribeResult, int]:
        """Stream position and, when asked, the publications the client missed."""
        if not _has_history(options):
            return m.SubscribeResult(), 0
        node = self.node
        if req.recover and options.force_recovery_mode == "cache":
            return await self._position_cache(ref, req, features)
        if req.recover:
            since = StreamPosition(req.offset, req.epoch)
            history = await node.broker.history(
                ref,
                HistoryOptions(
                    limit=-1, since=since, max_bytes=node.options.max_history_reply_bytes
                ),
            )
            position = history.position
            # Too much missed for one reply: not recovered (the client reloads its state)
            # rather than a frame of unbounded size.
            recovered = (
                not history.truncated
                and position.epoch == req.epoch
                and (
                    position.offset == req.offset
                    or (
                        bool(history.publications)
                        and history.publications[0].offset == req.offset + 1
                    )
                )
            )
            pubs = history.publications if recovered else []
            return (
                m.SubscribeResult(
                    recoverable=True,
                    epoch=position.epoch,
                    offset=position.offset,
                    publications=self._recovered(pubs, features),
                    recovered=recovered,
                    was_recovering=True,
                ),
                pubs[-1].offset if pubs else position.offset,
            )
        history = await node.broker.history(ref, HistoryOptions(limit=0))
        position = history.position
        return (
            m.SubscribeResult(recoverable=True, epoch=position.epoch, offset=position.offset),
            position.offset,
        )

    async def _position_cache(
        self, ref: ChannelRef, req: m.SubscribeRequest, features: SubscriberFeatures | None
    ) -> tuple[m.SubscribeResult, int]:
        """Cache recovery mode (Centrifugo's `force_recovery_mode: "cache"`): a recovering
        subscriber gets the channel's latest publication only, unless it already has it. With a
        tags filter, the latest one that passes it."""
        tags_filter = features.filter if features is not None else None
        history = await self.node.broker.history(
            ref,
            HistoryOptions(
                limit=1 if tags_filter is None else -1,
                reverse=True,
                max_bytes=self.node.options.max_history_reply_bytes,
            ),
        )
        position = history.position
        latest = history.publications[0] if history.publications else None
        wanted = latest
        if tags_filter is not None:
            wanted = next((p for p in history.publications if matches(tags_filter, p.tags)), None)
        has_latest = (
            req.offset > 0 and req.offset == position.offset and req.epoch == position.epoch
        )
        recovered = has_latest if latest is None else latest.offset == position.offset
        pubs = [wanted] if wanted is not None and recovered and not has_latest else []
        return (
            m.SubscribeResult(
                recoverable=True,
                epoch=position.epoch,
                # Recovered: the client's own position, moved on by the publication it gets.
                offset=req.offset if recovered else position.offset,
                publications=self._recovered(pubs, features),
                recovered=recovered,
                was_recovering=True,
            ),
            position.offset,
        )

    def _set_sub_expiry(self, sub: Subscription, expires_at: int | None) -> None:
        if sub.timer is not None:
            sub.timer.cancel()
            sub.timer = None
        sub.expires_at = expires_at
        if expires_at is not None:
            grace = (
                0.0
                if sub.options.sub_refresh_proxy_enabled
                else self.node.options.expired_close_delay
            )
            delay = max(0.0, expires_at - time.time()) + grace
            sub.timer = self.node.loop.call_later(delay, self._sub_expired, sub)

    def _sub_expired(self, sub: Subscription) -> None:
        sub.timer = None
        if self.subs.get(sub.ref.name) is not sub:
            return
        if sub.options.sub_refresh_proxy_enabled:
            self.node.spawn(self._proxy_sub_refresh(sub))
            return
        self.node.spawn(
            self.server_unsubscribe(sub.ref.name, UnsubscribeCode.EXPIRED, "subscription expired")
        )

    async def _proxy_sub_refresh(self, sub: Subscription) -> None:
        """The subscription expired and its namespace has a sub_refresh proxy: the backend
        extends it or ends it (the client is unsubscribed with 2501, and may subscribe again)."""
        app = self.app
        target = app.proxies.target(sub.options.sub_refresh_proxy_name) if app else None
        if app is None or self.subs.get(sub.ref.name) is not sub:
            return
        result: p.RefreshResult | None = None
        info: bytes | None = None
        try:
            request = self._proxy_request(p.SubRefreshRequest, app, channel=sub.ref.name)
            result = result_of(await self._ask(app, target, request, p.SubRefreshReply))
            info = p.payload(result.info, result.b64info)
        except DisconnectError as exc:
            self.disconnect(exc.code, exc.reason)
            return
        except (ClientError, p.ProxyDecodeError):
            result = None
        if self.subs.get(sub.ref.name) is not sub:
            return
        if result is None:
            expired_for = time.time() - (sub.expires_at or 0)
            if expired_for < self.node.options.expired_close_delay:
                sub.timer = self.node.loop.call_later(PROXY_REFRESH_RETRY, self._sub_expired, sub)
                return
        if result is None or result.expired:
            await self.server_unsubscribe(
                sub.ref.name, UnsubscribeCode.EXPIRED, "subscription expired"
            )
            return
        if info is not None:
            sub.chan_info = info
        self._set_sub_expiry(sub, result.expire_at if result.expire_at > 0 else None)

    async def _sub_refresh(self, req: m.SubRefreshRequest) -> tuple[object, Finalizer | None]:
        assert self.app is not None
        sub = self.subs.get(req.channel)
        if sub is None:
            raise ClientError(ErrorCode.PERMISSION_DENIED, "not subscribed")
        try:
            claims = self.node.tokens.verify_subscription_token(req.token, self.app)
        except TokenExpiredError:
            raise ClientError(ErrorCode.TOKEN_EXPIRED) from None
        except TokenError:
            raise ClientError(ErrorCode.PERMISSION_DENIED, "invalid subscription token") from None
        if claims.channel != req.channel or claims.user != self.user:
            raise ClientError(ErrorCode.PERMISSION_DENIED, "token is for another channel or user")
        await self._refuse_revoked_sub_token(req.channel, claims.token_id, claims.issued_at)
        sub.by_token = True
        sub.token_id, sub.issued_at = claims.token_id, claims.issued_at
        self._set_sub_expiry(sub, claims.expires_at)
        ttl = 0 if claims.expires_at is None else max(1, claims.expires_at - int(time.time()))
        return m.SubRefreshResult(expires=claims.expires_at is not None, ttl=ttl), None

    async def _unsubscribe_cmd(self, req: m.UnsubscribeRequest) -> tuple[object, Finalizer | None]:
        await self._drop_subscription(req.channel)
        return m.UnsubscribeResult(), None

    async def _drop_subscription(self, channel: str) -> bool:
        sub = self.subs.pop(channel, None)
        if sub is None:
            return False
        if sub.timer is not None:
            sub.timer.cancel()
        try:
            await self.node.remove_subscriber(sub.ref, self)
            if sub.options.presence:
                await self.node.presence_store.remove_presence(sub.ref, self.client_id)
            if sub.options.join_leave:
                await self.node.broker.publish_leave(sub.ref, self.sub_info(sub))
        except Exception as exc:
            # Shared state is best effort here (a shared presence store expires entries);
            # the local subscription is gone either way.
            log.warning("cleanup after unsubscribe failed: %s", type(exc).__name__)
        self.node.subscription_removed(self, sub)
        return True

    async def _refuse_revoked_sub_token(
        self, channel: str, token_id: str, issued_at: int | None
    ) -> None:
        """103 for a subscription token revoked (by jti) or invalidated for this channel."""
        rules = await self.node.access_rules(self.app_id)
        reason = rules.subscription_refusal(self.user, channel, token_id, issued_at, time.time())
        if reason is not None:
            self.node.stats.refused("revoked")
            raise ClientError(ErrorCode.PERMISSION_DENIED, reason)

    async def server_unsubscribe(self, channel: str, code: UnsubscribeCode, reason: str) -> None:
        """Unsubscribe on the server's initiative and tell the client, even if cleaning shared
        state (presence, leave) fails: the client must not keep a dead subscription."""
        if channel not in self.subs:
            return
        await self._drop_subscription(channel)
        self.send_push(m.Push(channel=channel, unsubscribe=m.Unsubscribe(code=code, reason=reason)))

    async def server_subscribe(self, channel: str) -> None:
        """Subscribe on the server's initiative (server API `subscribe`), then tell the client."""
        if self.state is not State.CONNECTED or channel in self.subs:
            return
        try:
            result, finalize = await self._subscribe(
                channel, m.SubscribeRequest(channel=channel), server_side=True
            )
        except ClientError:
            return
        self.send_push(
            m.Push(
                channel=channel,
                subscribe=m.Subscribe(
                    recoverable=result.recoverable,
                    epoch=result.epoch,
                    offset=result.offset,
                    positioned=result.positioned,
                ),
            )
        )
        finalize()

    def server_refresh(self, expire_at: int) -> None:
        """Server API `refresh`: -1 expires the connection now, 0 makes it never expire."""
        if self.state is not State.CONNECTED:
            return
        if expire_at < 0:
            self.disconnect(DisconnectCode.EXPIRED)
            return
        self._set_expiry(expire_at or None)
        self.send_push(m.Push(refresh=m.Refresh(expires=expire_at > 0, ttl=self._ttl())))

    # --- other commands -----------------------------------------------------------------------

    async def _publish(self, req: m.PublishRequest) -> tuple[object, Finalizer | None]:
        channel = req.channel
        ref = self.node.channel_ref(self.app_id, channel)
        options = self._options(channel)
        sub = self.subs.get(channel)
        data = self.node.publication_data(req.data, self.app)
        skip_history = False
        if options.publish_proxy_enabled:
            # The backend decides instead of the namespace's permissions, and may rewrite.
            data, skip_history = await self._proxy_publish(channel, req, options)
        elif not (
            options.allow_publish_for_client
            or (options.allow_publish_for_subscriber and sub is not None)
        ):
            raise ClientError(ErrorCode.PERMISSION_DENIED)
        info = self.info(sub.chan_info if sub is not None else b"")
        await self.node.publish(
            ref, data, options, info=info, skip_history=skip_history, origin="client"
        )
        return m.PublishResult(), None

    async def _proxy_publish(
        self, channel: str, req: m.PublishRequest, options: NamespaceOptions
    ) -> tuple[bytes, bool]:
        app = self.app
        assert app is not None
        target = app.proxies.target(options.publish_proxy_name)
        request = self._proxy_request(p.PublishRequest, app, channel=channel, data=req.data)
        result = result_of(await self._ask(app, target, request, p.PublishReply))
        rewritten = answered(result.data, result.b64data, self._binary)
        data = self.node.publication_data(rewritten if rewritten is not None else req.data)
        return data, result.skip_history

    async def _presence(self, req: m.PresenceRequest) -> tuple[object, Finalizer | None]:
        options = self._options(req.channel)
        if not options.presence:
            raise ClientError(ErrorCode.NOT_AVAILABLE)
        sub = self.subs.get(req.channel)
        if sub is None or not options.allow_presence_for_subscriber:
            raise ClientError(ErrorCode.PERMISSION_DENIED)
        clients = await self.node.presence_store.presence(sub.ref)
        return (
            m.PresenceResult(presence={k: client_info_message(v) for k, v in clients.items()}),
            None,
        )

    async def _presence_stats(self, req: m.PresenceStatsRequest) -> tuple[object, Finalizer | None]:
        options = self._options(req.channel)
        if not options.presence:
            raise ClientError(ErrorCode.NOT_AVAILABLE)
        sub = self.subs.get(req.channel)
        if sub is None or not options.allow_presence_for_subscriber:
            raise ClientError(ErrorCode.PERMISSION_DENIED)
        clients, users = await self.node.presence_store.presence_stats(sub.ref)
        return m.PresenceStatsResult(num_clients=clients, num_users=users), None

    async def _history(self, req: m.HistoryRequest) -> tuple[object, Finalizer | None]:
        options = self._options(req.channel)
        if options.history_size <= 0 or options.history_ttl <= 0:
            raise ClientError(ErrorCode.NOT_AVAILABLE)
        sub = self.subs.get(req.channel)
        if sub is None or not options.allow_history_for_subscriber:
            raise ClientError(ErrorCode.PERMISSION_DENIED)
        result = await self.node.history(sub.ref, req.limit, req.since, req.reverse)
        return result, None

    async def _ping(self) -> tuple[object, Finalizer | None]:
        return m.PingResult(), None

    async def _rpc(self, req: m.RPCRequest) -> tuple[object, Finalizer | None]:
        """Routed by the method's namespace (`calc:sum` -> `calc`) to its proxy; 104 when the
        app has none for it."""
        app = self.app
        assert app is not None
        target = app.proxies.rpc_target(req.method)
        if target is None:
            raise ClientError(ErrorCode.METHOD_NOT_FOUND)
        request = self._proxy_request(p.RPCRequest, app, method=req.method, data=req.data)
        result = result_of(await self._ask(app, target, request, p.RPCReply))
        data = answered(result.data, result.b64data, self._binary)
        return m.RPCResult(data=p.raw_json(data)), None

    async def _send_message(self, cmd: m.Command) -> None:
        """An asynchronous `send`: to the app's send proxy, with no reply (none is due).
        Without a send proxy it is refused, never dropped: a `send` with an id is answered
        108, one without (the usual) ends the connection with 3508, as Centrifuge does."""
        app = self.app
        assert app is not None and cmd.send is not None
        target = app.proxies.client_target("send")
        if target is None:
            if cmd.id:
                self._send(m.Reply(id=cmd.id, error=_error(ErrorCode.NOT_AVAILABLE)))
                return
            raise DisconnectError(DisconnectCode.NOT_AVAILABLE, "send is not available")
        request = self._proxy_request(p.SendRequest, app, data=cmd.send.data)
        try:
            await self._ask(app, target, request, p.SendReply)
        except ClientError as exc:
            # No reply is due; the failure is counted by the caller's metrics.
            log.info("send proxy of app %s refused a message: %s", app.app_id, exc.code)

    # --- ping, slow consumers, disconnect -------------------------------------------------------

    def writer_slow(self) -> None:
        """The writer's transport buffer passed its limit: the client does not keep up."""
        self.disconnect(DisconnectCode.SLOW)

    def subscriber_count_changed(self, channel: str, count: int) -> None:
        """The channel's subscriber count, for apps that count subscribers (Pusher's
        subscription counting). Centrifuge's protocol has no such push: nothing is sent."""

    def disconnect(self, code: DisconnectCode | int, reason: str | None = None) -> None:
        """Close the connection with a Centrifuge disconnect code, then clean up."""
        if self.state is State.CLOSED:
            return
        if reason is None:
            reason = _disconnect_reason(code)
        if code != DisconnectCode.SLOW:
            self.writer.flush()  # replies already queued go out before the close frame
        self.writer.close()
        self.transport.close(int(code), reason)
        self._close_state()

    def _close_state(self) -> None:
        self.state = State.CLOSED
        self.writer.close()
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        self.expiry_deadline = None  # its heap entry is now stale
        if self._task is not None and not self._task.done():
            self._task.cancel()
        subs, self.subs = self.subs, {}
        for sub in subs.values():
            if sub.timer is not None:
                sub.timer.cancel()
        self.node.unregister(self, list(subs.values()))


def _has_history(options: NamespaceOptions) -> bool:
    return options.history_size > 0 and options.history_ttl > 0


def _features(options: NamespaceOptions, req: m.SubscribeRequest) -> SubscriberFeatures | None:
    """The subscription's delta and tags filter, checked; None when it asks for neither
    (delta compression not allowed in the namespace is not negotiated, as in Centrifugo)."""
    if req.delta and req.delta not in DELTA_TYPES:
        raise ClientError(ErrorCode.BAD_REQUEST, f"unknown delta type '{req.delta[:16]}'")
    delta = bool(req.delta) and req.delta in options.allowed_delta_types
    if req.tf is None:
        return SubscriberFeatures(delta=True) if delta else None
    if not options.allow_tags_filter:
        raise ClientError(ErrorCode.BAD_REQUEST, "tags filter is not allowed in this namespace")
    if req.delta:
        raise ClientError(ErrorCode.BAD_REQUEST, "delta and tags filter cannot be combined")
    try:
        check_filter(req.tf)
    except FilterError as exc:
        raise ClientError(ErrorCode.BAD_REQUEST, f"invalid tags filter: {exc}") from None
    return SubscriberFeatures(tags_filter=req.tf, key=filter_key(req.tf))


def _error(code: ErrorCode | int, message: str | None = None, temporary: bool = False) -> m.Error:
    return m.Error(
        code=int(code),
        message=message or error_message(code),
        temporary=temporary or code in TEMPORARY_ERRORS,
    )


def _overridden(
    options: NamespaceOptions, override: p.SubscribeOptionOverride | None
) -> NamespaceOptions:
    """Namespace options with a backend's per-subscription overrides applied."""
    if override is None:
        return options
    changes = {
        name: value.value
        for name in ("presence", "join_leave", "force_push_join_leave", "force_recovery")
        if (value := getattr(override, name)) is not None
    }
    return msgspec.structs.replace(options, **changes) if changes else options


def _disconnect_reason(code: int) -> str:
    try:
        return DISCONNECT_REASONS[DisconnectCode(code)]
    except ValueError:
        return ""


def origin_allowed(allowed_domain: str | None, origin: str | None) -> bool:
    """Browsers send Origin; a connection without one is not a browser and is not restricted."""
    if not allowed_domain or origin is None:
        return True
    host = (urlsplit(origin).hostname or "").lower().rstrip(".")
    domain = allowed_domain.lower().strip().rstrip(".")
    if "://" in domain:
        domain = (urlsplit(domain).hostname or "").lower()
    return host == domain or host.endswith("." + domain)
