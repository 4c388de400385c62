"""The hub: this node's registry of connections and subscriptions, and the fan-out.

Fan-out encodes each publication once per (codec, framing) pair present on this node (one, when
every client speaks JSON over WebSocket) and hands the same frame to every local subscriber's
writer of that pair; it never awaits and never parses publication data. Subscriptions still
being set up ("pending": history being read for recovery) get publications buffered instead, so
nothing published meanwhile is lost or sent before the subscribe reply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from xshathra.engine.writer import OutgoingFrame, Writer
from xshathra.model import AppId, BrokerPublication, ChannelRef, ClientInfoData
from xshathra.protocol import messages as m
from xshathra.protocol.codec import Codec

if TYPE_CHECKING:
    from xshathra.engine.client import ClientSession
    from xshathra.engine.writer import FrameSink

BufferedPublication = tuple[int, OutgoingFrame]  # (offset, frame)
# Subscribers that can be sent the very same frame: one codec, one framing of its output.
Encoding = tuple[Codec, str]


def encoding_of(sink: FrameSink) -> Encoding:
    return (sink.codec, sink.framing)


def client_info_message(info: ClientInfoData) -> m.ClientInfo:
    return m.ClientInfo(
        user=info.user,
        client=info.client,
        conn_info=msgspec.Raw(info.conn_info) if info.conn_info else m.EMPTY,
        chan_info=msgspec.Raw(info.chan_info) if info.chan_info else m.EMPTY,
    )


def publication_message(pub: BrokerPublication) -> m.Publication:
    return m.Publication(
        data=msgspec.Raw(pub.data),
        offset=pub.offset,
        tags=pub.tags or None,
        info=client_info_message(pub.info) if pub.info is not None else None,
    )


class Hub:
    def __init__(self) -> None:
        # Live subscribers of each channel, each with its writer: the fan-out loop then reads
        # no attribute per delivery. Grouped first by (codec, framing), not per channel: fan-out
        # then encodes once per group with no lookup per subscriber, and a node with one group
        # (the usual case) pays one more dict per node, not one per channel.
        self._live: dict[Encoding, dict[ChannelRef, dict[ClientSession, Writer]]] = {}
        # Each group's ping frame, encoded and framed once for all its connections.
        self._pings: dict[Encoding, OutgoingFrame] = {}
        self._pending: dict[ChannelRef, dict[ClientSession, list[BufferedPublication]]] = {}
        self._connections: dict[AppId, dict[str, ClientSession]] = {}
        # Per app, user -> their one connection, or a dict of them once they have several:
        # most users hold one connection, and a dict each would cost ~250 bytes per user.
        self._users: dict[AppId, dict[str, ClientSession | dict[ClientSession, None]]] = {}

    # --- connections -----------------------------------------------------------------------

    def add_connection(self, session: ClientSession) -> None:
        self._connections.setdefault(session.app_id, {})[session.client_id] = session
        users = self._users.setdefault(session.app_id, {})
        held = users.get(session.user)
        if held is None:
            users[session.user] = session
        elif isinstance(held, dict):
            held[session] = None
        elif held is not session:
            users[session.user] = {held: None, session: None}

    def remove_connection(self, session: ClientSession) -> None:
        conns = self._connections.get(session.app_id)
        if conns is not None and conns.pop(session.client_id, None) is not None and not conns:
            del self._connections[session.app_id]
        users = self._users.get(session.app_id)
        if users is None:
            return
        held = users.get(session.user)
        if held is session:
            del users[session.user]
        elif isinstance(held, dict):
            held.pop(session, None)
            if len(held) == 1:
                users[session.user] = next(iter(held))
        if not users:
            del self._users[session.app_id]

    def app_ids(self) -> list[str]:
        return list(self._connections)

    def connection_count(self, app_id: AppId) -> int:
        return len(self._connections.get(app_id, ()))

    def user_count(self, app_id: AppId) -> int:
        users = self._users.get(app_id, {})
        return len(users) - ("" in users)  # anonymous connections are no user

    def user_ids(self, app_id: AppId) -> set[str]:
        return {u for u in self._users.get(app_id, ()) if u}

    def app_connections(self, app_id: AppId) -> list[ClientSession]:
        return list(self._connections.get(app_id, {}).values())

    def all_connections(self) -> list[ClientSession]:
        return [s for conns in self._connections.values() for s in conns.values()]

    def user_connections(self, app_id: AppId, user: str) -> list[ClientSession]:
        held = self._users.get(app_id, {}).get(user)
        if held is None:
            return []
        return list(held) if isinstance(held, dict) else [held]

    def connection(self, app_id: AppId, client_id: str) -> ClientSession | None:
        return self._connections.get(app_id, {}).get(client_id)

    def total_connections(self) -> int:
        return sum(len(c) for c in self._connections.values())

    # --- subscriptions ---------------------------------------------------------------------

    def add_pending(self, ref: ChannelRef, session: ClientSession) -> bool:
        """Start buffering for a subscription being set up. True if the channel was empty here."""
        was_empty = not self.has_channel(ref)
        self._pending.setdefault(ref, {})[session] = []
        return was_empty

    def promote(self, ref: ChannelRef, session: ClientSession) -> list[BufferedPublication]:
        """Make a pending subscription live; returns what was published meanwhile."""
        pending = self._pending.get(ref)
        buffered: list[BufferedPublication] = []
        if pending is not None:
            buffered = pending.pop(session, [])
            if not pending:
                del self._pending[ref]
        live = self._live.setdefault(encoding_of(session.transport), {})
        live.setdefault(ref, {})[session] = session.writer
        return buffered

    def remove_subscriber(self, ref: ChannelRef, session: ClientSession) -> bool:
        """Remove a live or pending subscription. True if the channel is now empty here."""
        key = encoding_of(session.transport)
        live = self._live.get(key)
        if live is not None and (subs := live.get(ref)) is not None:
            subs.pop(session, None)
            if not subs:
                del live[ref]
                if not live:
                    del self._live[key]
        pending = self._pending.get(ref)
        if pending is not None:
            pending.pop(session, None)
            if not pending:
                del self._pending[ref]
        return not self.has_channel(ref)

    def subscribers(self, ref: ChannelRef) -> list[ClientSession]:
        """Live and pending subscribers of a channel on this node."""
        live = [s for group in self._live.values() for s in group.get(ref, ())]
        return [*live, *self._pending.get(ref, ())]

    def subscriber_count(self, ref: ChannelRef) -> int:
        live = sum(len(group.get(ref, ())) for group in self._live.values())
        return live + len(self._pending.get(ref, ()))

    def channels(self, app_id: AppId) -> dict[str, int]:
        """Channel name -> number of local subscribers, for one app."""
        names: dict[str, int] = {}
        for ref in (*(r for group in self._live.values() for r in group), *self._pending):
            if ref.app_id == app_id:
                names[ref.name] = self.subscriber_count(ref)
        return names

    def subscription_total(self) -> int:
        return sum(len(s) for group in self._live.values() for s in group.values())

    def has_channel(self, ref: ChannelRef) -> bool:
        return ref in self._pending or any(ref in group for group in self._live.values())

    # --- fan-out -----------------------------------------------------------------------------

    def broadcast_publication(self, ref: ChannelRef, pub: BrokerPublication) -> int:
        """Queue a publication to every local subscriber; returns how many it reached."""
        pending = self._pending.get(ref)
        reply: m.Reply | None = None
        frames: dict[Encoding, OutgoingFrame] | None = None
        # Encoded once per codec: groups that differ in framing only (JSON over WebSocket and
        # over SSE) share the bytes, each framing them its own way.
        encoded: dict[Codec, bytes] = {}
        reached = 0
        # One pass per (codec, framing) group: one, unless clients speak several formats.
        for key, live in self._live.items():
            subs = live.get(ref)
            if subs is None:
                continue
            if reply is None:
                reply = m.Reply(push=m.Push(channel=ref.name, pub=publication_message(pub)))
            # One frame for every subscriber of the group: the same object goes to each writer.
            payload = encoded.get(key[0])
            if payload is None:
                payload = encoded[key[0]] = key[0].encode_reply(reply)
            frame = OutgoingFrame(payload)
            for writer in subs.values():
                writer.enqueue(frame)
            reached += len(subs)
            if pending:
                if frames is None:
                    frames = {}
                frames[key] = frame
        if pending:
            # Few and short-lived (a subscribe reading history): a lookup each is fine here.
            if reply is None:
                reply = m.Reply(push=m.Push(channel=ref.name, pub=publication_message(pub)))
            if frames is None:
                frames = {}
            for session, buffer in pending.items():
                key = encoding_of(session.transport)
                buffered = frames.get(key)
                if buffered is None:
                    payload = encoded.get(key[0])
                    if payload is None:
                        payload = encoded[key[0]] = key[0].encode_reply(reply)
                    buffered = frames[key] = OutgoingFrame(payload)
                buffer.append((pub.offset, buffered))
            reached += len(pending)
        return reached

    def broadcast_join_leave(self, ref: ChannelRef, info: ClientInfoData, *, join: bool) -> None:
        reply: m.Reply | None = None
        encoded: dict[Codec, bytes] = {}
        for key, live in self._live.items():
            subs = live.get(ref)
            if not subs:
                continue
            if reply is None:
                message = client_info_message(info)
                push = (
                    m.Push(channel=ref.name, join=m.Join(info=message))
                    if join
                    else m.Push(channel=ref.name, leave=m.Leave(info=message))
                )
                reply = m.Reply(push=push)
            payload = encoded.get(key[0])
            if payload is None:
                payload = encoded[key[0]] = key[0].encode_reply(reply)
            frame = OutgoingFrame(payload)
            for session in subs:
                if session.wants_join_leave(ref.name):
                    session.writer.enqueue(frame)

    def ping_frame(self, sink: FrameSink) -> OutgoingFrame:
        """The server ping for a connection, the same frame for every connection of its group,
        so that it is framed once per sweep and group, not once per connection."""
        key = encoding_of(sink)
        frame = self._pings.get(key)
        if frame is None:
            frame = self._pings[key] = OutgoingFrame(key[0].ping)
        return frame
