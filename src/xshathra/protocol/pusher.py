"""The Pusher Channels protocol 7, sans I/O: its messages, error and close codes, the
signatures it uses (channel auth, user sign-in, the HTTP API's signed query), and `PusherCodec`,
which writes the engine's publications, joins and leaves as Pusher events.

Written from Pusher's published protocol documentation; field names are facts of the wire.
Every Pusher message is a JSON object `{"event", "channel"?, "data"?, "user_id"?}`, one per
WebSocket message. Server-sent `data` is a JSON *string* holding JSON (clients parse it once
more), except for `pusher:error`, whose data is an object.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import IntEnum
from typing import TypeVar

import msgspec

from xshathra.protocol.codec import ProtocolDecodeError, WireFormat
from xshathra.protocol.messages import Command, Reply

PROTOCOL_VERSION = 7
ACTIVITY_TIMEOUT = 120  # seconds, as Pusher advertises it
MAX_PRESENCE_MEMBERS = 100
MAX_CHANNELS_PER_EVENT = 100  # HTTP API: channels of one event
MAX_BATCH_EVENTS = 10  # HTTP API: events of one batch
MAX_EVENT_NAME = 200
MAX_CHANNEL_NAME = 164
CLIENT_EVENTS_PER_SECOND = 10
MAX_CLIENT_EVENT_BYTES = 10 * 1024  # a client event's data, as Pusher limits it
AUTH_TIMESTAMP_GRACE = 600  # seconds either side of now

PRIVATE_PREFIX = "private-"
ENCRYPTED_PREFIX = "private-encrypted-"
PRESENCE_PREFIX = "presence-"
CACHE_PREFIX = "cache-"
CACHE_TTL = 1800  # seconds a cache channel keeps its last event (Pusher's 30 minutes)
CLIENT_EVENT_PREFIX = "client-"
# Where `send_to_user` events go: only the signed-in user may subscribe (pusher-js does it
# itself after `pusher:signin`).
SERVER_TO_USER_PREFIX = "#server-to-user-"
# The event name a Centrifuge publication without `tags.event` has for Pusher clients (as
# webhooks already name such publications, SPEC §5).
DEFAULT_EVENT = "publication"


class PusherCode(IntEnum):
    """Pusher's error and close codes. 4000-4099: do not reconnect; 4100-4199: reconnect after
    a back-off; 4200-4299: reconnect now; 4300-4399: errors that close nothing."""

    SSL_ONLY = 4000
    APP_NOT_FOUND = 4001
    APP_DISABLED = 4003
    OVER_CONNECTION_QUOTA = 4004
    PATH_NOT_FOUND = 4005
    INVALID_VERSION = 4006
    UNSUPPORTED_VERSION = 4007
    NO_VERSION = 4008
    UNAUTHORIZED = 4009
    OVER_CAPACITY = 4100
    RECONNECT = 4200
    PONG_NOT_RECEIVED = 4201
    CLOSED_INACTIVE = 4202
    CLIENT_EVENT_REJECTED = 4301


def is_private(channel: str) -> bool:
    """Channels that need a signature from the app's backend to join."""
    return channel.startswith(PRIVATE_PREFIX) or channel.startswith(PRESENCE_PREFIX)


def is_presence(channel: str) -> bool:
    return channel.startswith(PRESENCE_PREFIX)


def is_encrypted(channel: str) -> bool:
    return channel.startswith(ENCRYPTED_PREFIX)


def is_cache(channel: str) -> bool:
    """Cache channels (`cache-`, `private-cache-`, `private-encrypted-cache-`,
    `presence-cache-`): a new subscriber first gets the last event, or `pusher:cache_miss`."""
    for prefix in ("", PRIVATE_PREFIX, ENCRYPTED_PREFIX, PRESENCE_PREFIX):
        if channel.startswith(prefix + CACHE_PREFIX):
            return True
    return False


def cache_miss(channel: str) -> bytes:
    return encode_event("pusher:cache_miss", None, channel)


# --- incoming ---------------------------------------------------------------------------------


class IncomingEvent(msgspec.Struct, kw_only=True):
    """One message from a Pusher client. `data` stays raw: its shape depends on the event."""

    event: str
    channel: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"null")


class SubscribeData(msgspec.Struct, kw_only=True):
    channel: str
    auth: str | None = None
    channel_data: str | None = None


