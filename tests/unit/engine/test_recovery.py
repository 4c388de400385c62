"""Recovery on resubscribe, and publications that arrive while a subscription is being set up."""

from __future__ import annotations

import asyncio

from tests.unit.engine.conftest import MakeHarness
from tests.unit.engine.fakes import Client, GatedBroker, Harness, Json


async def _position(harness: Harness, channel: str) -> Json:
    client = await harness.connect("probe")
    return await client.subscribe(channel)


def _pub_offsets(client: Client, channel: str) -> list[int]:
    return [p.get("offset", 0) for p in client.transport.pushes("pub", channel)]


async def test_recovery_returns_missed_publications_in_order(harness: Harness) -> None:
    """Resubscribing with `recover` from a known position returns what was missed, in order,
    and says it recovered."""
    start = await _position(harness, "public:r")
    await harness.publish("public:r", "seen")
    for i in range(3):
        await harness.publish("public:r", {"missed": i})
    client = await harness.connect()
    result = await client.subscribe(
        "public:r", recover=True, epoch=start["epoch"], offset=1, recoverable=True
    )
    assert result["recovered"] is True and result["was_recovering"] is True
    assert result["epoch"] == start["epoch"] and result["offset"] == 4
    assert [p["offset"] for p in result["publications"]] == [2, 3, 4]
    assert [p["data"] for p in result["publications"]] == [{"missed": i} for i in range(3)]


async def test_recovery_at_the_top_recovers_nothing_missed(harness: Harness) -> None:
    """A client already at the stream's top recovers with no publications."""
    start = await _position(harness, "public:top")
    await harness.publish("public:top", 1)
    client = await harness.connect()
    result = await client.subscribe("public:top", recover=True, epoch=start["epoch"], offset=1)
    assert result["recovered"] is True and "publications" not in result


async def test_recovery_from_another_epoch_fails(harness: Harness) -> None:
    """A position from another epoch cannot be recovered: `recovered` false, nothing replayed,
    and the current epoch is reported."""
    start = await _position(harness, "public:ep")
    await harness.publish("public:ep", 1)
    client = await harness.connect()
    result = await client.subscribe("public:ep", recover=True, epoch="0ld3p0ch", offset=0)
    assert result.get("recovered", False) is False
    assert result["was_recovering"] is True
    assert "publications" not in result
    assert result["epoch"] == start["epoch"]


async def test_recovery_beyond_what_history_kept_fails(make_harness: MakeHarness) -> None:
    """When the missed publications no longer all fit in history, recovery is refused rather
    than silently skipping some."""
    from xshathra.tenancy.apps import NamespaceOptions

    small = NamespaceOptions(allow_subscribe_for_client=True, history_size=2, history_ttl=60)
    h = await make_harness(namespaces={"small": small})
    start = await _position(h, "small:1")
    for i in range(5):
        await h.publish("small:1", i)
    client = await h.connect()
    result = await client.subscribe("small:1", recover=True, epoch=start["epoch"], offset=1)
    assert result.get("recovered", False) is False
    assert "publications" not in result and result["offset"] == 5


async def test_publications_during_subscribe_follow_the_reply(make_harness: MakeHarness) -> None:
    """Publications that arrive after the stream position was read but before the subscribe
    reply is sent are delivered right after the reply, in order, once each."""
    broker = GatedBroker()
    h = await make_harness(broker=broker)
    client = await h.connect()
    broker.gate = asyncio.Event()  # hold the next history read after it has read
    client.send({"id": 7, "subscribe": {"channel": "public:race"}})
    await asyncio.wait_for(broker.held.wait(), 3)
    for i in range(3):
        await h.publish("public:race", i)
    assert client.transport.pushes("pub") == []  # nothing before the reply
    broker.gate.set()
    await client.transport.wait_for(lambda m: m.get("push", {}).get("pub", {}).get("offset") == 3)
    reply_at = client.transport.index_of(lambda m: m.get("id") == 7)
    first_pub_at = client.transport.index_of(lambda m: "pub" in m.get("push", {}))
    assert reply_at < first_pub_at
    assert client.transport.messages[reply_at]["subscribe"].get("offset", 0) == 0
    await h.publish("public:race", "live")
    await client.transport.wait_for(lambda m: m.get("push", {}).get("pub", {}).get("offset") == 4)
    assert _pub_offsets(client, "public:race") == [1, 2, 3, 4]


