"""Centrifuge protocol v2 messages as msgspec structs, named and shaped as `client.proto` names
them, for the JSON wire format.

Fields the proto declares as `bytes` carry arbitrary JSON in the JSON format; they are
`msgspec.Raw` here so payloads pass through undecoded. Every struct omits default values on
encode, as protobuf's JSON mapping does, which is what the client SDKs expect.
"""

from __future__ import annotations

import msgspec

_OPTS: dict[str, bool] = {"omit_defaults": True, "kw_only": True}

# An absent payload. Raw values are immutable, so one instance serves as every default.
EMPTY = msgspec.Raw()


class Error(msgspec.Struct, **_OPTS):
    code: int
    message: str
    temporary: bool = False


class ClientInfo(msgspec.Struct, **_OPTS):
    user: str = ""
    client: str = ""
    conn_info: msgspec.Raw = EMPTY
    chan_info: msgspec.Raw = EMPTY


class StreamPosition(msgspec.Struct, **_OPTS):
    offset: int = 0
    epoch: str = ""


class Publication(msgspec.Struct, **_OPTS):
    data: msgspec.Raw = EMPTY
    info: ClientInfo | None = None
    offset: int = 0
    tags: dict[str, str] | None = None
    delta: bool = False  # `data` is a fossil delta against the previous publication
    time: int = 0


class FilterNode(msgspec.Struct, **_OPTS):
    """A publication tags filter (`tf`): a leaf comparison (`op` empty: `key`, `cmp`, `val` or
    `vals`) or a logical node (`op` "and", "or", "not" over `nodes`)."""

    op: str = ""
    key: str = ""
    cmp: str = ""
    val: str = ""
    vals: list[str] | None = None
    nodes: list[FilterNode] | None = None


# --- requests (client -> server) ------------------------------------------------------------


class SubscribeRequest(msgspec.Struct, **_OPTS):
    channel: str = ""
    token: str = ""
    recover: bool = False
    epoch: str = ""
    offset: int = 0
    data: msgspec.Raw = EMPTY
    positioned: bool = False
    recoverable: bool = False
    join_leave: bool = False
    delta: str = ""
    tf: FilterNode | None = None


class ConnectRequest(msgspec.Struct, **_OPTS):
    token: str = ""
    data: msgspec.Raw = EMPTY
    subs: dict[str, SubscribeRequest] | None = None
    name: str = ""
    version: str = ""
    headers: dict[str, str] | None = None


class RefreshRequest(msgspec.Struct, **_OPTS):
    token: str = ""


class SubRefreshRequest(msgspec.Struct, **_OPTS):
    channel: str = ""
    token: str = ""


class UnsubscribeRequest(msgspec.Struct, **_OPTS):
    channel: str = ""


class PublishRequest(msgspec.Struct, **_OPTS):
    channel: str = ""
    data: msgspec.Raw = EMPTY


class PresenceRequest(msgspec.Struct, **_OPTS):
    channel: str = ""


class PresenceStatsRequest(msgspec.Struct, **_OPTS):
    channel: str = ""


class HistoryRequest(msgspec.Struct, **_OPTS):
    channel: str = ""
    limit: int = 0
    since: StreamPosition | None = None
    reverse: bool = False


class PingRequest(msgspec.Struct, **_OPTS):
    pass


class SendRequest(msgspec.Struct, **_OPTS):
    data: msgspec.Raw = EMPTY


class RPCRequest(msgspec.Struct, **_OPTS):
    data: msgspec.Raw = EMPTY
    method: str = ""


class Command(msgspec.Struct, **_OPTS):
    """One client command. An empty command (`{}`) is the client's pong to a server ping."""

    id: int = 0
    connect: ConnectRequest | None = None
    subscribe: SubscribeRequest | None = None
    unsubscribe: UnsubscribeRequest | None = None
    publish: PublishRequest | None = None
    presence: PresenceRequest | None = None
    presence_stats: PresenceStatsRequest | None = None
    history: HistoryRequest | None = None
    ping: PingRequest | None = None
    send: SendRequest | None = None
    rpc: RPCRequest | None = None
    refresh: RefreshRequest | None = None
    sub_refresh: SubRefreshRequest | None = None