class UnsubscribeData(msgspec.Struct, kw_only=True):
    channel: str


class SigninData(msgspec.Struct, kw_only=True):
    auth: str
    user_data: str


class ChannelData(msgspec.Struct, kw_only=True):
    """A presence member as the app's backend signed it: `user_id` may be a number."""

    user_id: str | int
    user_info: msgspec.Raw = msgspec.Raw(b"")  # absent: b"" (msgspec takes no Raw in a union)


class UserData(msgspec.Struct, kw_only=True):
    id: str


_event_decoder = msgspec.json.Decoder(IncomingEvent)
_subscribe_decoder = msgspec.json.Decoder(SubscribeData)
_unsubscribe_decoder = msgspec.json.Decoder(UnsubscribeData)
_signin_decoder = msgspec.json.Decoder(SigninData)
_channel_data_decoder = msgspec.json.Decoder(ChannelData)
_user_data_decoder = msgspec.json.Decoder(UserData)


class PusherDecodeError(ProtocolDecodeError):
    """A message that is not valid Pusher JSON of the expected shape."""


T = TypeVar("T")


def _decode(decoder: msgspec.json.Decoder[T], data: bytes) -> T:
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise PusherDecodeError(str(exc)) from None


def decode_event(frame: bytes) -> IncomingEvent:
    return _decode(_event_decoder, frame)


def decode_subscribe(data: bytes) -> SubscribeData:
    return _decode(_subscribe_decoder, data)


def decode_unsubscribe(data: bytes) -> UnsubscribeData:
    return _decode(_unsubscribe_decoder, data)


def decode_signin(data: bytes) -> SigninData:
    return _decode(_signin_decoder, data)


def decode_channel_data(text: str) -> ChannelData:
    return _decode(_channel_data_decoder, text.encode())


def decode_user_data(text: str) -> UserData:
    return _decode(_user_data_decoder, text.encode())


# --- outgoing ---------------------------------------------------------------------------------


class OutgoingEvent(msgspec.Struct, omit_defaults=True):
    event: str
    channel: str | None = None
    # A JSON string (most events) or an object (`pusher:error`), already encoded.
    data: msgspec.Raw | str | None = None
    user_id: str | None = None


_encoder = msgspec.json.Encoder()


def encode_event(
    event: str,
    data: msgspec.Raw | str | None = None,
    channel: str | None = None,
    user_id: str | None = None,
) -> bytes:
    return _encoder.encode(OutgoingEvent(event, channel, data, user_id))


def encode_json_string_data(event: str, payload: object, channel: str | None = None) -> bytes:
    """An event whose data is `payload` as JSON, sent as a JSON string (Pusher's rule)."""
    return encode_event(event, _encoder.encode(payload).decode(), channel)


def connection_established(socket_id: str, activity_timeout: int = ACTIVITY_TIMEOUT) -> bytes:
    return encode_json_string_data(
        "pusher:connection_established",
        {"socket_id": socket_id, "activity_timeout": activity_timeout},
    )


def error_event(code: int | None, message: str) -> bytes:
    """`pusher:error`: its data is an object; `code` null for errors that close nothing."""
    return encode_event(
        "pusher:error", msgspec.Raw(_encoder.encode({"code": code, "message": message}))
    )


def subscription_error(channel: str, kind: str, message: str, status: int) -> bytes:
    """What pusher-js raises as the channel's `pusher:subscription_error`."""
    payload = {"type": kind, "error": message, "status": status}
    return encode_event("pusher:subscription_error", msgspec.Raw(_encoder.encode(payload)), channel)


def subscription_succeeded(channel: str, members: dict[str, bytes] | None = None) -> bytes:
    """`members`: user id -> user_info (raw JSON) of a presence channel, None otherwise."""
    if members is None:
        return encode_json_string_data("pusher_internal:subscription_succeeded", {}, channel)
    body = _encoder.encode(
        {
            "presence": {
                "ids": list(members),
                "hash": {uid: msgspec.Raw(info or b"null") for uid, info in members.items()},
                "count": len(members),
            }
        }
    )
    return encode_event("pusher_internal:subscription_succeeded", body.decode(), channel)


def subscription_count(channel: str, count: int) -> bytes:
    """Pusher's subscription counting: the channel's subscriber count, cluster-wide."""
    return encode_json_string_data(
        "pusher_internal:subscription_count", {"subscription_count": count}, channel
    )


