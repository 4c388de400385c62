"""Presence: who is subscribed to a channel, across every node.

Entries belong to a client id; a store backed by a shared server must expire the entries of a
node that died (the node refreshes its own periodically).
"""

from __future__ import annotations

from typing import Protocol

from xshathra.model import ChannelRef, ClientInfoData, PresenceStats


class PresenceStore(Protocol):
    async def add_presence(self, ref: ChannelRef, info: ClientInfoData) -> None: ...

    async def remove_presence(self, ref: ChannelRef, client_id: str) -> None: ...

    async def presence(self, ref: ChannelRef) -> dict[str, ClientInfoData]: ...

    async def presence_stats(self, ref: ChannelRef) -> PresenceStats:
        """The number of clients present and of distinct users among them."""

    async def close(self) -> None: ...
