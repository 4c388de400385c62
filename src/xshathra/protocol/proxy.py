"""Backend proxy bodies (SPEC §9): the JSON the engine POSTs to an app's backend and the replies
it reads back, named and shaped as Centrifugo's HTTP proxy names them, so a backend written for
Centrifugo works unchanged. Each request also carries `app_id`.

Sans I/O: structs and their codec only. A JSON client's data stays raw JSON (`msgspec.Raw`); a
binary (protobuf) client's goes as `b64data`, base64 of its bytes, with `encoding` "binary", as
Centrifugo sends it. A reply may give `b64data`/`b64info` instead of `data`/`info`, which is
decoded here into bytes.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

from xshathra.protocol.messages import EMPTY  # one instance: omit_defaults compares by identity

_REQ: dict[str, Any] = {"kw_only": True, "omit_defaults": True}
# Replies are read leniently: a backend may send fields we do not use.
_REP: dict[str, Any] = {"kw_only": True, "forbid_unknown_fields": False}


# --- requests ---------------------------------------------------------------------------------


class ClientRequest(msgspec.Struct, **_REQ):
    """What every request from a client carries (Centrifugo's fields), plus `app_id`."""

    app_id: str
    client: str
    transport: str
    protocol: str
    encoding: str


class ConnectRequest(ClientRequest, **_REQ):
    name: str = ""
    version: str = ""
    data: msgspec.Raw = EMPTY
    b64data: str = ""
    channels: list[str] | None = None


class UserRequest(ClientRequest, **_REQ):
    """A request after the connect: the connection's user. Each also carries `meta`, last,
    what the connect proxy gave (sent back with every later request)."""

    user: str


class RefreshRequest(UserRequest, **_REQ):
    meta: msgspec.Raw = EMPTY


class SubscribeRequest(UserRequest, **_REQ):
    channel: str
    token: str = ""
    data: msgspec.Raw = EMPTY
    b64data: str = ""
    meta: msgspec.Raw = EMPTY


class PublishRequest(UserRequest, **_REQ):
    channel: str
    data: msgspec.Raw = EMPTY
    b64data: str = ""
    meta: msgspec.Raw = EMPTY


class SubRefreshRequest(UserRequest, **_REQ):
    channel: str
    meta: msgspec.Raw = EMPTY


class RPCRequest(msgspec.Struct, **_REQ):
    """A client's `rpc` command; the server API's `rpc` method sends it with no client (so
    none of a client's fields is required here)."""

    app_id: str
    method: str
    client: str = ""
    transport: str = ""
    protocol: str = ""
    encoding: str = ""
    user: str = ""
    data: msgspec.Raw = EMPTY
    b64data: str = ""
    meta: msgspec.Raw = EMPTY


class SendRequest(UserRequest, **_REQ):
    """A client's asynchronous `send`: an RPC without a method and without a reply."""

    data: msgspec.Raw = EMPTY
    b64data: str = ""
    meta: msgspec.Raw = EMPTY


ProxyRequest = (
    ConnectRequest
    | RefreshRequest
    | SubscribeRequest
    | PublishRequest
    | SubRefreshRequest
    | RPCRequest
    | SendRequest
)


# --- replies ----------------------------------------------------------------------------------


class Error(msgspec.Struct, **_REP):
    code: int
    message: str = ""
    temporary: bool = False


class Disconnect(msgspec.Struct, **_REP):
    code: int
    reason: str = ""


class SubscribeOptionOverride(msgspec.Struct, **_REP):
    """Centrifugo wraps each override as `{"value": bool}`."""

    presence: BoolValue | None = None
    join_leave: BoolValue | None = None
    force_push_join_leave: BoolValue | None = None
    force_recovery: BoolValue | None = None
    force_positioning: BoolValue | None = None


class BoolValue(msgspec.Struct, **_REP):
    value: bool = False


class SubscribeOptions(msgspec.Struct, **_REP):
    """A server-side subscription the connect reply asks for (`subs`)."""

    info: msgspec.Raw = EMPTY
    b64info: str = ""
    data: msgspec.Raw = EMPTY
    b64data: str = ""
    override: SubscribeOptionOverride | None = None


class ConnectResult(msgspec.Struct, **_REP):
    user: str = ""
    expire_at: int = 0
    info: msgspec.Raw = EMPTY
    b64info: str = ""
    data: msgspec.Raw = EMPTY
    b64data: str = ""
    channels: list[str] | None = None
    subs: dict[str, SubscribeOptions] | None = None
    meta: msgspec.Raw = EMPTY


class RefreshResult(msgspec.Struct, **_REP):
    expired: bool = False
    expire_at: int = 0
    info: msgspec.Raw = EMPTY
    b64info: str = ""


class SubscribeResult(msgspec.Struct, **_REP):
    info: msgspec.Raw = EMPTY
    b64info: str = ""
    data: msgspec.Raw = EMPTY
    b64data: str = ""
    override: SubscribeOptionOverride | None = None
    expire_at: int = 0


class PublishResult(msgspec.Struct, **_REP):
    data: msgspec.Raw = EMPTY
    b64data: str = ""
    skip_history: bool = False


class RPCResult(msgspec.Struct, **_REP):
    data: msgspec.Raw = EMPTY
    b64data: str = ""


class BaseReply(msgspec.Struct, **_REP):
    """What every reply may carry instead of a result: a refusal (`error`) or the end of the
    connection (`disconnect`)."""

    error: Error | None = None
    disconnect: Disconnect | None = None


class ConnectReply(BaseReply, **_REP):
    result: ConnectResult | None = None


class RefreshReply(BaseReply, **_REP):
    result: RefreshResult | None = None


class SubscribeReply(BaseReply, **_REP):
    result: SubscribeResult | None = None


class PublishReply(BaseReply, **_REP):
    result: PublishResult | None = None


class SubRefreshReply(BaseReply, **_REP):
    result: RefreshResult | None = None


class RPCReply(BaseReply, **_REP):
    result: RPCResult | None = None


class SendReply(BaseReply, **_REP):
    """A send's reply carries nothing but a possible error or disconnect."""


ProxyReply = (
    ConnectReply
    | RefreshReply
    | SubscribeReply
    | PublishReply
    | SubRefreshReply
    | RPCReply
    | SendReply
)

# The reply type of each request type: the caller decodes into it.
REPLY_TYPES: dict[type[msgspec.Struct], type[msgspec.Struct]] = {
    ConnectRequest: ConnectReply,
    RefreshRequest: RefreshReply,
    SubscribeRequest: SubscribeReply,
    PublishRequest: PublishReply,
    SubRefreshRequest: SubRefreshReply,
    RPCRequest: RPCReply,
    SendRequest: SendReply,
}

# Bounded metric label values, one per request type.
KINDS: dict[type[msgspec.Struct], str] = {
    ConnectRequest: "connect",
    RefreshRequest: "refresh",
    SubscribeRequest: "subscribe",
    PublishRequest: "publish",
    SubRefreshRequest: "sub_refresh",
    RPCRequest: "rpc",
    SendRequest: "send",
}


class ProxyDecodeError(ValueError):
    """The backend answered something that is not a proxy reply."""


_encoder = msgspec.json.Encoder()
_any_json = msgspec.json.Decoder()
_decoders = {req: msgspec.json.Decoder(rep) for req, rep in REPLY_TYPES.items()}


def encode_request(request: ProxyRequest) -> bytes:
    return _encoder.encode(request)


def decode_reply(request_type: type[msgspec.Struct], body: bytes) -> Any:
    """The reply to a request of `request_type`; `ProxyDecodeError` for anything else."""
    try:
        return _decoders[request_type].decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise ProxyDecodeError(str(exc)) from None


# Client protocols whose payloads are bytes, not JSON (Centrifugo's "binary" encoding).
BINARY_PROTOCOLS = frozenset({"protobuf"})


def encoding(binary: bool) -> str:
    """A request's `encoding`, as Centrifugo names it."""
    return "binary" if binary else "json"


def client_data(data: msgspec.Raw, binary: bool) -> dict[str, Any]:
    """A client's payload as request fields: `data` (raw JSON) from a JSON client,
    `b64data` from a binary one, whose bytes need not be JSON (nor even text)."""
    if not data:
        return {}
    if binary:
        return {"b64data": base64.b64encode(data).decode("ascii")}
    return {"data": data}


def payload(raw: msgspec.Raw, b64: str, binary: bool = False) -> bytes | None:
    """`data`/`info` as bytes: the raw JSON, else the base64 form decoded; None if neither
    was given. Invalid base64 raises `ProxyDecodeError`, and so does base64 of something
    other than JSON unless `binary` (a payload only a binary client receives)."""
    if raw:
        return bytes(raw)
    if b64:
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise ProxyDecodeError("invalid base64") from None
        if binary:
            return data
        # These bytes go into JSON frames as they are: anything but JSON would corrupt the
        # frames of every JSON client that receives them.
        try:
            _any_json.decode(data)
        except (msgspec.DecodeError, RecursionError):
            raise ProxyDecodeError("base64 payload is not JSON") from None
        return data
    return None


def raw_json(data: bytes | None) -> msgspec.Raw:
    """Bytes of JSON as a field of a request or a client reply."""
    return msgspec.Raw(data) if data else EMPTY
