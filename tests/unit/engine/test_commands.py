"""Publish, presence, presence_stats, history, ping, rpc and send: permissions and results."""

from __future__ import annotations

from tests.unit.engine.conftest import MakeHarness
from tests.unit.engine.fakes import Harness
from xshathra.tenancy.apps import NamespaceOptions

CHAT = NamespaceOptions(
    allow_subscribe_for_client=True,
    allow_publish_for_subscriber=True,
    history_size=10,
    history_ttl=60,
)
OPEN = NamespaceOptions(allow_subscribe_for_client=True, allow_publish_for_client=True)


async def test_client_publish_is_off_in_public(harness: Harness) -> None:
    """`public:` does not let clients publish, subscribed or not (103)."""
    client = await harness.connect()
    await client.subscribe("public:p")
    assert await client.error("publish", {"channel": "public:p", "data": {"x": 1}}) == 103


async def test_publish_for_subscriber_needs_a_subscription(make_harness: MakeHarness) -> None:
    """With `allow_publish_for_subscriber`, subscribers publish and others get 103; the
    publication reaches subscribers with the publisher's info."""
    h = await make_harness(namespaces={"chat": CHAT})
    outsider, member = await h.connect("out"), await h.connect("member")
    assert await outsider.error("publish", {"channel": "chat:1", "data": 1}) == 103
    await member.subscribe("chat:1")
    assert await member.result("publish", {"channel": "chat:1", "data": {"t": "hi"}}) == {}
    pub = await member.transport.wait_for(lambda m: "pub" in m.get("push", {}))
    assert pub["push"]["pub"]["data"] == {"t": "hi"}
    assert pub["push"]["pub"]["offset"] == 1
    assert pub["push"]["pub"]["info"]["user"] == "member"
    assert pub["push"]["pub"]["info"]["client"] == member.session.client_id


async def test_publish_for_client_needs_no_subscription(make_harness: MakeHarness) -> None:
    """With `allow_publish_for_client`, any connected client may publish."""
    h = await make_harness(namespaces={"open": OPEN})
    reader, writer = await h.connect("r"), await h.connect("w")
    await reader.subscribe("open:x")
    await writer.result("publish", {"channel": "open:x", "data": [1, 2]})
    pub = await reader.transport.wait_for(lambda m: "pub" in m.get("push", {}))
    assert pub["push"]["pub"]["data"] == [1, 2]


async def test_publish_data_reaches_subscribers_byte_for_byte(make_harness: MakeHarness) -> None:
    """The engine never re-encodes payloads: big numbers and unicode escapes arrive as sent."""
    h = await make_harness(namespaces={"open": OPEN})
    reader, writer = await h.connect("r"), await h.connect("w")
    await reader.subscribe("open:raw")
    raw = b'{"big":123456789012345678901234567890,"s":"\\u00e9\\ud83d\\ude00","f":1.50}'
    writer.session.on_message(b'{"id":9,"publish":{"channel":"open:raw","data":' + raw + b"}}")
    await reader.transport.wait_for(lambda m: "pub" in m.get("push", {}))
    frame = next(f for f in reader.transport.frames if b'"pub"' in f)
    assert raw in frame


async def test_publish_over_the_size_limit_is_refused(make_harness: MakeHarness) -> None:
    """A publication larger than `max_message_size` is refused with 106."""
    h = await make_harness(namespaces={"open": OPEN}, max_message_size=100)
    client = await h.connect()
    assert await client.error("publish", {"channel": "open:big", "data": "x" * 200}) == 106


async def test_presence_lists_subscribers_with_their_info(harness: Harness) -> None:
    """Presence maps client ids to user, client and connection info."""
    a = await harness.connect("alice", info={"role": "admin"})
    b = await harness.connect("bob")
    await a.subscribe("public:room")
    await b.subscribe("public:room")
    result = await a.result("presence", {"channel": "public:room"})
    assert result["presence"] == {
        a.session.client_id: {
            "user": "alice",
            "client": a.session.client_id,
            "conn_info": {"role": "admin"},
        },
        b.session.client_id: {"user": "bob", "client": b.session.client_id},
    }


async def test_presence_stats_count_clients_and_distinct_users(harness: Harness) -> None:
    """Two connections of one user and one of another: 3 clients, 2 users."""
    clients = [await harness.connect(u) for u in ("alice", "alice", "bob")]
    for c in clients:
        await c.subscribe("public:stats")
    result = await clients[0].result("presence_stats", {"channel": "public:stats"})
    assert result == {"num_clients": 3, "num_users": 2}


async def test_presence_needs_a_subscription(harness: Harness) -> None:
    """Presence and presence_stats of a channel one is not subscribed to are 103."""
    client = await harness.connect()
    assert await client.error("presence", {"channel": "public:elsewhere"}) == 103
    assert await client.error("presence_stats", {"channel": "public:elsewhere"}) == 103


