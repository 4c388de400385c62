"""Engine fixtures: a real node (memory broker and presence, SQLite app store) per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.engine.fakes import Harness
from xshathra.analytics.recorder import AnalyticsRecorder
from xshathra.brokers import ClusterBroker
from xshathra.brokers.memory import MemoryBroker
from xshathra.engine.node import Node
from xshathra.engine.options import EngineOptions
from xshathra.engine.proxy import ProxyCaller
from xshathra.presence import PresenceStore
from xshathra.presence.memory import MemoryPresenceStore
from xshathra.storage.database import Database, open_database
from xshathra.tenancy.apps import Application, NamespaceOptions, generate_app
from xshathra.tenancy.proxies import NO_PROXIES, ProxyConfig
from xshathra.tenancy.tokens import TokenService

SECRET = "unit-test-server-secret-" + "k" * 24
MakeHarness = Callable[..., Awaitable[Harness]]


async def create_app(
    db: Database,
    *,
    namespaces: dict[str, NamespaceOptions] | None = None,
    allowed_domain: str | None = None,
    status: bool = True,
    proxies: ProxyConfig = NO_PROXIES,
) -> Application:
    app, _ = generate_app(name="unit", allowed_domain=allowed_domain)
    app = app.with_changes(namespaces=namespaces or {}, status=status, proxies=proxies)
    await db.apps.create_app(app)
    return app


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(f"sqlite:///{tmp_path / 'unit.db'}")
    yield database
    await database.close()


@pytest.fixture
async def make_harness(db: Database) -> AsyncIterator[MakeHarness]:
    """Build a started node with the given options (and broker), and one app."""
    nodes: list[Node] = []

    async def make(
        *,
        broker: ClusterBroker | None = None,
        presence: PresenceStore | None = None,
        namespaces: dict[str, NamespaceOptions] | None = None,
        allowed_domain: str | None = None,
        proxy: ProxyCaller | None = None,
        proxies: ProxyConfig = NO_PROXIES,
        **options: Any,
    ) -> Harness:
        tokens = TokenService(SECRET)
        node = Node(
            options=EngineOptions(**options),
            broker=broker or MemoryBroker(),
            presence=presence or MemoryPresenceStore(),
            apps=db.apps,
            tokens=tokens,
            analytics=AnalyticsRecorder(db.analytics, "unit-node"),
            proxy=proxy,
        )
        await node.start()
        nodes.append(node)
        app = await create_app(
            db, namespaces=namespaces, allowed_domain=allowed_domain, proxies=proxies
        )
        return Harness(node, app, tokens)

    yield make
    for node in nodes:
        await node.close()


@pytest.fixture
async def harness(make_harness: MakeHarness) -> Harness:
    return await make_harness()
