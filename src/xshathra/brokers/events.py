"""What a broker receives on a channel, as values: a publication, a join or a leave, and the
one place such an event is handed to the engine's handler. The Redis and NATS backends parse
their wire messages into these with pure functions (`parse_channel_message` in each), so the
parsing is tested on bytes alone, without a connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from xshathra.brokers import BrokerEventHandler
from xshathra.model import BrokerPublication, ChannelRef, ClientInfoData


@dataclass(frozen=True, slots=True)
class Joined:
    """A client joined the channel on some node."""

    info: ClientInfoData


@dataclass(frozen=True, slots=True)
class Left:
    """A client left the channel on some node."""

    info: ClientInfoData


ChannelEvent = BrokerPublication | Joined | Left


def deliver(handler: BrokerEventHandler, ref: ChannelRef, event: ChannelEvent) -> None:
    """Hand one parsed channel event to the handler's matching method."""
    if isinstance(event, BrokerPublication):
        handler.on_publication(ref, event)
    elif isinstance(event, Joined):
        handler.on_join(ref, event.info)
    else:
        handler.on_leave(ref, event.info)