# --- results and pushes (server -> client) --------------------------------------------------


class SubscribeResult(msgspec.Struct, **_OPTS):
    expires: bool = False
    ttl: int = 0
    recoverable: bool = False
    epoch: str = ""
    publications: list[Publication] | None = None
    recovered: bool = False
    offset: int = 0
    positioned: bool = False
    data: msgspec.Raw = EMPTY
    was_recovering: bool = False
    delta: bool = False


class ConnectResult(msgspec.Struct, **_OPTS):
    client: str = ""
    version: str = ""
    expires: bool = False
    ttl: int = 0
    data: msgspec.Raw = EMPTY
    subs: dict[str, SubscribeResult] | None = None
    ping: int = 0
    pong: bool = False
    session: str = ""
    node: str = ""
    time: int = 0


class RefreshResult(msgspec.Struct, **_OPTS):
    client: str = ""
    version: str = ""
    expires: bool = False
    ttl: int = 0


class SubRefreshResult(msgspec.Struct, **_OPTS):
    expires: bool = False
    ttl: int = 0


class UnsubscribeResult(msgspec.Struct, **_OPTS):
    pass


class PublishResult(msgspec.Struct, **_OPTS):
    pass


class PresenceResult(msgspec.Struct, **_OPTS):
    presence: dict[str, ClientInfo] | None = None


class PresenceStatsResult(msgspec.Struct, kw_only=True):
    """Both counts always present, zeros included: centrifuge-js reads them unguarded."""

    num_clients: int = 0
    num_users: int = 0


class HistoryResult(msgspec.Struct, **_OPTS):
    publications: list[Publication] | None = None
    epoch: str = ""
    offset: int = 0


class PingResult(msgspec.Struct, **_OPTS):
    pass


class RPCResult(msgspec.Struct, **_OPTS):
    data: msgspec.Raw = EMPTY


class Join(msgspec.Struct, **_OPTS):
    info: ClientInfo


class Leave(msgspec.Struct, **_OPTS):
    info: ClientInfo


class Unsubscribe(msgspec.Struct, **_OPTS):
    code: int = 0
    reason: str = ""


class Subscribe(msgspec.Struct, **_OPTS):
    recoverable: bool = False
    epoch: str = ""
    offset: int = 0
    positioned: bool = False
    data: msgspec.Raw = EMPTY


class Message(msgspec.Struct, **_OPTS):
    data: msgspec.Raw = EMPTY


class Disconnect(msgspec.Struct, **_OPTS):
    code: int = 0
    reason: str = ""
    reconnect: bool = False


class Refresh(msgspec.Struct, **_OPTS):
    expires: bool = False
    ttl: int = 0


class Push(msgspec.Struct, **_OPTS):
    channel: str = ""
    pub: Publication | None = None
    join: Join | None = None
    leave: Leave | None = None
    unsubscribe: Unsubscribe | None = None
    message: Message | None = None
    subscribe: Subscribe | None = None
    disconnect: Disconnect | None = None
    refresh: Refresh | None = None
    # Unidirectional transports get their connect result as a push (Centrifugo's `Connect`,
    # the same fields as `ConnectResult`).
    connect: ConnectResult | None = None


class Reply(msgspec.Struct, **_OPTS):
    id: int = 0
    error: Error | None = None
    push: Push | None = None
    connect: ConnectResult | None = None
    subscribe: SubscribeResult | None = None
    unsubscribe: UnsubscribeResult | None = None
    publish: PublishResult | None = None
    presence: PresenceResult | None = None
    presence_stats: PresenceStatsResult | None = None
    history: HistoryResult | None = None
    ping: PingResult | None = None
    rpc: RPCResult | None = None
    refresh: RefreshResult | None = None
    sub_refresh: SubRefreshResult | None = None
