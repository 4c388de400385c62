"""The hub: this node's registry of connections and subscriptions, and the fan-out.

Fan-out encodes each publication once per (codec, framing) pair present on this node (one, when
every client speaks JSON over WebSocket) and hands the same frame to every local subscriber's
writer of that pair; it never awaits and never parses publication data. Subscriptions still
being set up ("pending": history being read for recovery) get publications buffered instead, so
nothing published meanwhile is lost or sent before the subscribe reply.

Subscribers with a channel feature (a fossil delta, a tags filter) are kept apart from that
fast path, per channel: a publication's delta is computed once per channel and encoded once
per (codec, framing) pair, and each distinct filter is evaluated once per publication.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from xshathra.engine.writer import OutgoingFrame, Writer
from xshathra.model import AppId, BrokerPublication, ChannelRef, ClientInfoData
from xshathra.protocol import messages as m
from xshathra.protocol.codec import Codec
from xshathra.protocol.delta import carried, fossil_delta
from xshathra.protocol.filters import matches

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


def delta_publication_message(
    pub: BrokerPublication, codec: Codec, delta: bytes | None = None
) -> m.Publication | None:
    """The publication as a subscription with delta compression gets it: its full data
    (`delta` None), or `delta` as a fossil delta; None when the codec cannot carry it."""
    data = carried(codec.name, pub.data if delta is None else delta)
    if data is None:
        return None
    return m.Publication(
        data=msgspec.Raw(data),
        offset=pub.offset,
        tags=pub.tags or None,
        info=client_info_message(pub.info) if pub.info is not None else None,
        delta=delta is not None,
    )


class SubscriberFeatures:
    """What sets a subscription apart from the fast path: a fossil delta, a tags filter."""

    __slots__ = ("delta", "filter", "filter_key")

    def __init__(
        self, *, delta: bool = False, tags_filter: m.FilterNode | None = None, key: bytes = b""
    ) -> None:
        self.delta = delta
        self.filter = tags_filter
        self.filter_key = key

    @property
    def special(self) -> bool:
        return self.delta or self.filter is not None


class _FeatureChannel:
    """One channel's subscribers with features on this node."""

    __slots__ = ("delta", "filtered", "previous")

    def __init__(self) -> None:
        # The data of the channel's last publication, the base of the next delta; kept only
        # while the channel has delta subscribers here.
        self.previous: bytes | None = None
        # Delta subscribers -> whether they hold the base (got a publication since subscribing).
        self.delta: dict[ClientSession, bool] = {}
        # Filter key -> (filter, its subscribers).
        self.filtered: dict[bytes, tuple[m.FilterNode, dict[ClientSession, None]]] = {}

    def __len__(self) -> int:
        return len(self.delta) + sum(len(subs) for _, subs in self.filtered.values())

    def sessions(self) -> list[ClientSession]:
        out = list(self.delta)
        for _, subs in self.filtered.values():
            out.extend(subs)
        return out


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
        # Subscribers with a delta or a tags filter, per channel (see _FeatureChannel), and
        # the features of pending subscriptions that have any.
        self._featured: dict[ChannelRef, _FeatureChannel] = {}
        self._pending_features: dict[tuple[ChannelRef, ClientSession], SubscriberFeatures] = {}
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

    def add_pending(
        self, ref: ChannelRef, session: ClientSession, features: SubscriberFeatures | None = None
    ) -> bool:
        """Start buffering for a subscription being set up. True if the channel was empty here."""
        was_empty = not self.has_channel(ref)
        self._pending.setdefault(ref, {})[session] = []
        if features is not None and features.special:
            self._pending_features[(ref, session)] = features
        return was_empty

    def promote(self, ref: ChannelRef, session: ClientSession) -> list[BufferedPublication]:
        """Make a pending subscription live; returns what was published meanwhile."""
        pending = self._pending.get(ref)
        buffered: list[BufferedPublication] = []
        if pending is not None:
            buffered = pending.pop(session, [])
            if not pending:
                del self._pending[ref]
        features = self._pending_features.pop((ref, session), None)
        if features is not None:
            channel = self._featured.get(ref)
            if channel is None:
                channel = self._featured[ref] = _FeatureChannel()
            if features.delta:
                channel.delta[session] = False  # its first publication goes out in full
            else:
                assert features.filter is not None
                group = channel.filtered.get(features.filter_key)
                if group is None:
                    group = channel.filtered[features.filter_key] = (features.filter, {})
                group[1][session] = None
            return buffered
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
        self._pending_features.pop((ref, session), None)
        channel = self._featured.get(ref)
        if channel is not None:
            channel.delta.pop(session, None)
            if not channel.delta:
                channel.previous = None
            for fkey, (_, members) in list(channel.filtered.items()):
                if session in members:
                    del members[session]
                    if not members:
                        del channel.filtered[fkey]
            if not channel.delta and not channel.filtered:
                del self._featured[ref]
        return not self.has_channel(ref)

    def subscribers(self, ref: ChannelRef) -> list[ClientSession]:
        """Live and pending subscribers of a channel on this node."""
        live = [s for group in self._live.values() for s in group.get(ref, ())]
        featured = self._featured.get(ref)
        return [
            *live,
            *(featured.sessions() if featured is not None else ()),
            *self._pending.get(ref, ()),
        ]

    def subscriber_count(self, ref: ChannelRef) -> int:
        live = sum(len(group.get(ref, ())) for group in self._live.values())
        featured = self._featured.get(ref)
        live += len(featured) if featured is not None else 0
        return live + len(self._pending.get(ref, ()))

    def channels(self, app_id: AppId) -> dict[str, int]:
        """Channel name -> number of local subscribers, for one app."""
        names: dict[str, int] = {}
        refs = (*(r for group in self._live.values() for r in group), *self._pending)
        for ref in (*refs, *self._featured):
            if ref.app_id == app_id:
                names[ref.name] = self.subscriber_count(ref)
        return names

    def app_stats(self) -> dict[str, tuple[int, int, int, int]]:
        """Per app with connections or channels here: (clients, users, channels,
        subscriptions), in one pass over the channels (a node's heartbeat)."""
        subs: dict[ChannelRef, int] = {}
        for group in self._live.values():
            for ref, members in group.items():
                subs[ref] = subs.get(ref, 0) + len(members)
        for ref, pending in self._pending.items():
            subs[ref] = subs.get(ref, 0) + len(pending)
        channels: dict[str, list[int]] = {}
        for ref, count in subs.items():
            entry = channels.setdefault(ref.app_id, [0, 0])
            entry[0] += 1
            entry[1] += count
        result: dict[str, tuple[int, int, int, int]] = {}
        for app_id in {*self._connections, *channels}:
            entry = channels.get(app_id, [0, 0])
            result[app_id] = (
                self.connection_count(AppId(app_id)),
                self.user_count(AppId(app_id)),
                entry[0],
                entry[1],
            )
        return result

    def subscription_total(self) -> int:
        total = sum(len(s) for group in self._live.values() for s in group.values())
        return total + sum(len(c) for c in self._featured.values())

    def has_channel(self, ref: ChannelRef) -> bool:
        return (
            ref in self._pending
            or ref in self._featured
            or any(ref in group for group in self._live.values())
        )

    # --- fan-out -----------------------------------------------------------------------------

    def broadcast_publication(self, ref: ChannelRef, pub: BrokerPublication) -> int:
        """Queue a publication to every local subscriber; returns how many it reached."""
        pending = self._pending.get(ref)
        featured = self._featured.get(ref)
        reply: m.Reply | None = None
        frames: dict[Encoding, OutgoingFrame] | None = None
        keep = pending is not None or featured is not None
        reached = 0
        # One pass per (codec, framing) group: one, unless clients speak several formats.
        for key, live in self._live.items():
            subs = live.get(ref)
            if subs is None:
                continue
            if reply is None:
                reply = m.Reply(push=m.Push(channel=ref.name, pub=publication_message(pub)))
            # Encoded once for every subscriber of the group: the same bytes object goes to each
            # writer.
            frame = OutgoingFrame(key[0].encode_reply(reply))
            skipped = self._skipped_writer(ref, pub, key[0], subs)
            if skipped is None:
                for writer in subs.values():
                    writer.enqueue(frame)
                reached += len(subs)
            else:
                for writer in subs.values():
                    if writer is not skipped:
                        writer.enqueue(frame)
                reached += len(subs) - 1
            if keep:
                if frames is None:
                    frames = {}
                frames[key] = frame
        if not keep:
            return reached
        if frames is None:
            frames = {}
        if featured is not None:
            reached += self._broadcast_featured(ref, pub, featured, frames)
        if pending:
            # Few and short-lived (a subscribe reading history): a lookup each is fine here.
            delta_frames: dict[Encoding, OutgoingFrame | None] = {}
            for session, buffer in pending.items():
                key = encoding_of(session.transport)
                features = self._pending_features.get((ref, session))
                if (
                    features is not None
                    and features.filter is not None
                    and not matches(features.filter, pub.tags)
                ):
                    continue
                if features is not None and features.delta:
                    encoded = self._full_delta_frame(ref, pub, key, delta_frames)
                else:
                    encoded = self._plain_frame(ref, pub, key, frames)
                if encoded is not None:
                    buffer.append((pub.offset, encoded))
            reached += len(pending)
        return reached

    @staticmethod
    def _plain_frame(
        ref: ChannelRef,
        pub: BrokerPublication,
        key: Encoding,
        frames: dict[Encoding, OutgoingFrame],
    ) -> OutgoingFrame:
        frame = frames.get(key)
        if frame is None:
            reply = m.Reply(push=m.Push(channel=ref.name, pub=publication_message(pub)))
            frame = frames[key] = OutgoingFrame(key[0].encode_reply(reply))
        return frame

    @staticmethod
    def _full_delta_frame(
        ref: ChannelRef,
        pub: BrokerPublication,
        key: Encoding,
        frames: dict[Encoding, OutgoingFrame | None],
    ) -> OutgoingFrame | None:
        """The publication's full data as a delta subscription of this encoding gets it."""
        if key in frames:
            return frames[key]
        message = delta_publication_message(pub, key[0])
        frame = None
        if message is not None:
            reply = m.Reply(push=m.Push(channel=ref.name, pub=message))
            frame = OutgoingFrame(key[0].encode_reply(reply))
        frames[key] = frame
        return frame

    def _broadcast_featured(
        self,
        ref: ChannelRef,
        pub: BrokerPublication,
        channel: _FeatureChannel,
        frames: dict[Encoding, OutgoingFrame],
    ) -> int:
        """Deliver to the channel's subscribers with a filter or a delta."""
        reached = 0
        for node, subs in channel.filtered.values():
            # One evaluation for every subscriber with this filter.
            if not matches(node, pub.tags):
                continue
            for session in subs:
                session.writer.enqueue(
                    self._plain_frame(ref, pub, encoding_of(session.transport), frames)
                )
            reached += len(subs)
        if channel.delta:
            previous, channel.previous = channel.previous, pub.data
            # The delta is computed once for the channel (when a subscriber holds the base),
            # then encoded once per encoding; one no smaller than the data is not used.
            patch: bytes | None = None
            if pub.delta and previous is not None and any(channel.delta.values()):
                patch = fossil_delta(previous, pub.data)
                if len(patch) >= len(pub.data):
                    patch = None
            full: dict[Encoding, OutgoingFrame | None] = {}
            deltas: dict[Encoding, OutgoingFrame | None] = {}
            for session, has_base in channel.delta.items():
                key = encoding_of(session.transport)
                frame: OutgoingFrame | None = None
                if has_base and patch is not None:
                    if key not in deltas:
                        message = delta_publication_message(pub, key[0], patch)
                        deltas[key] = (
                            None
                            if message is None
                            else OutgoingFrame(
                                key[0].encode_reply(
                                    m.Reply(push=m.Push(channel=ref.name, pub=message))
                                )
                            )
                        )
                    frame = deltas[key]
                if frame is None:
                    frame = self._full_delta_frame(ref, pub, key, full)
                    if frame is None:
                        continue
                    if not has_base:
                        channel.delta[session] = True
                session.writer.enqueue(frame)
            reached += len(channel.delta)
        return reached

    def _skipped_writer(
        self,
        ref: ChannelRef,
        pub: BrokerPublication,
        codec: Codec,
        subs: dict[ClientSession, Writer],
    ) -> Writer | None:
        """The publisher's own writer, for a codec whose protocol never echoes a publication to
        the connection that sent it (Pusher: client events, and `socket_id` on the HTTP API).
        One attribute read per group and publication; nothing per subscriber."""
        if pub.info is None or not pub.info.client or not getattr(codec, "skip_publisher", False):
            return None
        session = self._connections.get(ref.app_id, {}).get(pub.info.client)
        return subs.get(session) if session is not None else None

    def broadcast_join_leave(self, ref: ChannelRef, info: ClientInfoData, *, join: bool) -> None:
        message = client_info_message(info)
        reply = m.Reply(
            push=m.Push(channel=ref.name, join=m.Join(info=message))
            if join
            else m.Push(channel=ref.name, leave=m.Leave(info=message))
        )
        frames: dict[Encoding, OutgoingFrame] = {}
        for key, live in self._live.items():
            subs = live.get(ref)
            if not subs:
                continue
            frame = frames[key] = OutgoingFrame(key[0].encode_reply(reply))
            for session in subs:
                if session.wants_join_leave(ref.name, info, join):
                    session.writer.enqueue(frame)
        featured = self._featured.get(ref)
        if featured is not None:
            # Subscribers with a delta or a filter get joins and leaves like any other.
            for session in featured.sessions():
                if session.wants_join_leave(ref.name, info, join):
                    key = encoding_of(session.transport)
                    shared = frames.get(key)
                    if shared is None:
                        shared = frames[key] = OutgoingFrame(key[0].encode_reply(reply))
                    session.writer.enqueue(shared)

    def ping_frame(self, sink: FrameSink) -> OutgoingFrame:
        """The server ping for a connection, the same frame for every connection of its group,
        so that it is framed once per sweep and group, not once per connection."""
        key = encoding_of(sink)
        frame = self._pings.get(key)
        if frame is None:
            frame = self._pings[key] = OutgoingFrame(key[0].ping)
        return frame
