"""The one executor behind every HTTP surface: the Centrifugo-compatible server API, the seed
endpoints (`/api/broadcast`, `/api/realtime/publish`), the dashboard and the CLI.

It works on an already-authenticated `Application`; it knows nothing of HTTP. Requests and
results are msgspec structs named and shaped as Centrifugo's server API names them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import msgspec

from xshathra.api.globmatch import MAX_PATTERN_LENGTH, Glob
from xshathra.engine.channels import is_valid_channel, namespace_of
from xshathra.engine.control import (
    AppChanged,
    Disconnect,
    Refresh,
    Subscribe,
    Unsubscribe,
    WebhooksChanged,
)
from xshathra.engine.errors import ClientError, error_message
from xshathra.engine.hub import client_info_message
from xshathra.model import AppId, ChannelRef
from xshathra.protocol import messages as m
from xshathra.protocol.codes import DisconnectCode, ErrorCode

if TYPE_CHECKING:
    from xshathra.engine.node import Node
    from xshathra.tenancy.apps import Application

# Channel names matched against a pattern between two yields to the event loop.
CHANNELS_PER_SLICE = 2000

_REQ: dict[str, Any] = {"kw_only": True, "forbid_unknown_fields": False}
_RES: dict[str, Any] = {"kw_only": True, "omit_defaults": True}
MAX_ID_LENGTH = 255  # a user id or token id, as stored
MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31: later is no real time
# Disconnect codes the API may send: the protocol's and the applications' ranges.
_DISCONNECT_CODES_FIRST, _DISCONNECT_CODES_LAST = 3000, 4999


class ApiError(Exception):
    """A Centrifugo API error: `{"error": {"code": ..., "message": ...}}`."""

    def __init__(self, code: ErrorCode | int, message: str | None = None) -> None:
        self.code = code
        self.message = message or error_message(code)
        super().__init__(self.message)


# --- requests ----------------------------------------------------------------------------------


class PublishRequest(msgspec.Struct, **_REQ):
    channel: str
    data: msgspec.Raw = m.EMPTY
    skip_history: bool = False
    tags: dict[str, str] | None = None
    idempotency_key: str = ""
    b64data: str = ""
    delta: bool = False  # sent as a fossil delta to subscribers that negotiated one


class BroadcastRequest(msgspec.Struct, **_REQ):
    channels: list[str]
    data: msgspec.Raw = m.EMPTY
    skip_history: bool = False
    tags: dict[str, str] | None = None
    idempotency_key: str = ""
    b64data: str = ""
    delta: bool = False


class DisconnectOptions(msgspec.Struct, **_REQ):
    code: int = 0
    reason: str = ""


class SubscribeRequest(msgspec.Struct, **_REQ):
    user: str
    channel: str
    client: str = ""
    session: str = ""


class UnsubscribeRequest(msgspec.Struct, **_REQ):
    user: str
    channel: str
    client: str = ""
    session: str = ""


class DisconnectRequest(msgspec.Struct, **_REQ):
    user: str
    client: str = ""
    session: str = ""
    disconnect: DisconnectOptions | None = None


class RefreshRequest(msgspec.Struct, **_REQ):
    user: str
    client: str = ""
    session: str = ""
    expired: bool = False
    expire_at: int = 0


class ChannelRequest(msgspec.Struct, **_REQ):
    channel: str


class HistoryRequest(msgspec.Struct, **_REQ):
    channel: str
    limit: int = 0
    since: m.StreamPosition | None = None
    reverse: bool = False


class ChannelsRequest(msgspec.Struct, **_REQ):
    pattern: str = ""


class InfoRequest(msgspec.Struct, **_REQ):
    pass


class ConnectionsRequest(msgspec.Struct, **_REQ):
    user: str = ""
    expression: str = ""  # Centrifugo PRO's CEL filter: not supported, must be empty


class BlockUserRequest(msgspec.Struct, **_REQ):
    user: str
    expire_at: int = 0  # unix seconds; 0 blocks until unblocked


class UnblockUserRequest(msgspec.Struct, **_REQ):
    user: str


class RevokeTokenRequest(msgspec.Struct, **_REQ):
    uid: str  # the token's jti
    expire_at: int = 0  # unix seconds: when the entry may go (the token's own exp); 0 never


class InvalidateUserTokensRequest(msgspec.Struct, **_REQ):
    user: str
    issued_before: int = 0  # unix seconds; 0: now
    expire_at: int = 0
    channel: str = ""  # only the user's subscription tokens for this channel


class RpcRequest(msgspec.Struct, **_REQ):
    """Routed by the method's RPC namespace to the app's backend proxy (SPEC §9). `params` is
    Centrifugo's name for the payload; `data` is accepted too."""

    method: str
    params: msgspec.Raw = m.EMPTY
    data: msgspec.Raw = m.EMPTY