async def test_recovering_subscribe_does_not_duplicate_what_the_reply_carries(
    make_harness: MakeHarness,
) -> None:
    """Publications that land in history while a recovering subscribe is pending come back in
    the reply's `publications`; they are not pushed a second time."""
    broker = GatedBroker()
    h = await make_harness(broker=broker)
    start = await _position(h, "public:dup")
    await h.publish("public:dup", "before")
    client = await h.connect()
    broker.gate, broker.hold = asyncio.Event(), "before-history"
    client.send(
        {
            "id": 7,
            "subscribe": {
                "channel": "public:dup",
                "recover": True,
                "epoch": start["epoch"],
                "offset": 1,
            },
        }
    )
    await asyncio.wait_for(broker.held.wait(), 3)
    await h.publish("public:dup", "during-1")
    await h.publish("public:dup", "during-2")
    broker.gate.set()
    reply = await client.transport.wait_for(lambda m: m.get("id") == 7)
    assert reply["subscribe"]["recovered"] is True
    assert [p["offset"] for p in reply["subscribe"]["publications"]] == [2, 3]
    await h.publish("public:dup", "live")
    await client.transport.wait_for(lambda m: m.get("push", {}).get("pub", {}).get("offset") == 4)
    assert _pub_offsets(client, "public:dup") == [4]


async def test_publications_without_history_during_subscribe_are_kept(
    make_harness: MakeHarness,
) -> None:
    """In a namespace without history (offset 0), what is published while a subscription is
    pending is delivered after the reply, in order."""
    from xshathra.tenancy.apps import NamespaceOptions

    broker = GatedBroker()
    plain = NamespaceOptions(allow_subscribe_for_client=True)
    h = await make_harness(broker=broker, namespaces={"plain": plain})
    client = await h.connect()
    broker.gate, broker.hold = asyncio.Event(), "subscriber-count"
    client.send({"id": 7, "subscribe": {"channel": "plain:x"}})
    await asyncio.wait_for(broker.held.wait(), 3)
    await h.publish("plain:x", "a")
    await h.publish("plain:x", "b")
    broker.gate.set()
    await client.transport.wait_for(lambda m: m.get("id") == 7)
    await h.publish("plain:x", "c")
    await client.transport.wait_for(lambda m: m.get("push", {}).get("pub", {}).get("data") == "c")
    reply_at = client.transport.index_of(lambda m: m.get("id") == 7)
    first_pub_at = client.transport.index_of(lambda m: "pub" in m.get("push", {}))
    assert reply_at < first_pub_at
    assert [p["data"] for p in client.transport.pushes("pub", "plain:x")] == ["a", "b", "c"]


async def test_server_side_subscriptions_recover_on_reconnect(harness: Harness) -> None:
    """A client reconnecting with its positions in `connect.subs` gets the publications its
    token channels missed in the connect result, recovered."""
    token = harness.token("u", channels=["public:feed"])
    _, first = await harness.connect_reply(token)
    position = first["connect"]["subs"]["public:feed"]
    await harness.publish("public:feed", "missed-1")
    await harness.publish("public:feed", "missed-2")
    _, again = await harness.connect_reply(
        token,
        subs={
            "public:feed": {
                "recover": True,
                "epoch": position["epoch"],
                "offset": position.get("offset", 0),
            }
        },
    )
    result = again["connect"]["subs"]["public:feed"]
    assert result["recovered"] is True
    assert [p["data"] for p in result["publications"]] == ["missed-1", "missed-2"]
