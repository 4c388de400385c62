"""The hub's registry: connection, user, channel and subscription counts as sessions come and go."""

from __future__ import annotations

from tests.unit.engine.conftest import create_app
from tests.unit.engine.fakes import Harness
from xshathra.storage.database import Database


async def test_counts_follow_connections_and_subscriptions(harness: Harness) -> None:
    """Connections, distinct users, channels and subscriptions are counted per app, and
    forgotten when connections close."""
    hub, app_id = harness.node.hub, harness.app.app_id
    a1, a2, b = await harness.connect("a"), await harness.connect("a"), await harness.connect("b")
    assert hub.connection_count(app_id) == 3
    assert hub.user_count(app_id) == 2 and hub.user_ids(app_id) == {"a", "b"}
    assert hub.app_ids() == [app_id]
    await a1.subscribe("public:one")
    await a2.subscribe("public:one")
    await b.subscribe("public:two")
    assert hub.channels(app_id) == {"public:one": 2, "public:two": 1}
    assert hub.subscription_total() == 3
    assert len(hub.user_connections(app_id, "a")) == 2
    assert hub.connection(app_id, b.session.client_id) is b.session

    a1.session.disconnect(3000)
    assert hub.connection_count(app_id) == 2
    assert hub.user_count(app_id) == 2
    assert hub.channels(app_id) == {"public:one": 1, "public:two": 1}
    a2.session.disconnect(3000)
    assert hub.user_ids(app_id) == {"b"}
    assert hub.channels(app_id) == {"public:two": 1}
    b.session.disconnect(3000)
    assert hub.connection_count(app_id) == 0 and hub.app_ids() == []
    assert hub.subscription_total() == 0 and hub.total_connections() == 0


async def test_counts_are_per_app(harness: Harness, db: Database) -> None:
    """Two apps' connections and channels are counted apart."""
    hub = harness.node.hub
    other = await create_app(db)
    mine = await harness.connect("u")
    theirs = await harness.connect("u", app=other)
    await mine.subscribe("public:c")
    await theirs.subscribe("public:c")
    assert hub.connection_count(harness.app.app_id) == 1
    assert hub.connection_count(other.app_id) == 1
    assert hub.total_connections() == 2
    assert hub.subscriber_count(harness.ref("public:c")) == 1
    assert hub.channels(other.app_id) == {"public:c": 1}


async def test_anonymous_connections_are_not_users(harness: Harness) -> None:
    """A connection with an empty `sub` counts as a connection but not as a user."""
    hub, app_id = harness.node.hub, harness.app.app_id
    await harness.connect("")
    await harness.connect("named")
    assert hub.connection_count(app_id) == 2
    assert hub.user_count(app_id) == 1 and hub.user_ids(app_id) == {"named"}


async def test_closed_transport_forgets_the_session(harness: Harness) -> None:
    """When the transport reports the connection gone, the session leaves the hub."""
    client = await harness.connect()
    await client.subscribe("public:t")
    client.session.on_transport_closed()
    assert harness.node.hub.connection_count(harness.app.app_id) == 0
    assert harness.node.hub.subscriber_count(harness.ref("public:t")) == 0


async def test_broker_subscriber_count_follows_local_subscribers(harness: Harness) -> None:
    """The broker is told how many subscribers the node has on a channel."""
    a, b = await harness.connect("a"), await harness.connect("b")
    ref = harness.ref("public:bc")
    await a.subscribe("public:bc")
    await b.subscribe("public:bc")
    assert await harness.node.broker.subscriber_count(ref) == 2
    await a.result("unsubscribe", {"channel": "public:bc"})
    assert await harness.node.broker.subscriber_count(ref) == 1
