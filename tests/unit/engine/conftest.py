"""The engine through a fake transport that records what a client would receive."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from xshathra.analytics.recorder import AnalyticsRecorder
from xshathra.brokers.memory import MemoryBroker
from xshathra.engine.client import ClientSession
from xshathra.engine.node import Node
from xshathra.engine.writer import OutgoingFrame
from xshathra.presence.memory import MemoryPresenceStore
from xshathra.settings import Settings
from xshathra.storage.database import open_database
from xshathra.tenancy.apps import Application, generate_app
from xshathra.tenancy.tokens import TokenService


class FakeTransport:
    """Records written frames (as the client would parse them) and the close code."""

    def __init__(self) -> None:
        self.writes: list[list[OutgoingFrame]] = []
        self.messages: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.buffered = 0
        self.remote_ip = "127.0.0.1"
        self.origin: str | None = None
        self.changed = asyncio.Event()

    def send_frames(self, frames: list[OutgoingFrame]) -> None:
        self.writes.append(list(frames))
        for frame in frames:
            self.messages.append(json.loads(frame.payload))
        self.changed.set()

    def buffered_bytes(self) -> int:
        return self.buffered

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.changed.set()

    async def wait_for(self, predicate: Any, timeout: float = 3.0) -> Any:
        async def loop() -> Any:
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(loop(), timeout)

    async def wait_closed(self, timeout: float = 3.0) -> tuple[int, str]:
        async def loop() -> tuple[int, str]:
            while self.closed is None:
                self.changed.clear()
                await self.changed.wait()
            return self.closed

        return await asyncio.wait_for(loop(), timeout)


class Harness:
    def __init__(self, node: Node, app: Application, tokens: TokenService) -> None:
        self.node, self.app, self.tokens = node, app, tokens

    async def client(self, user: str = "u1", **claims: Any) -> tuple[ClientSession, FakeTransport]:
        transport = FakeTransport()
        session = ClientSession(self.node, transport)
        token = self.tokens.mint_connection_token(self.app.app_id, user, 600, **claims).token
        session.on_message(json.dumps({"id": 1, "connect": {"token": token}}).encode())
        await transport.wait_for(lambda m: m.get("id") == 1)
        return session, transport


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    db = await open_database(f"sqlite:///{tmp_path / 'unit.db'}")
    tokens = TokenService("k" * 48)
    node = Node(
        settings=Settings(client_queue_max_bytes=1000),
        broker=MemoryBroker(),
        presence=MemoryPresenceStore(),
        apps=db.apps,
        tokens=tokens,
        analytics=AnalyticsRecorder(db.analytics, "unit-node"),
    )
    await node.start()
    app, _ = generate_app(name="unit")
    await db.apps.create_app(app)
    yield Harness(node, app, tokens)
    await node.close()
    await db.close()
