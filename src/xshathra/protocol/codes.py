"""Error and disconnect codes of the Centrifuge protocol, as centrifuge-js and
centrifuge-python interpret them.

Error codes (replies to commands): 100-199 are the protocol's own, 1000+ are left to
applications. Disconnect codes travel as the WebSocket close code:
3000-3499 tell the client to reconnect, 3500-3999 tell it not to, 4000-4499 and 4500-4999
are the same two ranges left to applications.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(IntEnum):
    INTERNAL = 100
    UNAUTHORIZED = 101
    UNKNOWN_CHANNEL = 102
    PERMISSION_DENIED = 103
    METHOD_NOT_FOUND = 104
    ALREADY_SUBSCRIBED = 105
    LIMIT_EXCEEDED = 106
    BAD_REQUEST = 107
    NOT_AVAILABLE = 108
    TOKEN_EXPIRED = 109  # the client fetches a fresh token and tries again
    EXPIRED = 110
    TOO_MANY_REQUESTS = 111
    UNRECOVERABLE_POSITION = 112


ERROR_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.INTERNAL: "internal server error",
    ErrorCode.UNAUTHORIZED: "unauthorized",
    ErrorCode.UNKNOWN_CHANNEL: "unknown channel",
    ErrorCode.PERMISSION_DENIED: "permission denied",
    ErrorCode.METHOD_NOT_FOUND: "method not found",
    ErrorCode.ALREADY_SUBSCRIBED: "already subscribed",
    ErrorCode.LIMIT_EXCEEDED: "limit exceeded",
    ErrorCode.BAD_REQUEST: "bad request",
    ErrorCode.NOT_AVAILABLE: "not available",
    ErrorCode.TOKEN_EXPIRED: "token expired",
    ErrorCode.EXPIRED: "expired",
    ErrorCode.TOO_MANY_REQUESTS: "too many requests",
    ErrorCode.UNRECOVERABLE_POSITION: "unrecoverable position",
}

# Errors after which the client may retry the same command on its own.
TEMPORARY_ERRORS = frozenset({ErrorCode.INTERNAL, ErrorCode.TOO_MANY_REQUESTS})


class DisconnectCode(IntEnum):
    # 3000-3499: the client reconnects.
    CONNECTION_CLOSED = 3000
    SHUTDOWN = 3001
    SERVER_ERROR = 3004
    EXPIRED = 3005
    SUB_EXPIRED = 3006
    SLOW = 3008
    WRITE_ERROR = 3009
    INSUFFICIENT_STATE = 3010
    FORCE_RECONNECT = 3011
    NO_PONG = 3012
    TOO_MANY_REQUESTS = 3013
    # 3500-3999: the client stays disconnected.
    INVALID_TOKEN = 3500
    BAD_REQUEST = 3501
    STALE = 3502
    FORCE_NO_RECONNECT = 3503
    CONNECTION_LIMIT = 3504
    CHANNEL_LIMIT = 3505
    INAPPROPRIATE_PROTOCOL = 3506
    PERMISSION_DENIED = 3507
    NOT_AVAILABLE = 3508
    TOO_MANY_ERRORS = 3509


DISCONNECT_REASONS: dict[DisconnectCode, str] = {
    DisconnectCode.CONNECTION_CLOSED: "connection closed",
    DisconnectCode.SHUTDOWN: "shutdown",
    DisconnectCode.SERVER_ERROR: "internal server error",
    DisconnectCode.EXPIRED: "connection expired",
    DisconnectCode.SUB_EXPIRED: "subscription expired",
    DisconnectCode.SLOW: "slow",
    DisconnectCode.WRITE_ERROR: "write error",
    DisconnectCode.INSUFFICIENT_STATE: "insufficient state",
    DisconnectCode.FORCE_RECONNECT: "force reconnect",
    DisconnectCode.NO_PONG: "no pong",
    DisconnectCode.TOO_MANY_REQUESTS: "too many requests",
    DisconnectCode.INVALID_TOKEN: "invalid token",
    DisconnectCode.BAD_REQUEST: "bad request",
    DisconnectCode.STALE: "stale",
    DisconnectCode.FORCE_NO_RECONNECT: "force disconnect",
    DisconnectCode.CONNECTION_LIMIT: "connection limit",
    DisconnectCode.CHANNEL_LIMIT: "channel limit",
    DisconnectCode.INAPPROPRIATE_PROTOCOL: "inappropriate protocol",
    DisconnectCode.PERMISSION_DENIED: "permission denied",
    DisconnectCode.NOT_AVAILABLE: "not available",
    DisconnectCode.TOO_MANY_ERRORS: "too many errors",
}


class UnsubscribeCode(IntEnum):
    """Codes of an unsubscribe push: 2000-2499 the client stays unsubscribed, 2500-2999 it
    subscribes again (and recovers)."""

    SERVER = 2000  # the server unsubscribed the client
    INSUFFICIENT = 2500  # publications were lost: resubscribe and recover
    EXPIRED = 2501  # the subscription token expired: resubscribe with a new token


class LifecycleEvent(StrEnum):
    """Channel lifecycle events the engine reports and webhooks deliver, named as the seed's
    webhook contract names them."""

    USER_JOINED = "user-joined"
    USER_LEFT = "user-left"
    ROOM_OCCUPIED = "room-occupied"
    ROOM_VACATED = "room-vacated"


def should_reconnect(code: int) -> bool:
    """Whether a client told `code` reconnects (the protocol's ranges, as the SDKs read them)."""
    return 3000 <= code < 3500 or 4000 <= code < 4500
