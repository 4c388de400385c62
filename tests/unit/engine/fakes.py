"""What the engine tests drive it with: a transport that records what a client would receive,
a client that speaks the JSON protocol over it, and a broker whose history read can be held.

Nothing here replaces engine internals: sessions, hub, writer and node are the real ones.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any

from xshathra.brokers.memory import MemoryBroker
from xshathra.engine.client import ClientSession
from xshathra.engine.node import Node
from xshathra.engine.writer import OutgoingFrame
from xshathra.model import (
    ChannelRef,
    ClientInfoData,
    HistoryOptions,
    HistoryResult,
    SubscriberCounts,
)
from xshathra.presence.memory import MemoryPresenceStore
from xshathra.protocol.codec import Codec
from xshathra.protocol.json_codec import JSON_CODEC
from xshathra.tenancy.apps import Application
from xshathra.tenancy.tokens import TokenService

Json = dict[str, Any]
DEADLINE = 3.0
# What a WebSocket text frame header would be; the fake's "framing" so that reuse is visible.
FRAME_HEADER = b"\x81"


class FakeTransport:
    """Records every frame as a client would receive it, and the close code and reason.

    Frames are built as the real transport builds them: one message alone reuses (and fills)
    the frame's cached `wire` bytes; several messages in one write become one newline-joined
    frame.
    """

    codec: Codec = JSON_CODEC
    framing: str = "fake"
    unidirectional = False
    emulation = False

    def __init__(
        self,
        origin: str | None = None,
        remote_ip: str = "127.0.0.1",
        query: str = "",
        request_headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.remote_ip = remote_ip
        self.origin = origin
        self.query = query
        self.request_headers: Sequence[tuple[str, str]] | None = request_headers
        self.frames: list[bytes] = []  # one entry per send_frame call: one WebSocket message
        self.messages: list[Json] = []  # every reply/push, in the order received
        self.closed: tuple[int, str] | None = None
        self.buffered = 0
        self.changed = asyncio.Event()

    def send_frame(self, frame: OutgoingFrame) -> int:
        assert self.closed is None, "frame written after the close frame"
        if frame.wire is None:
            frame.wire = FRAME_HEADER + frame.payload
        wire = frame.wire
        self.frames.append(wire)
        for line in wire[len(FRAME_HEADER) :].split(b"\n"):
            self.messages.append(json.loads(line))
        self.changed.set()
        return self.buffered

    def close(self, code: int, reason: str) -> None:
        assert self.closed is None, "closed twice"
        self.closed = (code, reason)
        self.changed.set()

    # --- waiting, always under a deadline ----------------------------------------------------

    async def until(self, condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
        async def loop() -> None:
            while not condition():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def wait_for(self, predicate: Callable[[Json], bool], timeout: float = DEADLINE) -> Json:
        found: list[Json] = []

        def seen() -> bool:
            found[:] = [m for m in self.messages if predicate(m)]
            return bool(found)

        await self.until(seen, timeout)
        return found[0]

    async def wait_closed(self, timeout: float = DEADLINE) -> tuple[int, str]:
        await self.until(lambda: self.closed is not None, timeout)
        assert self.closed is not None
        return self.closed

    # --- reading what arrived ------------------------------------------------------------------

    def pushes(self, kind: str, channel: str | None = None) -> list[Json]:
        """Bodies of the pushes of one kind (`pub`, `join`, …), optionally for one channel."""
        return [
            m["push"][kind]
            for m in self.messages
            if kind in m.get("push", {})
            and (channel is None or m["push"].get("channel") == channel)
        ]

    def index_of(self, predicate: Callable[[Json], bool]) -> int:
        return next(i for i, m in enumerate(self.messages) if predicate(m))


class Client:
    """A client speaking the JSON protocol to one session through a fake transport."""

    def __init__(self, session: ClientSession, transport: FakeTransport) -> None:
        self.session = session
        self.transport = transport
        self._ids = itertools.count(1)

    def send(self, *commands: Json) -> None:
        """One frame carrying these commands, newline-delimited."""
        self.session.on_message(b"\n".join(json.dumps(c).encode() for c in commands))

    def next_id(self) -> int:
        return next(self._ids)

    async def call(self, method: str, params: Json | None = None) -> Json:
        """Send one command and return its reply (the whole reply, `error` or result)."""
        cid = self.next_id()
        self.send({"id": cid, method: params or {}})
        return await self.transport.wait_for(lambda m: m.get("id") == cid)

    async def result(self, method: str, params: Json | None = None) -> Json:
        reply = await self.call(method, params)
        assert "error" not in reply, reply
        result: Json = reply.get(method, {})
        return result

    async def error(self, method: str, params: Json | None = None) -> int:
        reply = await self.call(method, params)
        assert "error" in reply, reply
        return int(reply["error"]["code"])

    async def subscribe(self, channel: str, **params: Any) -> Json:
        return await self.result("subscribe", {"channel": channel, **params})


class Harness:
    """A started node with one app, and ways to open clients on it."""

    def __init__(self, node: Node, app: Application, tokens: TokenService) -> None:
        self.node, self.app, self.tokens = node, app, tokens

    def ref(self, channel: str, app: Application | None = None) -> ChannelRef:
        return ChannelRef((app or self.app).app_id, channel)

    def token(self, user: str = "u1", *, app: Application | None = None, **claims: Any) -> str:
        ttl = claims.pop("ttl", 600)
        return self.tokens.mint_connection_token(
            (app or self.app).app_id, user, ttl, **claims
        ).token

    def open(
        self,
        origin: str | None = None,
        query: str = "",
        request_headers: list[tuple[str, str]] | None = None,
    ) -> Client:
        transport = FakeTransport(origin=origin, query=query, request_headers=request_headers)
        return Client(ClientSession(self.node, transport), transport)

    async def connect_reply(
        self, token: str, *, origin: str | None = None, **params: Any
    ) -> tuple[Client, Json]:
        client = self.open(origin)
        cid = client.next_id()
        client.send({"id": cid, "connect": {"token": token, **params}})
        await client.transport.until(
            lambda: (
                client.transport.closed is not None
                or any(m.get("id") == cid for m in client.transport.messages)
            )
        )
        replies = [m for m in client.transport.messages if m.get("id") == cid]
        return client, (replies[0] if replies else {})

    async def connect(
        self, user: str = "u1", *, app: Application | None = None, **claims: Any
    ) -> Client:
        client, reply = await self.connect_reply(self.token(user, app=app, **claims))
        assert "connect" in reply, (reply, client.transport.closed)
        return client

    async def publish(self, channel: str, data: Any, app: Application | None = None) -> Any:
        """Publish as the server API does (history as the namespace says)."""
        from xshathra.engine.channels import namespace_of

        application = app or self.app
        options = application.namespace_options(namespace_of(channel))
        return await self.node.publish(
            self.ref(channel, application),
            json.dumps(data, separators=(",", ":")).encode(),
            options,
        )


class GatedBroker(MemoryBroker):
    """The memory broker, with a step that can be held open while a subscription is being set
    up: the history read (before or after it reads) or the subscriber count update."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None
        self.hold = "after-history"  # or "before-history", "subscriber-count"
        self.held = asyncio.Event()

    async def _pass(self, step: str) -> None:
        if self.gate is not None and self.hold == step:
            self.held.set()
            await self.gate.wait()

    async def history(self, ref: ChannelRef, opts: HistoryOptions) -> HistoryResult:
        await self._pass("before-history")
        result = await super().history(ref, opts)
        await self._pass("after-history")
        return result

    async def set_subscriber_count(self, ref: ChannelRef, count: int) -> SubscriberCounts:
        totals = await super().set_subscriber_count(ref, count)
        await self._pass("subscriber-count")
        return totals


class FlakyPresence(MemoryPresenceStore):
    """The memory presence store, failing its next `fail_adds` additions as a shared store
    that is briefly unreachable would."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_adds = 0

    async def add_presence(self, ref: ChannelRef, info: ClientInfoData) -> None:
        if self.fail_adds > 0:
            self.fail_adds -= 1
            raise ConnectionError("presence store unreachable")
        await super().add_presence(ref, info)