async def test_presence_where_the_namespace_has_none_is_not_available(
    make_harness: MakeHarness,
) -> None:
    """Presence in a namespace without presence is 108 (not available)."""
    h = await make_harness(namespaces={"chat": CHAT})
    client = await h.connect()
    await client.subscribe("chat:1")
    assert await client.error("presence", {"channel": "chat:1"}) == 108
    assert await client.error("presence_stats", {"channel": "chat:1"}) == 108


async def test_history_returns_publications_and_position(harness: Harness) -> None:
    """History of a subscribed `public:` channel: oldest first, limit, reverse, epoch, offset."""
    client = await harness.connect()
    sub = await client.subscribe("public:h")
    for i in range(1, 6):
        await harness.publish("public:h", {"i": i})
    result = await client.result("history", {"channel": "public:h", "limit": 10})
    assert [p["offset"] for p in result["publications"]] == [1, 2, 3, 4, 5]
    assert [p["data"] for p in result["publications"]] == [{"i": i} for i in range(1, 6)]
    assert result["epoch"] == sub["epoch"] and result["offset"] == 5
    limited = await client.result("history", {"channel": "public:h", "limit": 2})
    assert [p["offset"] for p in limited["publications"]] == [1, 2]
    newest = await client.result("history", {"channel": "public:h", "limit": 2, "reverse": True})
    assert [p["offset"] for p in newest["publications"]] == [5, 4]
    since = await client.result(
        "history",
        {"channel": "public:h", "limit": 10, "since": {"offset": 3, "epoch": sub["epoch"]}},
    )
    assert [p["offset"] for p in since["publications"]] == [4, 5]


async def test_history_limit_minus_one_means_everything_kept(harness: Harness) -> None:
    """As in Centrifuge's HistoryFilter, a client's `limit` -1 asks for every publication kept
    (0 asks for the position only)."""
    client = await harness.connect()
    await client.subscribe("public:all")
    for i in range(3):
        await harness.publish("public:all", i)
    result = await client.result("history", {"channel": "public:all", "limit": -1})
    assert [p["offset"] for p in result.get("publications", [])] == [1, 2, 3]


async def test_history_with_limit_zero_gives_only_the_position(harness: Harness) -> None:
    """`limit` 0 (the default) answers the stream position without publications."""
    client = await harness.connect()
    await client.subscribe("public:pos")
    await harness.publish("public:pos", 1)
    result = await client.result("history", {"channel": "public:pos"})
    assert "publications" not in result and result["offset"] == 1


async def test_history_since_another_epoch_is_error_112(harness: Harness) -> None:
    """A `since` position from another epoch is unrecoverable (112)."""
    client = await harness.connect()
    await client.subscribe("public:e")
    params = {"channel": "public:e", "limit": 10, "since": {"offset": 0, "epoch": "stale"}}
    assert await client.error("history", params) == 112


async def test_history_needs_a_subscription_and_history(make_harness: MakeHarness) -> None:
    """History is 103 when not subscribed or not allowed, 108 where nothing is kept."""
    h = await make_harness(namespaces={"chat": CHAT, "nohist": OPEN})
    client = await h.connect()
    assert await client.error("history", {"channel": "public:none"}) == 103
    await client.subscribe("chat:1")  # history kept, but not allowed for subscribers
    assert await client.error("history", {"channel": "chat:1"}) == 103
    await client.subscribe("nohist:1")
    assert await client.error("history", {"channel": "nohist:1"}) == 108


async def test_ping_rpc_send_and_unknown_commands(harness: Harness) -> None:
    """`ping` answers an empty result; `rpc` without an RPC proxy and an unknown method answer
    104; `send` without a send proxy is refused, never dropped: 108 when it carries an id."""
    client = await harness.connect()
    assert await client.result("ping") == {}
    assert await client.error("rpc", {"method": "m", "data": {}}) == 104
    assert await client.error("send", {"data": {"x": 1}}) == 108
    client.send({"id": 50})  # a command with an id and no method
    reply = await client.transport.wait_for(lambda m: m.get("id") == 50)
    assert reply["error"]["code"] == 104
    assert client.transport.closed is None


async def test_send_without_an_id_and_without_a_send_proxy_closes_with_3508(
    harness: Harness,
) -> None:
    """An asynchronous `send` (no id) to an app without a send proxy ends the connection with
    3508 (not available), as Centrifuge does: the client learns it is not delivered."""
    client = await harness.connect()
    client.send({"send": {"data": {"x": 1}}})
    code, _ = await client.transport.wait_closed()
    assert code == 3508


async def test_replies_keep_command_order_within_a_batch(harness: Harness) -> None:
    """Several commands in one frame are answered in order."""
    client = await harness.connect()
    client.send(
        {"id": 10, "subscribe": {"channel": "public:o"}},
        {"id": 11, "presence_stats": {"channel": "public:o"}},
        {"id": 12, "ping": {}},
    )
    await client.transport.wait_for(lambda m: m.get("id") == 12)
    ids = [m["id"] for m in client.transport.messages if m.get("id", 0) >= 10]
    assert ids == [10, 11, 12]