class RpcResult(msgspec.Struct, **_RES):
    data: msgspec.Raw = m.EMPTY


class BatchRequest(msgspec.Struct, **_REQ):
    commands: list[dict[str, msgspec.Raw]]
    parallel: bool = False


# --- results -----------------------------------------------------------------------------------


class PublishResult(msgspec.Struct, **_RES):
    offset: int = 0
    epoch: str = ""


class PublishOutcome(msgspec.Struct, kw_only=True):
    """What a publish did, for the seed endpoints: the wire result plus the subscriber count."""

    result: PublishResult
    subscriber_count: int


class EmptyResult(msgspec.Struct, **_RES):
    pass


class ChannelInfo(msgspec.Struct, **_RES):
    num_clients: int = 0


class ChannelsResult(msgspec.Struct, kw_only=True):
    channels: dict[str, ChannelInfo]


class NodeInfo(msgspec.Struct, kw_only=True):
    uid: str
    name: str
    version: str
    num_clients: int
    num_users: int
    num_channels: int
    num_subs: int
    uptime: int


class InfoResult(msgspec.Struct, kw_only=True):
    nodes: list[NodeInfo]


class TokenInfo(msgspec.Struct, **_RES):
    uid: str = ""
    issued_at: int = 0


class ChannelContext(msgspec.Struct, **_RES):
    pass


class ConnectionState(msgspec.Struct, **_RES):
    channels: dict[str, ChannelContext] = {}
    connection_token: TokenInfo | None = None


class ConnectionInfo(msgspec.Struct, kw_only=True):
    app_name: str = ""
    app_version: str = ""
    transport: str
    protocol: str
    user: str
    state: ConnectionState


class ConnectionsResult(msgspec.Struct, kw_only=True):
    connections: dict[str, ConnectionInfo]


