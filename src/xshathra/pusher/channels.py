"""What the Pusher HTTP API does to an app's channels, over the engine's node: trigger events
(publications with `tags.event`, so Centrifuge subscribers get them too), read channels,
their subscriber and user counts and presence users, and end a user's connections.

It knows Pusher's rules (limits, channel kinds, the `socket_id` shape) but no HTTP: the
`api.pusher` routes parse and authenticate, then call this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec

from xshathra.engine.channels import namespace_of
from xshathra.engine.control import Disconnect
from xshathra.engine.errors import ClientError
from xshathra.engine.node import Node
from xshathra.model import ChannelRef, ClientInfoData
from xshathra.protocol import pusher as p
from xshathra.tenancy.apps import Application, NamespaceOptions

SOCKET_ID = re.compile(r"\A\d+\.\d+\Z")


def _listed(name: str, prefix: str) -> bool:
    """Pusher lists no user's own channel (`#server-to-user-`): it is its connections'."""
    return name.startswith(prefix) and not name.startswith(p.SERVER_TO_USER_PREFIX)


def _cached(options: NamespaceOptions, channel: str) -> NamespaceOptions:
    """A cache channel keeps its last event for new subscribers: as history of at least one,
    for Pusher's 30 minutes unless the namespace keeps history longer. Only events of the HTTP
    API are cached, as in Pusher (client events are not)."""
    if not p.is_cache(channel):
        return options
    return msgspec.structs.replace(
        options,
        history_size=max(1, options.history_size),
        history_ttl=max(p.CACHE_TTL, options.history_ttl),
    )


class PusherRequestError(Exception):
    """A request Pusher's rules refuse: its HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class EventRequest:
    name: str
    data: str
    channels: list[str]
    socket_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelState:
    occupied: bool
    subscription_count: int
    user_count: int | None  # presence channels only


class PusherChannels:
    def __init__(self, node: Node) -> None:
        self._node = node

    def _ref(self, app: Application, channel: str) -> ChannelRef:
        if not channel or len(channel) > p.MAX_CHANNEL_NAME:
            raise PusherRequestError(400, f"Invalid channel name: {channel[:64]!r}")
        try:
            return self._node.channel_ref(app.app_id, channel)
        except ClientError:
            raise PusherRequestError(400, f"Invalid channel name: {channel[:64]!r}") from None

    def check_event(self, app: Application, event: EventRequest) -> list[ChannelRef]:
        """Refuse an event before anything is published (a batch is refused whole)."""
        if not event.name or len(event.name) > p.MAX_EVENT_NAME:
            raise PusherRequestError(400, f"Event name must be 1 to {p.MAX_EVENT_NAME} characters")
        if not event.channels:
            raise PusherRequestError(400, "No channels given")
        if len(event.channels) > p.MAX_CHANNELS_PER_EVENT:
            raise PusherRequestError(400, f"At most {p.MAX_CHANNELS_PER_EVENT} channels per event")
        if event.socket_id is not None and not SOCKET_ID.match(event.socket_id):
            raise PusherRequestError(400, "Invalid socket_id")
        if len(event.data.encode()) > self._node.options.max_message_size:
            raise PusherRequestError(
                413, f"Event data too large (at most {self._node.options.max_message_size} bytes)"
            )
        return [self._ref(app, channel) for channel in event.channels]

    async def trigger(self, app: Application, event: EventRequest, refs: list[ChannelRef]) -> None:
        """Publish the event on each channel. The excluded `socket_id` travels as the
        publication's client, which Pusher subscribers never get echoed (engine.hub)."""
        data = p.publication_to_data(event.data)
        info = ClientInfoData("", event.socket_id) if event.socket_id else None
        for ref in refs:
            try:
                await self._node.publish(
                    ref,
                    data,
                    _cached(app.namespace_options(namespace_of(ref.name)), ref.name),
                    info=info,
                    tags={"event": event.name},
                )
            except ClientError as exc:
                raise PusherRequestError(400, exc.message) from None

    async def channel(self, app: Application, name: str) -> ChannelState:
        ref = self._ref(app, name)
        count = await self._node.subscriber_count(ref)
        users = None
        if p.is_presence(name):
            users = (await self._node.presence_stats(ref))[1]
        return ChannelState(occupied=count > 0, subscription_count=count, user_count=users)

    async def channels(self, app: Application, prefix: str) -> dict[str, ChannelState]:
        """Occupied channels starting with `prefix` on any live node of the cluster: every node
        answers the control-bus query the server API's `channels` uses (engine.cluster), and
        the subscriber counts are their sum. Presence channels add their distinct users."""
        found = await self._node.cluster_channels(app.app_id)
        states: dict[str, ChannelState] = {}
        for name in sorted(n for n, count in found.items() if count > 0 and _listed(n, prefix)):
            users = None
            if p.is_presence(name):
                users = (await self._node.presence_stats(self._ref(app, name)))[1]
            states[name] = ChannelState(
                occupied=True, subscription_count=found[name], user_count=users
            )
        return states

    async def users(self, app: Application, name: str) -> list[str]:
        if not p.is_presence(name):
            raise PusherRequestError(400, "Users are known of presence channels only")
        present = await self._node.presence(self._ref(app, name))
        return sorted({info.user for info in present.values() if info.user})

    async def terminate(self, app: Application, user_id: str) -> None:
        """Close every connection of the user, on every node, with Pusher's 4009."""
        if not user_id:
            raise PusherRequestError(400, "A user id is required")
        await self._node.send_control(
            Disconnect(
                app_id=app.app_id,
                user=user_id,
                code=int(p.PusherCode.UNAUTHORIZED),
                reason="Terminated by the app",
            )
        )
