"""The broker: moves publications, join/leave events and control messages between nodes, and keeps
channel history, because publishing and appending to history must be one atomic step.

Contract (as centrifuge's Broker states it): delivery to other nodes is at most once; history
offsets are strictly increasing within an epoch; a new epoch means earlier offsets are void.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from xshathra.engine.channels import ChannelRef


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


@dataclass(frozen=True, slots=True)
class PublishOptions:
    history_size: int = 0
    history_ttl: int = 0  # seconds
    tags: dict[str, str] | None = None
    info: ClientInfoData | None = None
    idempotency_key: str = ""


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


class BrokerEventHandler(Protocol):
    """What a broker calls when an event reaches this node: on the event loop, never blocking."""

    def on_publication(self, ref: ChannelRef, pub: BrokerPublication) -> None: ...

    def on_join(self, ref: ChannelRef, info: ClientInfoData) -> None: ...

    def on_leave(self, ref: ChannelRef, info: ClientInfoData) -> None: ...

    def on_control(self, data: bytes) -> None: ...

    def on_reconnect(self) -> None:
        """The broker's connection came back: events may have been missed meanwhile."""


class Broker(Protocol):
    async def start(self, handler: BrokerEventHandler) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the broker cannot serve (used by the health check)."""

    async def subscribe(self, ref: ChannelRef) -> None:
        """Start receiving this channel's events on this node (first local subscriber)."""

    async def unsubscribe(self, ref: ChannelRef) -> None:
        """Stop receiving them (last local subscriber left)."""

    async def publish(self, ref: ChannelRef, data: bytes, opts: PublishOptions) -> StreamPosition:
        """Deliver to every node and, when `opts.history_size` > 0, append to history atomically."""

    async def publish_join(self, ref: ChannelRef, info: ClientInfoData) -> None: ...

    async def publish_leave(self, ref: ChannelRef, info: ClientInfoData) -> None: ...

    async def publish_control(self, data: bytes) -> None:
        """Deliver a control message to every node, this one included."""

    async def history(self, ref: ChannelRef, opts: HistoryOptions) -> HistoryResult: ...

    async def remove_history(self, ref: ChannelRef) -> None: ...

    async def set_subscriber_count(self, ref: ChannelRef, count: int) -> tuple[int, int]:
        """Record how many subscribers this node has on the channel now; returns the channel's
        subscribers on every live node before and after, read atomically with the change (so
        exactly one node sees a channel become occupied or vacated)."""

    async def subscriber_count(self, ref: ChannelRef) -> int:
        """Subscribers of the channel on every live node."""
