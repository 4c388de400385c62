"""Control messages: commands one node sends every node (through the broker's control bus)
to act on their local connections and caches. One struct per kind, a tagged union on the
wire (msgpack); nodes of one version understand each other, no more is promised.
"""

from __future__ import annotations

import msgspec

from xshathra.protocol.codes import DisconnectCode, UnsubscribeCode


class _Control(msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="type"):
    app_id: str
    origin_node: str = ""  # set by the sending node


class _ToConnections(_Control, kw_only=True, omit_defaults=True, tag_field="type"):
    """Addressed to one client (`client`, of `user` when both are given) or to every
    connection of `user`."""

    user: str = ""
    client: str = ""


class Disconnect(_ToConnections, tag="disconnect"):
    code: int = DisconnectCode.FORCE_NO_RECONNECT  # the API allows any code in 3000-4999
    reason: str = ""  # empty: the code's own reason


class Unsubscribe(_ToConnections, tag="unsubscribe"):
    channel: str
    code: UnsubscribeCode = UnsubscribeCode.SERVER
    reason: str = "server unsubscribe"


class Subscribe(_ToConnections, tag="subscribe"):
    channel: str


class Refresh(_ToConnections, tag="refresh"):
    expire_at: int = 0  # unix seconds; 0 never expires, -1 expires now


class AppChanged(_Control, tag="app_changed"):
    """The app was updated or deleted: caches drop it, its connections are checked again."""


class WebhooksChanged(_Control, tag="webhooks_changed"):
    """The app's webhooks changed: cached lists are dropped."""


class AccessChanged(_Control, tag="access_changed"):
    """A user was blocked or unblocked, a token revoked, or a user's tokens invalidated: every
    node drops the app's cached access rules and closes the connections they now refuse."""

    user: str = ""
    token_id: str = ""  # a revoked token's jti
    issued_before: int = 0  # unix seconds: the user's tokens issued earlier are refused
    channel: str = ""  # with issued_before: only the user's subscription tokens for it


class LeaveHeld(_Control, kw_only=True, tag="leave_held"):
    """`origin_node` holds a webhook leave (user-left, room-vacated, user-offline: `pair` user,
    room or presence) for `delay` seconds: a join that undoes it on another node within that
    time is not reported there, and that node answers with `LeaveUndone`."""

    room: str = ""
    user: str = ""
    pair: str
    delay: float


class LeaveUndone(_Control, kw_only=True, tag="leave_undone"):
    """To node `holder`: the join `event` (with `data`) that undoes its held leave happened on
    `origin_node`, which did not report it. The holder drops the leave, or, when it went out
    already, reports the join itself: the pair is reported whole or not at all."""

    holder: str
    room: str = ""
    user: str = ""
    pair: str
    event: str
    data: bytes = b""


class SubscriberCount(_Control, tag="subscriber_count"):
    """A channel's subscriber count changed, in an app that tells subscribers of it (Pusher's
    subscription counting): every node hands it to its own subscribers of the channel."""

    channel: str
    count: int


class NodeStats(_Control, tag="node_stats"):
    """A node's one heartbeat (every `interval` seconds, and once as it stops with `leaving`):
    that it runs, and how many clients, users, channels and subscriptions each app has on it.
    `info` answers from the latest of every live node, the cluster-wide connection quota
    counts from them, cluster queries wait for the live nodes, and an emulation request for
    a node not heard of lately is answered 404. `hello`: the node has just started, and the
    others send theirs at once instead of at their next turn. `app_id` is unused ("").

    (It replaced a second heartbeat, `node_alive`, that only said a node ran: two messages on
    the bus, two liveness windows, for one fact.)"""

    name: str
    version: str
    uptime: int
    # app_id -> [clients, users, channels, subscriptions] on that node
    apps: dict[str, tuple[int, int, int, int]] = {}
    interval: float = 1.0  # seconds until the next heartbeat
    leaving: bool = False
    hello: bool = False


class ConnectionSummary(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One connection, as the server API's `connections` lists it."""

    user: str
    transport: str
    protocol: str
    channels: list[str] = []
    token_id: str = ""
    issued_at: int = 0


class Query(_Control, tag="query"):
    """Asks every node for its share of the app's state; each answers with a `QueryReply`
    addressed to `origin_node`."""

    query_id: str
    kind: str  # "channels" or "connections"
    user: str = ""  # connections: only this user's


class QueryReply(_Control, tag="query_reply"):
    query_id: str
    to_node: str
    channels: dict[str, int] = {}
    connections: dict[str, ConnectionSummary] = {}


class Emulation(_Control, kw_only=True, tag="emulation"):
    """Commands for a stream held by node `node` (bidirectional emulation): the emulation
    request reached another node. Only `node` acts on it; `app_id` is empty (the request names
    a session, not an app). `origin` is the request's Origin header, checked by the owner."""

    app_id: str = ""
    node: str
    session: str
    data: bytes
    origin: str | None = None


class ConsoleWatch(_Control, kw_only=True, tag="console_watch"):
    """`origin_node` serves a live console of the app: forward the app's lifecycle events
    (`LifecycleNotice`) for `ttl` seconds; re-sent while the console stays open."""

    ttl: float


class LifecycleNotice(_Control, kw_only=True, tag="lifecycle"):
    """One lifecycle event of the app on `origin_node`, for the consoles of other nodes."""

    kind: str
    user: str = ""
    client: str = ""
    transport: str = ""
    channel: str = ""
    node_name: str = ""
    at: float = 0.0


ControlMessage = (
    Disconnect
    | Unsubscribe
    | Subscribe
    | Refresh
    | AppChanged
    | WebhooksChanged
    | AccessChanged
    | SubscriberCount
    | NodeStats
    | Query
    | QueryReply
    | Emulation
    | LeaveHeld
    | LeaveUndone
    | ConsoleWatch
    | LifecycleNotice
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[ControlMessage] = msgspec.msgpack.Decoder(ControlMessage)


def encode_control(msg: ControlMessage) -> bytes:
    return _encoder.encode(msg)


def decode_control(data: bytes) -> ControlMessage:
    """Raises msgspec.DecodeError or msgspec.ValidationError for anything malformed."""
    return _decoder.decode(data)
