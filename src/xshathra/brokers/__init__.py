"""The broker contract: `Broker` moves publications and join/leave events between nodes and
keeps channel history (publishing and appending to history are one atomic step); `ControlBus`
carries node-wide control messages. Every backend here implements both on one connection, as
`ClusterBroker`. The value types they exchange live in `xshathra.model`.

Guarantees, as centrifuge states them: delivery to other nodes is at most once and, per channel
and per publishing node, in publish order; history offsets are strictly increasing within an
epoch; a new epoch means earlier offsets are void. A backend that may have lost messages (its
connection dropped) must say so through `on_reconnect`, never recover silently.
"""

from __future__ import annotations

from typing import Protocol

from xshathra.model import (
    BrokerPublication,
    ChannelRef,
    ClientInfoData,
    HistoryOptions,
    HistoryResult,
    PublishOptions,
    StreamPosition,
    SubscriberCounts,
)


class BrokerEventHandler(Protocol):
    """What a broker calls when an event reaches this node: on the event loop, never blocking."""

    def on_publication(self, ref: ChannelRef, pub: BrokerPublication) -> None:
        """A publication of a channel this node subscribed, at most once, in publish order."""

    def on_join(self, ref: ChannelRef, info: ClientInfoData) -> None: ...

    def on_leave(self, ref: ChannelRef, info: ClientInfoData) -> None: ...

    def on_control(self, data: bytes) -> None:
        """A control message (`ControlBus.publish_control`) from any node, this one included."""

    def on_reconnect(self) -> None:
        """The broker's connection came back: events may have been missed meanwhile."""


class Broker(Protocol):
    """Publish/subscribe between nodes, channel history and cluster-wide subscriber counts."""

    async def start(self, handler: BrokerEventHandler) -> None:
        """Connect and deliver events to `handler` from now on. A backend whose subscription
        drops must resubscribe by itself and then call `handler.on_reconnect()` (the events
        published meanwhile are lost), so subscribers can recover from history."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the broker cannot serve (used by the health check)."""

    async def subscribe(self, ref: ChannelRef) -> None:
        """Start receiving this channel's events on this node (first local subscriber); returns
        once the subscription is live, so a publish after it is not missed."""

    async def unsubscribe(self, ref: ChannelRef) -> None:
        """Stop receiving them (last local subscriber left)."""

    async def publish(self, ref: ChannelRef, data: bytes, opts: PublishOptions) -> StreamPosition:
        """Deliver to every node subscribed (at most once) and, when `opts.history_size` > 0,
        append to history in the same atomic step: a publication is in history if and only if
        it was sent, and its offset is the stream's next one. With `opts.idempotency_key`, a
        repeat of the key on the channel within the backend's window publishes nothing again
        and returns the first publish's position."""

    async def publish_join(self, ref: ChannelRef, info: ClientInfoData) -> None:
        """Deliver a join event to every node subscribed (at most once, never in history)."""

    async def publish_leave(self, ref: ChannelRef, info: ClientInfoData) -> None:
        """Deliver a leave event to every node subscribed (at most once, never in history)."""

    async def history(self, ref: ChannelRef, opts: HistoryOptions) -> HistoryResult:
        """The channel's kept publications as `opts` selects them (capped by `opts.max_bytes`
        with `xshathra.model.fit`) and its current stream position, even when none is kept."""

    async def remove_history(self, ref: ChannelRef) -> None:
        """Drop the kept publications; the stream position (offset and epoch) stays."""

    async def set_subscriber_count(self, ref: ChannelRef, count: int) -> SubscriberCounts:
        """Record how many subscribers this node has on the channel now; returns the channel's
        subscribers on every live node before and after, read atomically with the change (so
        exactly one node sees a channel become occupied or vacated)."""

    async def subscriber_count(self, ref: ChannelRef) -> int:
        """Subscribers of the channel on every live node."""


class ControlBus(Protocol):
    """Node-wide control messages (disconnect, unsubscribe, app changes, ...)."""

    async def publish_control(self, data: bytes) -> None:
        """Deliver `data` to the `on_control` of every live node's handler, this node's
        included, at most once. A node that was cut off learns of it through `on_reconnect`."""


class ClusterBroker(Broker, ControlBus, Protocol):
    """A broker that carries control messages too, on the same connection and to the handler
    given to `start`: what a node is given (memory, Redis and NATS all implement it)."""
