"""In-process presence for a single node."""

from __future__ import annotations

from xshathra.model import ChannelRef, ClientInfoData, PresenceStats
from xshathra.presence import PresenceStore


class MemoryPresenceStore(PresenceStore):
    def __init__(self) -> None:
        self._channels: dict[ChannelRef, dict[str, ClientInfoData]] = {}

    async def add_presence(self, ref: ChannelRef, info: ClientInfoData) -> None:
        self._channels.setdefault(ref, {})[info.client] = info

    async def remove_presence(self, ref: ChannelRef, client_id: str) -> None:
        clients = self._channels.get(ref)
        if clients is not None:
            clients.pop(client_id, None)
            if not clients:
                del self._channels[ref]

    async def presence(self, ref: ChannelRef) -> dict[str, ClientInfoData]:
        return dict(self._channels.get(ref, {}))

    async def presence_stats(self, ref: ChannelRef) -> PresenceStats:
        clients = self._channels.get(ref, {})
        return PresenceStats(len(clients), len({info.user for info in clients.values()}))

    async def close(self) -> None:
        self._channels.clear()
