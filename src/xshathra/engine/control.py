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


class Emulation(_Control, kw_only=True, tag="emulation"):
    """Commands for a stream held by node `node` (bidirectional emulation): the emulation
    request reached another node. Only `node` acts on it; `app_id` is empty (the request names
    a session, not an app). `origin` is the request's Origin header, checked by the owner."""

    app_id: str = ""
    node: str
    session: str
    data: bytes
    origin: str | None = None


class NodeAlive(_Control, kw_only=True, tag="node_alive"):
    """A node announces itself (`origin_node`) every few seconds, so that the others know which
    nodes are running (an emulation request for a node that is not is answered 404). `hello`:
    it has just started, and the others announce themselves at once instead of at their next
    turn."""

    app_id: str = ""
    hello: bool = False


ControlMessage = (
    Disconnect
    | Unsubscribe
    | Subscribe
    | Refresh
    | AppChanged
    | WebhooksChanged
    | Emulation
    | NodeAlive
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[ControlMessage] = msgspec.msgpack.Decoder(ControlMessage)


def encode_control(msg: ControlMessage) -> bytes:
    return _encoder.encode(msg)


def decode_control(data: bytes) -> ControlMessage:
    """Raises msgspec.DecodeError or msgspec.ValidationError for anything malformed."""
    return _decoder.decode(data)
