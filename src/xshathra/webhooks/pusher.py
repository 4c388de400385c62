"""Pusher-format webhooks (SPEC §10): the bodies and signature headers Pusher's server libraries
verify (`validate_webhook`). A webhook gets them for the Pusher event names it lists
(`channel_occupied`, `channel_vacated`, `member_added`, `member_removed`, `client_event`);
`*` means Xshathra's events only, so that no receiver gets one event in two formats.

Bodies are built when the event is queued (durably, like every delivery); the signature is
made when it is sent, with the app's key and secret as they are then.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import msgspec

from xshathra.protocol.codes import LifecycleEvent

CHANNEL_OCCUPIED = "channel_occupied"
CHANNEL_VACATED = "channel_vacated"
MEMBER_ADDED = "member_added"
MEMBER_REMOVED = "member_removed"
CLIENT_EVENT = "client_event"
CACHE_MISS = "cache_miss"
PUSHER_EVENTS = frozenset(
    {CHANNEL_OCCUPIED, CHANNEL_VACATED, MEMBER_ADDED, MEMBER_REMOVED, CLIENT_EVENT, CACHE_MISS}
)

KEY_HEADER = "X-Pusher-Key"
SIGNATURE_HEADER = "X-Pusher-Signature"

_encoder = msgspec.json.Encoder()


def lifecycle_event(event: LifecycleEvent, channel: str) -> dict[str, str] | None:
    """The Pusher event for a channel's occupancy change, if Pusher has one. A connection's
    join and leave are not Pusher's member events: those are per user (`member_event`)."""
    if event is LifecycleEvent.ROOM_OCCUPIED:
        return {"name": CHANNEL_OCCUPIED, "channel": channel}
    if event is LifecycleEvent.ROOM_VACATED:
        return {"name": CHANNEL_VACATED, "channel": channel}
    return None


def member_event(channel: str, user: str, added: bool) -> dict[str, str] | None:
    """member_added when the user's first connection on any node joined the presence
    channel, member_removed when their last left, as Pusher reports them."""
    if not channel.startswith("presence-") or not user:
        return None
    return {"name": MEMBER_ADDED if added else MEMBER_REMOVED, "channel": channel, "user_id": user}


def cache_miss_event(channel: str) -> dict[str, str]:
    """A subscriber of a cache channel found no cached event."""
    return {"name": CACHE_MISS, "channel": channel}


def client_event(channel: str, event: str, data: bytes, user: str | None) -> dict[str, str]:
    """A client event as Pusher reports it: `data` as the string the client's JSON makes."""
    found = {"name": CLIENT_EVENT, "channel": channel, "event": event, "data": data.decode()}
    if user and channel.startswith("presence-"):
        found["user_id"] = user
    return found


def body(event: dict[str, str]) -> str:
    return _encoder.encode({"time_ms": int(time.time() * 1000), "events": [event]}).decode()


def signed_headers(key: str, secret: str, payload: bytes) -> dict[str, str]:
    signature = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return {KEY_HEADER: key, SIGNATURE_HEADER: signature}