PING = encode_event("pusher:ping", msgspec.Raw(b"{}"))
PONG = encode_event("pusher:pong", msgspec.Raw(b"{}"))


def event_data(payload: bytes) -> msgspec.Raw | str:
    """A publication's data (raw JSON) as Pusher's `data`: a JSON string value is sent as that
    string (so a string sent over Pusher comes back as sent), anything else as its JSON text."""
    if payload[:1] == b'"':
        return msgspec.Raw(payload)
    return payload.decode()


def publication_to_data(data: str) -> bytes:
    """Pusher's `data` (a string) as a publication's data: the JSON it holds, or the string
    itself as a JSON string when it is not JSON (SPEC §10)."""
    stripped = data.strip()
    if stripped:
        try:
            msgspec.json.decode(stripped)
        except (msgspec.DecodeError, RecursionError):
            pass
        else:
            return stripped.encode()
    return _encoder.encode(data)


def event_name(tags: dict[str, str] | None) -> str:
    """The Pusher event of a publication: its `tags.event`, else `publication`. Names Pusher
    reserves for the server's own events are never forwarded as such."""
    name = tags.get("event") if tags else None
    if not name or name.startswith("pusher_internal:") or name.startswith("pusher:"):
        return DEFAULT_EVENT
    return name


class PusherCodec:
    """The hub's seam for Pusher clients: a Centrifuge push becomes the Pusher event a pusher-js
    client expects (a publication, `member_added`, `member_removed`). Pusher clients are read by
    their session, never through `decode_commands`. One Pusher message per WebSocket message:
    `join_frames` joins with newlines, and the Pusher transport splits on them again (encoded
    JSON never holds a raw newline)."""

    __slots__ = ()

    name = "pusher"
    wire_format = WireFormat.TEXT
    ping = PING
    # Pusher never echoes a publication to the connection that sent it (hub.py).
    skip_publisher = True

    def decode_commands(self, frame: bytes, /) -> list[Command]:
        raise ProtocolDecodeError("Pusher messages are read by the Pusher session")

    def encode_reply(self, reply: Reply, /) -> bytes:
        push = reply.push
        if push is None:
            return b""
        if push.pub is not None:
            pub = push.pub
            name = event_name(pub.tags)
            user_id = None
            if name.startswith(CLIENT_EVENT_PREFIX) and pub.info is not None and pub.info.user:
                user_id = pub.info.user
            return encode_event(name, event_data(bytes(pub.data)), push.channel, user_id)
        if push.join is not None:
            info = push.join.info
            member: dict[str, object] = {"user_id": info.user}
            if info.chan_info:
                member["user_info"] = info.chan_info
            return encode_json_string_data("pusher_internal:member_added", member, push.channel)
        if push.leave is not None:
            return encode_json_string_data(
                "pusher_internal:member_removed", {"user_id": push.leave.info.user}, push.channel
            )
        return b""

    def join_frames(self, encoded: list[bytes], /) -> bytes:
        return b"\n".join(e for e in encoded if e)


PUSHER_CODEC = PusherCodec()


# --- signatures -------------------------------------------------------------------------------


def hmac_sha256(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def channel_auth(
    key: str, secret: str, socket_id: str, channel: str, channel_data: str | None
) -> str:
    """The `auth` an app backend returns for a private or presence subscription."""
    message = f"{socket_id}:{channel}" + (f":{channel_data}" if channel_data is not None else "")
    return f"{key}:{hmac_sha256(secret, message)}"


def signin_auth(key: str, secret: str, socket_id: str, user_data: str) -> str:
    """The `auth` an app backend returns for `pusher:signin`."""
    return f"{key}:{hmac_sha256(secret, f'{socket_id}::user::{user_data}')}"


def auth_matches(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def query_string_to_sign(params: dict[str, str]) -> str:
    """The signed query: every parameter but `auth_signature`, keys lower-cased, sorted,
    `key=value` joined by `&`, values as sent (unescaped)."""
    items = sorted((k.lower(), v) for k, v in params.items() if k.lower() != "auth_signature")
    return "&".join(f"{k}={v}" for k, v in items)


def http_signature(secret: str, method: str, path: str, params: dict[str, str]) -> str:
    return hmac_sha256(secret, f"{method.upper()}\n{path}\n{query_string_to_sign(params)}")


def body_md5(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()