class Executor:
    """Runs server API commands for one application at a time."""

    def __init__(self, node: Node, *, max_broadcast_channels: int) -> None:
        self._node = node
        self._max_broadcast_channels = max_broadcast_channels

    @property
    def node(self) -> Node:
        """The engine's facade, for the dashboard's live console (`Node.watch_lifecycle`)."""
        return self._node

    def _ref(self, app: Application, channel: str) -> ChannelRef:
        """The app's channel, or a Centrifugo-style 107 for a name outside the grammar."""
        if not isinstance(channel, str) or not channel:
            raise ApiError(ErrorCode.BAD_REQUEST, "channel required")
        try:
            return self._node.channel_ref(app.app_id, channel)
        except ClientError as exc:
            raise ApiError(exc.code, exc.message) from None

    async def _publish(
        self,
        app: Application,
        request: PublishRequest,
        *,
        origin: str = "api",
        count_subscribers: bool = False,
    ) -> PublishOutcome:
        node = self._node
        ref = self._ref(app, request.channel)
        try:
            data = node.publication_data(request.data, app)
            position = await node.publish(
                ref,
                data,
                app.namespace_options(namespace_of(request.channel)),
                tags=request.tags,
                skip_history=request.skip_history,
                idempotency_key=request.idempotency_key,
                origin=origin,
                delta=request.delta,
            )
        except ClientError as exc:  # refused before anything was published
            raise ApiError(exc.code, exc.message) from None
        return PublishOutcome(
            result=PublishResult(offset=position.offset, epoch=position.epoch),
            # Cluster-wide, read only when asked: it costs a round trip to a shared broker.
            subscriber_count=await node.subscriber_count(ref) if count_subscribers else 0,
        )

    async def publish(
        self,
        app: Application,
        request: PublishRequest,
        *,
        origin: str = "api",
        count_subscribers: bool = False,
    ) -> PublishOutcome:
        """Publish `request.data` (raw JSON bytes, never parsed) to a channel of `app`.

        `origin` is "api" for HTTP publishes (counted as broadcasts in analytics).
        """
        _check_data(request.data, request.b64data)
        return await self._publish(app, request, origin=origin, count_subscribers=count_subscribers)

    async def broadcast(self, app: Application, request: BroadcastRequest) -> dict[str, Any]:
        _check_data(request.data, request.b64data)
        if not request.channels:
            raise ApiError(ErrorCode.BAD_REQUEST, "channels required")
        cap = self._max_broadcast_channels
        if len(request.channels) > cap:
            # Refused whole, before any publish: one request must not fan out without bound.
            raise ApiError(
                ErrorCode.LIMIT_EXCEEDED,
                f"broadcast to {len(request.channels)} channels, at most {cap} per broadcast",
            )
        responses: list[dict[str, Any]] = []
        for channel in request.channels:
            try:
                outcome = await self._publish(
                    app,
                    PublishRequest(
                        channel=channel,
                        data=request.data,
                        skip_history=request.skip_history,
                        tags=request.tags,
                        idempotency_key=request.idempotency_key,
                        delta=request.delta,
                    ),
                )
                responses.append({"result": outcome.result})
            except ApiError as exc:
                responses.append({"error": {"code": int(exc.code), "message": exc.message}})
        return {"responses": responses}

    async def subscribe(self, app: Application, request: SubscribeRequest) -> EmptyResult:
        self._ref(app, request.channel)
        _check_target(request.user, request.client)
        await self._node.send_control(
            Subscribe(
                app_id=app.app_id,
                user=request.user,
                client=request.client,
                channel=request.channel,
            )
        )
        return EmptyResult()

    async def unsubscribe(self, app: Application, request: UnsubscribeRequest) -> EmptyResult:
        self._ref(app, request.channel)
        _check_target(request.user, request.client)
        await self._node.send_control(
            Unsubscribe(
                app_id=app.app_id,
                user=request.user,
                client=request.client,
                channel=request.channel,
            )
        )
        return EmptyResult()

    async def disconnect(self, app: Application, request: DisconnectRequest) -> EmptyResult:
        code, reason = 0, ""
        if request.disconnect is not None:
            code, reason = request.disconnect.code, request.disconnect.reason
            if code and not (_DISCONNECT_CODES_FIRST <= code <= _DISCONNECT_CODES_LAST):
                raise ApiError(ErrorCode.BAD_REQUEST, "disconnect code must be within 3000-4999")
        _check_target(request.user, request.client)
        await self._node.send_control(
            Disconnect(
                app_id=app.app_id,
                user=request.user,
                client=request.client,
                code=code or DisconnectCode.FORCE_NO_RECONNECT,
                reason=reason,
            )
        )
        return EmptyResult()

    async def refresh(self, app: Application, request: RefreshRequest) -> EmptyResult:
        expire_at = -1 if request.expired else request.expire_at
        _check_target(request.user, request.client)
        await self._node.send_control(
            Refresh(
                app_id=app.app_id, user=request.user, client=request.client, expire_at=expire_at
            )
        )
        return EmptyResult()

    async def app_changed(self, app_id: str) -> None:
        """An app was updated or deleted: every node refreshes (or closes) its connections."""
        # Here at once (this node's next request must already see it), then everywhere.
        self._node.notify_app_changed(AppId(app_id))
        await self._node.send_control(AppChanged(app_id=app_id))

    async def webhooks_changed(self, app_id: str) -> None:
        await self._node.send_control(WebhooksChanged(app_id=app_id))

    async def presence(self, app: Application, request: ChannelRequest) -> m.PresenceResult:
        ref = self._ref(app, request.channel)
        if not app.namespace_options(namespace_of(request.channel)).presence:
            raise ApiError(ErrorCode.NOT_AVAILABLE)
        clients = await self._node.presence(ref)
        return m.PresenceResult(
            presence={k: client_info_message(v) for k, v in clients.items()} or {}
        )

    async def presence_stats(
        self, app: Application, request: ChannelRequest
    ) -> m.PresenceStatsResult:
        ref = self._ref(app, request.channel)
        if not app.namespace_options(namespace_of(request.channel)).presence:
            raise ApiError(ErrorCode.NOT_AVAILABLE)
        clients, users = await self._node.presence_stats(ref)
        return m.PresenceStatsResult(num_clients=clients, num_users=users)

    async def history(self, app: Application, request: HistoryRequest) -> dict[str, Any]:
        ref = self._ref(app, request.channel)
        options = app.namespace_options(namespace_of(request.channel))
        if options.history_size <= 0 or options.history_ttl <= 0:
            raise ApiError(ErrorCode.NOT_AVAILABLE)
        try:
            result = await self._node.history(ref, request.limit, request.since, request.reverse)
        except ClientError as exc:
            raise ApiError(exc.code, exc.message) from None
        # The server API always lists publications, even when there are none.
        return {
            "publications": result.publications or [],
            "offset": result.offset,
            "epoch": result.epoch,
        }

    async def history_remove(self, app: Application, request: ChannelRequest) -> EmptyResult:
        ref = self._ref(app, request.channel)
        await self._node.remove_history(ref)
        return EmptyResult()

    async def channels(self, app: Application, request: ChannelsRequest) -> ChannelsResult:
        """The app's channels on every live node (counts summed), filtered by a shell-style
        `pattern`. The pattern is bounded and matched in linear time (`api.globmatch`, never a
        regex nor a cache), and a long listing yields to the event loop, so one tenant's call
        never stalls the others."""
        if request.pattern and len(request.pattern) > MAX_PATTERN_LENGTH:
            raise ApiError(
                ErrorCode.BAD_REQUEST, f"pattern longer than {MAX_PATTERN_LENGTH} characters"
            )
        names = await self._node.cluster_channels(app.app_id)
        if request.pattern:
            glob = Glob(request.pattern)
            matched: dict[str, int] = {}
            for index, (name, count) in enumerate(names.items()):
                if index % CHANNELS_PER_SLICE == CHANNELS_PER_SLICE - 1:
                    await asyncio.sleep(0)  # let other requests run between slices
                if glob.matches(name):
                    matched[name] = count
            names = matched
        return ChannelsResult(channels={k: ChannelInfo(num_clients=v) for k, v in names.items()})

    async def rpc(self, app: Application, request: RpcRequest) -> RpcResult:
        payload = bytes(request.params or request.data) or b"null"
        try:
            data = await self._node.rpc(app, request.method, payload)
        except ClientError as exc:
            raise ApiError(exc.code, exc.message) from None
        return RpcResult(data=msgspec.Raw(data) if data else m.EMPTY)

    async def info(self, app: Application, request: InfoRequest) -> InfoResult:
        """Every live node with the app's share of it: this node counted now, the others as of
        their last heartbeat (a few seconds old at most)."""
        return InfoResult(
            nodes=[
                NodeInfo(
                    uid=stats.origin_node,
                    name=stats.name,
                    version=stats.version,
                    num_clients=counts.num_clients,
                    num_users=counts.num_users,
                    num_channels=counts.num_channels,
                    num_subs=counts.num_subs,
                    uptime=stats.uptime,
                )
                for stats, counts in self._node.cluster_info(app.app_id)
            ]
        )

    async def connections(self, app: Application, request: ConnectionsRequest) -> ConnectionsResult:
        """The app's connections (of one user, when given) on every live node."""
        if request.expression:
            raise ApiError(ErrorCode.BAD_REQUEST, "expression is not supported; filter by user")
        found = await self._node.cluster_connections(app.app_id, request.user)
        return ConnectionsResult(
            connections={
                client: ConnectionInfo(
                    transport=c.transport,
                    protocol=c.protocol,
                    user=c.user,
                    state=ConnectionState(
                        channels={name: ChannelContext() for name in c.channels},
                        connection_token=(
                            TokenInfo(uid=c.token_id, issued_at=c.issued_at)
                            if c.token_id or c.issued_at
                            else None
                        ),
                    ),
                )
                for client, c in found.items()
            }
        )

    async def block_user(self, app: Application, request: BlockUserRequest) -> EmptyResult:
        """Block the user on every node: connections closed (3503), connects refused."""
        _check_user(request.user)
        _check_expiry(request.expire_at)
        await self._access(self._node.block_user(app.app_id, request.user, request.expire_at))
        return EmptyResult()

    async def unblock_user(self, app: Application, request: UnblockUserRequest) -> EmptyResult:
        _check_user(request.user)
        await self._access(self._node.unblock_user(app.app_id, request.user))
        return EmptyResult()

    async def revoke_token(self, app: Application, request: RevokeTokenRequest) -> EmptyResult:
        """Refuse the token with this jti until `expire_at`: its connections close (3500)."""
        if not request.uid or len(request.uid) > MAX_ID_LENGTH:
            raise ApiError(
                ErrorCode.BAD_REQUEST, f"uid required (at most {MAX_ID_LENGTH} characters)"
            )
        _check_expiry(request.expire_at)
        await self._access(self._node.revoke_token(app.app_id, request.uid, request.expire_at))
        return EmptyResult()

    async def invalidate_user_tokens(
        self, app: Application, request: InvalidateUserTokensRequest
    ) -> EmptyResult:
        """Refuse the user's connection tokens issued before `issued_before` (default now); with
        `channel`, only their subscription tokens for that channel (Centrifugo PRO)."""
        _check_user(request.user)
        _check_expiry(request.expire_at)
        if request.channel and not is_valid_channel(request.channel):
            raise ApiError(ErrorCode.BAD_REQUEST, "channel: not a valid channel name")
        if not 0 <= request.issued_before <= MAX_TIMESTAMP:
            raise ApiError(ErrorCode.BAD_REQUEST, "issued_before must be unix seconds")
        issued_before = request.issued_before or int(time.time())
        await self._access(
            self._node.invalidate_user_tokens(
                app.app_id, request.user, issued_before, request.expire_at, request.channel
            )
        )
        return EmptyResult()

    @staticmethod
    async def _access(work: Awaitable[None]) -> None:
        try:
            await work
        except ClientError as exc:
            raise ApiError(exc.code, exc.message) from None


def _check_target(user: str, client: str) -> None:
    """A control command names the connections it acts on."""
    if not user and not client:
        raise ApiError(ErrorCode.BAD_REQUEST, "user required")


def _check_user(user: str) -> None:
    if not user or len(user) > MAX_ID_LENGTH:
        raise ApiError(ErrorCode.BAD_REQUEST, f"user required (at most {MAX_ID_LENGTH} characters)")


def _check_expiry(expire_at: int) -> None:
    if not 0 <= expire_at <= MAX_TIMESTAMP:
        raise ApiError(ErrorCode.BAD_REQUEST, "expire_at must be unix seconds (0: never)")


def _check_data(data: msgspec.Raw, b64data: str) -> None:
    if not data:
        if b64data:
            raise ApiError(ErrorCode.BAD_REQUEST, "b64data needs a binary transport; send data")
        raise ApiError(ErrorCode.BAD_REQUEST, "data required")
