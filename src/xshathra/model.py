"""Shared value types: ids, the channel key, stream positions, publications, publish and history
options and results, and named result tuples.

Every layer speaks these types, so this module imports nothing of ours and performs no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, NewType

AppId = NewType("AppId", str)
ClientId = NewType("ClientId", str)
UserId = NewType("UserId", str)


class ChannelRef(NamedTuple):
    """A channel inside a tenant. Tenancy is never a glued string in business code: only
    backends turn a ref into their own storage keys."""

    app_id: AppId
    name: str


@dataclass(frozen=True, slots=True)
class StreamPosition:
    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class ClientInfoData:
    """Who published or joined. `conn_info`/`chan_info` are raw JSON bytes or b""."""

    user: str
    client: str
    conn_info: bytes = b""
    chan_info: bytes = b""


@dataclass(frozen=True, slots=True)
class BrokerPublication:
    data: bytes  # raw JSON, never parsed by the engine
    offset: int = 0
    epoch: str = ""
    tags: dict[str, str] | None = None
    info: ClientInfoData | None = None
    time: int = 0  # unix ms
    # Sent as a fossil delta to subscribers that negotiated one (the publish `delta` option).
    delta: bool = False


@dataclass(frozen=True, slots=True)
class PublishOptions:
    history_size: int = 0
    history_ttl: int = 0  # seconds
    tags: dict[str, str] | None = None
    info: ClientInfoData | None = None
    idempotency_key: str = ""
    delta: bool = False  # see BrokerPublication.delta


@dataclass(frozen=True, slots=True)
class HistoryOptions:
    limit: int = 0  # 0: only the stream position; -1: everything kept
    since: StreamPosition | None = None
    reverse: bool = False
    # At most this many bytes of publications (`reply_size`) in the result; 0: no cap. The
    # first publication always fits, so that paging through history always moves on.
    max_bytes: int = 0


@dataclass(frozen=True, slots=True)
class HistoryResult:
    publications: list[BrokerPublication] = field(default_factory=list)
    position: StreamPosition = StreamPosition(0, "")
    truncated: bool = False  # `max_bytes` left out publications that `limit` would have given


class SubscriberCounts(NamedTuple):
    """A channel's subscribers on every live node just before and just after one change."""

    before: int
    after: int


class PresenceStats(NamedTuple):
    clients: int  # connections present in the channel
    users: int  # distinct user ids among them


# What one publication adds to a reply beyond its data, tags and info (JSON keys, offset).
REPLY_OVERHEAD = 64


def reply_size(pub: BrokerPublication) -> int:
    """Roughly the bytes a publication takes in a reply frame (never less)."""
    size = REPLY_OVERHEAD + len(pub.data)
    if pub.tags:
        size += sum(len(k) + len(v) + 6 for k, v in pub.tags.items())
    if pub.info is not None:
        info = pub.info
        size += len(info.user) + len(info.client) + len(info.conn_info) + len(info.chan_info)
    return size


def fit(pubs: list[BrokerPublication], max_bytes: int) -> tuple[list[BrokerPublication], bool]:
    """The longest prefix of `pubs` within `max_bytes` (at least one publication), and whether
    any was left out. Every broker caps its history replies with it."""
    if max_bytes <= 0:
        return pubs, False
    total = 0
    for i, pub in enumerate(pubs):
        total += reply_size(pub)
        if total > max_bytes and i > 0:
            return pubs[:i], True
    return pubs, False
