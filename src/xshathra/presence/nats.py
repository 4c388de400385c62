"""Presence in NATS JetStream, shared by every node: one stream message per (channel, client),
the stream keeping only the newest per subject and dropping any older than `ttl` seconds, so
the clients of a node that died vanish by themselves; a live node re-adds its clients'
presence well within `ttl`. Only this module turns a `ChannelRef` into presence subjects.
"""

from __future__ import annotations

from nats.js import api

from xshathra.links.nats import (
    NatsLink,
    StreamUser,
    channel_token,
    stream_name,
    text_token,
)
from xshathra.links.packing import decode_info, encode_info, pack_info, unpack_info
from xshathra.model import ChannelRef, ClientInfoData, PresenceStats
from xshathra.presence import PresenceStore


class NatsPresenceStore(PresenceStore):
    def __init__(self, link: NatsLink, *, prefix: str = "xs", ttl: int = 60) -> None:
        if ttl < 1:
            raise ValueError("presence ttl must be at least 1 second")
        self._link = link
        self._prefix = prefix
        self.ttl = ttl
        self._stream = stream_name(prefix, "presence")
        self._user = StreamUser(
            link,
            api.StreamConfig(
                name=self._stream,
                subjects=[f"{prefix}.pr.>"],
                storage=api.StorageType.MEMORY,
                max_msgs_per_subject=1,
                max_age=ttl,
            ),
        )

    def _subject(self, ref: ChannelRef, client_id: str) -> str:
        return f"{self._prefix}.pr.{channel_token(ref)}.{text_token(client_id)}"

    async def add_presence(self, ref: ChannelRef, info: ClientInfoData) -> None:
        _, js = await self._user.ready()
        encoded = encode_info(pack_info(info))
        await js.publish(self._subject(ref, info.client), encoded)

    async def remove_presence(self, ref: ChannelRef, client_id: str) -> None:
        _, js = await self._user.ready()
        await js.purge_stream(self._stream, subject=self._subject(ref, client_id))

    async def presence(self, ref: ChannelRef) -> dict[str, ClientInfoData]:
        await self._user.ready()
        msgs = await self._link.snapshot(
            self._stream, f"{self._prefix}.pr.{channel_token(ref)}.*", last_per_subject=True
        )
        entries = (unpack_info(decode_info(m.data)) for m in msgs if m.data)
        return {info.client: info for info in entries}

    async def presence_stats(self, ref: ChannelRef) -> PresenceStats:
        clients = await self.presence(ref)
        return PresenceStats(len(clients), len({info.user for info in clients.values()}))

    async def close(self) -> None:
        await self._user.close()
