"""The channel's part of every Redis key and NATS subject: the one mapping of a `ChannelRef`
to backend names, shared by brokers and presence stores."""

from __future__ import annotations

from xshathra.model import ChannelRef


def channel_ident(ref: ChannelRef) -> str:
    """The app id is length-prefixed, so ("a:b", "c") and ("a", "b:c") can never meet; the
    name comes last and needs no escaping."""
    return f"{len(ref.app_id)}:{ref.app_id}:{ref.name}"
