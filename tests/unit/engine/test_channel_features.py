"""Channel features of SPEC §8 in the engine: fossil deltas, cache recovery, positioning and
tags filters, driven through real sessions on a node with the memory broker."""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

from centrifuge.fossil import apply_delta

from tests.unit.engine.conftest import MakeHarness
from tests.unit.engine.fakes import Client, Harness, Json
from xshathra.brokers.memory import MemoryBroker
from xshathra.model import ChannelRef, HistoryOptions
from xshathra.protocol.delta import fossil_delta
from xshathra.protocol.filters import matches
from xshathra.tenancy.apps import NamespaceOptions

FEATURES = NamespaceOptions(
    history_size=10,
    history_ttl=300,
    allow_subscribe_for_client=True,
    allowed_delta_types=("fossil",),
    allow_positioning=True,
    allow_tags_filter=True,
)
CACHE = NamespaceOptions(
    history_size=1, history_ttl=300, allow_subscribe_for_client=True, force_recovery_mode="cache"
)


async def _features(make_harness: MakeHarness, **options: Any) -> Harness:
    return await make_harness(namespaces={"f": FEATURES, "cache": CACHE}, **options)


def _doc(i: int) -> Json:
    return {"title": "a long enough document", "items": list(range(20)), "version": i}


async def _publish(harness: Harness, channel: str, data: Any, **kwargs: Any) -> None:
    options = harness.app.namespace_options(channel.split(":", 1)[0])
    await harness.node.publish(harness.ref(channel), json.dumps(data).encode(), options, **kwargs)


def _decode_deltas(client: Client, channel: str) -> list[Any]:
    """What a delta-aware client makes of the publications: data strings, deltas applied."""
    previous = b""
    out = []
    for pub in client.transport.pushes("pub", channel):
        text = pub["data"].encode()
        previous = bytes(apply_delta(previous, text)) if pub.get("delta") else text
        out.append(json.loads(previous))
    return out


def pushed(client: Client, n: int) -> bool:
    """Whether `client` has received `n` publications."""
    return len(client.transport.pushes("pub")) == n


async def test_delta_subscriber_gets_deltas_that_rebuild_the_data(
    make_harness: MakeHarness,
) -> None:
    """A `delta: "fossil"` subscriber of a namespace allowing it: the reply says `delta`, the
    first publication is full (as a JSON string), later ones published with `delta` are fossil
    deltas, shorter than the data, that rebuild it exactly."""
    harness = await _features(make_harness)
    client = await harness.connect()
    plain = await harness.connect("u2")
    result = await client.subscribe("f:doc", delta="fossil")
    assert result["delta"] is True
    await plain.subscribe("f:doc")
    for i in range(3):
        await _publish(harness, "f:doc", _doc(i), delta=True)
    await client.transport.until(lambda: len(client.transport.pushes("pub", "f:doc")) == 3)
    pubs = client.transport.pushes("pub", "f:doc")
    assert [bool(p.get("delta")) for p in pubs] == [False, True, True]
    assert isinstance(pubs[0]["data"], str)
    assert len(pubs[2]["data"]) < len(json.dumps(_doc(2))) / 2
    assert _decode_deltas(client, "f:doc") == [_doc(i) for i in range(3)]
    # A subscriber without delta gets plain publications.
    await plain.transport.until(lambda: len(plain.transport.pushes("pub", "f:doc")) == 3)
    assert [p["data"] for p in plain.transport.pushes("pub", "f:doc")] == [
        _doc(i) for i in range(3)
    ]


async def test_delta_is_computed_once_per_publication(
    make_harness: MakeHarness, monkeypatch: Any
) -> None:
    """Ten delta subscribers of one channel: one fossil encoding per publication."""
    import xshathra.engine.hub as hub_module

    calls = []
    real = fossil_delta

    def counting(previous: bytes, current: bytes) -> bytes:
        calls.append(1)
        return real(previous, current)

    monkeypatch.setattr(hub_module, "fossil_delta", counting)
    harness = await _features(make_harness)
    clients = [await harness.connect(f"u{i}") for i in range(10)]
    for client in clients:
        await client.subscribe("f:many", delta="fossil")
    for i in range(3):
        await _publish(harness, "f:many", _doc(i), delta=True)
    for client in clients:
        await client.transport.until(functools.partial(pushed, client, 3))
        assert _decode_deltas(client, "f:many") == [_doc(i) for i in range(3)]
    assert len(calls) == 2  # the first publication had no base


async def test_delta_without_publish_option_sends_full_data(make_harness: MakeHarness) -> None:
    """Publications not marked `delta` go out in full to delta subscribers."""
    harness = await _features(make_harness)
    client = await harness.connect()
    await client.subscribe("f:full", delta="fossil")
    for i in range(2):
        await _publish(harness, "f:full", _doc(i))
    await client.transport.until(lambda: len(client.transport.pushes("pub")) == 2)
    assert not any(p.get("delta") for p in client.transport.pushes("pub"))
    assert _decode_deltas(client, "f:full") == [_doc(0), _doc(1)]


async def test_delta_not_allowed_is_not_negotiated(make_harness: MakeHarness) -> None:
    """In a namespace without allowed_delta_types the subscription works without deltas; an
    unknown delta type is refused."""
    harness = await _features(make_harness)
    client = await harness.connect()
    result = await client.subscribe("public:nodelta", delta="fossil")
    assert "delta" not in result
    await harness.publish("public:nodelta", {"a": 1})
    await client.transport.until(lambda: len(client.transport.pushes("pub")) == 1)
    assert client.transport.pushes("pub")[0]["data"] == {"a": 1}
    assert await client.error("subscribe", {"channel": "f:x", "delta": "bsdiff"}) == 107


async def test_delta_recovery_sends_full_publications(make_harness: MakeHarness) -> None:
    """Recovered publications of a delta subscription are full; the next live one too."""
    harness = await _features(make_harness)
    probe = await harness.connect("probe")
    start = await probe.subscribe("f:rec")
    await _publish(harness, "f:rec", _doc(0), delta=True)
    await _publish(harness, "f:rec", _doc(1), delta=True)
    client = await harness.connect()
    result = await client.subscribe(
        "f:rec", delta="fossil", recover=True, epoch=start["epoch"], offset=0
    )
    assert result["recovered"] is True and result["delta"] is True
    assert [json.loads(p["data"]) for p in result["publications"]] == [_doc(0), _doc(1)]
    await _publish(harness, "f:rec", _doc(2), delta=True)
    await _publish(harness, "f:rec", _doc(3), delta=True)
    await client.transport.until(lambda: len(client.transport.pushes("pub")) == 2)
    assert [bool(p.get("delta")) for p in client.transport.pushes("pub")] == [False, True]
    assert _decode_deltas(client, "f:rec") == [_doc(2), _doc(3)]


async def test_cache_mode_recovers_the_latest_publication_only(make_harness: MakeHarness) -> None:
    """force_recovery_mode "cache": a recovering subscriber gets the latest publication only,
    and nothing when it already has it."""
    harness = await _features(make_harness)
    for i in range(3):
        await _publish(harness, "cache:now", {"n": i})
    client = await harness.connect()
    result = await client.subscribe("cache:now", recover=True, offset=0, epoch="")
    assert result["recovered"] is True and result["was_recovering"] is True
    assert [p["data"] for p in result["publications"]] == [{"n": 2}]
    assert result["publications"][0]["offset"] == 3
    again = await harness.connect("u2")
    result = await again.subscribe("cache:now", recover=True, offset=3, epoch=result["epoch"])
    assert result["recovered"] is True and "publications" not in result


async def test_tags_filter_delivers_matching_publications(make_harness: MakeHarness) -> None:
    """A subscriber with `tf` gets only publications whose tags pass it; another without a
    filter gets all."""
    harness = await _features(make_harness)
    client = await harness.connect()
    other = await harness.connect("u2")
    tf = {
        "op": "and",
        "nodes": [
            {"key": "ticker", "cmp": "in", "vals": ["AAPL", "MSFT"]},
            {"op": "not", "nodes": [{"key": "price", "cmp": "lt", "val": "100"}]},
        ],
    }
    await client.subscribe("f:quotes", tf=tf)
    await other.subscribe("f:quotes")
    sent = [
        ({"ticker": "AAPL", "price": "150"}, True),
        ({"ticker": "AAPL", "price": "99.5"}, False),
        ({"ticker": "GOOG", "price": "150"}, False),
        ({"ticker": "MSFT", "price": "100"}, True),
        ({}, False),
    ]
    for i, (tags, _) in enumerate(sent):
        await _publish(harness, "f:quotes", {"i": i}, tags=tags)
    await other.transport.until(lambda: len(other.transport.pushes("pub")) == len(sent))
    await client.transport.until(lambda: len(client.transport.pushes("pub")) == 2)
    got = [p["data"]["i"] for p in client.transport.pushes("pub")]
    assert got == [i for i, (_, passes) in enumerate(sent) if passes]


async def test_equal_filters_are_evaluated_once(
    make_harness: MakeHarness, monkeypatch: Any
) -> None:
    """Subscribers with equal filters share one evaluation per publication."""
    import xshathra.engine.hub as hub_module

    calls = []
    real = matches

    def counting(node: Any, tags: Any) -> bool:
        calls.append(1)
        return real(node, tags)

    monkeypatch.setattr(hub_module, "matches", counting)
    harness = await _features(make_harness)
    clients = [await harness.connect(f"u{i}") for i in range(5)]
    for client in clients:
        await client.subscribe("f:same", tf={"key": "k", "cmp": "eq", "val": "v"})
    await _publish(harness, "f:same", 1, tags={"k": "v"})
    for client in clients:
        await client.transport.until(functools.partial(pushed, client, 1))
    assert len(calls) == 1


async def test_bad_filters_are_refused_with_a_reason(make_harness: MakeHarness) -> None:
    """A malformed filter, a filter where not allowed, or one with delta: 107 naming why."""
    harness = await _features(make_harness)
    client = await harness.connect()
    cases = [
        ("f:a", {"key": "k", "cmp": "between", "val": "1"}, "", "unknown comparison"),
        ("f:b", {"key": "k", "cmp": "eq"}, "", "needs val"),
        ("f:c", {"op": "not", "nodes": []}, "", "exactly one"),
        ("f:d", {"op": "xor", "nodes": [{"key": "k", "cmp": "ex"}]}, "", "unknown op"),
        ("f:e", {"key": "k", "cmp": "gt", "val": "ten"}, "", "numeric"),
        ("public:f", {"key": "k", "cmp": "ex"}, "", "not allowed"),
        ("f:g", {"key": "k", "cmp": "ex"}, "fossil", "cannot be combined"),
    ]
    deep: Json = {"key": "k", "cmp": "ex"}
    for _ in range(20):
        deep = {"op": "not", "nodes": [deep]}
    cases.append(("f:h", deep, "", "nested deeper"))
    for channel, tf, delta, reason in cases:
        params: Json = {"channel": channel, "tf": tf}
        if delta:
            params["delta"] = delta
        reply = await client.call("subscribe", params)
        assert reply["error"]["code"] == 107, reply
        assert reason in reply["error"]["message"], (reason, reply)
    # The connection is still usable.
    assert "epoch" in await client.subscribe("f:ok", tf={"key": "k", "cmp": "ex"})


async def _gap(broker: MemoryBroker, harness: Harness, channel: str) -> None:
    """Lose one publication between the broker and this node: published (and kept in history)
    while the node is not subscribed to the channel."""
    ref = ChannelRef(harness.app.app_id, channel)
    await broker.unsubscribe(ref)
    await _publish(harness, channel, "lost")
    await broker.subscribe(ref)


async def test_positioned_subscriber_is_disconnected_on_a_gap(make_harness: MakeHarness) -> None:
    """A gap in the stream: a positioned subscriber is disconnected with 3010; one that is not
    positioned is unsubscribed to resubscribe (2500)."""
    broker = MemoryBroker()
    harness = await _features(make_harness, broker=broker)
    positioned = await harness.connect()
    plain = await harness.connect("u2")
    result = await positioned.subscribe("f:pos", positioned=True)
    assert result["positioned"] is True
    await plain.subscribe("f:pos")
    await _publish(harness, "f:pos", 1)
    await _gap(broker, harness, "f:pos")
    await _publish(harness, "f:pos", 3)
    code, _ = await positioned.transport.wait_closed()
    assert code == 3010
    unsub = await plain.transport.wait_for(lambda m: "unsubscribe" in m.get("push", {}))
    assert unsub["push"]["unsubscribe"]["code"] == 2500


async def test_position_check_finds_a_lost_last_publication(make_harness: MakeHarness) -> None:
    """The last publication lost (no later one shows the gap): the periodic check of the
    stream top disconnects the positioned subscriber with 3010."""
    broker = MemoryBroker()
    harness = await _features(make_harness, broker=broker, position_check_interval=0.05)
    positioned = await harness.connect()
    await positioned.subscribe("f:last", positioned=True)
    await _publish(harness, "f:last", 1)
    await _gap(broker, harness, "f:last")
    code, _ = await positioned.transport.wait_closed()
    assert code == 3010


async def test_force_positioning_and_no_false_alarm(make_harness: MakeHarness) -> None:
    """force_positioning makes every subscription positioned; an unbroken stream, checked
    often, disconnects no one."""
    forced = NamespaceOptions(
        history_size=10, history_ttl=300, allow_subscribe_for_client=True, force_positioning=True
    )
    harness = await make_harness(namespaces={"p": forced}, position_check_interval=0.02)
    client = await harness.connect()
    assert (await client.subscribe("p:ok"))["positioned"] is True
    for i in range(20):
        await _publish(harness, "p:ok", i)
    await client.transport.until(lambda: len(client.transport.pushes("pub")) == 20)
    # Absence over time: a window of several checks (every 0.02 s) with nothing lost.
    await asyncio.sleep(0.2)
    assert client.transport.closed is None


async def test_positioned_subscriber_is_disconnected_when_the_epoch_changes(
    make_harness: MakeHarness,
) -> None:
    """The channel's stream is evicted (the app's history budget, spent on another channel):
    the next publication starts a new epoch, where a positioned subscriber's position means
    nothing: 3010. A plain subscriber just gets the publication."""
    broker = MemoryBroker(max_bytes_per_app=64 * 1024)
    harness = await _features(make_harness, broker=broker)
    positioned = await harness.connect()
    plain = await harness.connect("u2")
    first = await positioned.subscribe("f:epoch", positioned=True)
    await plain.subscribe("f:epoch")
    await _publish(harness, "f:epoch", 1)
    await _publish(harness, "f:other", "x" * 70_000)  # over the budget: f:epoch is evicted
    await _publish(harness, "f:epoch", 2)
    top = await broker.history(harness.ref("f:epoch"), HistoryOptions(limit=0))
    assert top.position.epoch != first["epoch"]
    code, _ = await positioned.transport.wait_closed()
    assert code == 3010
    await plain.transport.until(lambda: len(plain.transport.pushes("pub")) == 2)
    assert plain.transport.closed is None


async def test_subscribers_with_features_get_joins_and_leaves(make_harness: MakeHarness) -> None:
    """A delta or filtered subscription still hears who joins and leaves."""
    options = NamespaceOptions(
        history_size=10,
        history_ttl=300,
        allow_subscribe_for_client=True,
        join_leave=True,
        force_push_join_leave=True,
        allowed_delta_types=("fossil",),
        allow_tags_filter=True,
    )
    harness = await make_harness(namespaces={"jl": options})
    delta = await harness.connect("delta")
    filtered = await harness.connect("filtered")
    await delta.subscribe("jl:room", delta="fossil")
    await filtered.subscribe("jl:room", tf={"key": "k", "cmp": "ex"})
    newcomer = await harness.connect("newcomer")
    await newcomer.subscribe("jl:room")
    for client in (delta, filtered):
        join = await client.transport.wait_for(
            lambda m: m.get("push", {}).get("join", {}).get("info", {}).get("user") == "newcomer"
        )
        assert join["push"]["channel"] == "jl:room"


async def test_a_delta_no_smaller_than_the_data_is_not_sent(make_harness: MakeHarness) -> None:
    """Unrelated documents: the delta would be larger than the data, so the data goes out in
    full (`delta` false), and the chain goes on from it."""
    harness = await _features(make_harness)
    client = await harness.connect()
    await client.subscribe("f:unrelated", delta="fossil")
    await _publish(harness, "f:unrelated", {"a": "x" * 50}, delta=True)
    await _publish(harness, "f:unrelated", [1, 2, 3], delta=True)
    await _publish(harness, "f:unrelated", [1, 2, 3, 4] * 10, delta=True)
    await _publish(harness, "f:unrelated", [1, 2, 3, 4] * 11, delta=True)
    await client.transport.until(lambda: len(client.transport.pushes("pub")) == 4)
    assert [bool(p.get("delta")) for p in client.transport.pushes("pub")] == [
        False,
        False,
        False,
        True,
    ]
    assert _decode_deltas(client, "f:unrelated") == [
        {"a": "x" * 50},
        [1, 2, 3],
        [1, 2, 3, 4] * 10,
        [1, 2, 3, 4] * 11,
    ]


async def test_cache_mode_with_a_filter_gives_the_latest_matching(
    make_harness: MakeHarness,
) -> None:
    """Cache mode and a tags filter: the latest publication that passes the filter."""
    cached = NamespaceOptions(
        history_size=10,
        history_ttl=300,
        allow_subscribe_for_client=True,
        force_recovery_mode="cache",
        allow_tags_filter=True,
    )
    harness = await make_harness(namespaces={"cf": cached})
    for n, kind in enumerate(["a", "b", "a", "b"]):
        await _publish(harness, "cf:x", {"n": n}, tags={"kind": kind})
    client = await harness.connect()
    result = await client.subscribe(
        "cf:x", recover=True, tf={"key": "kind", "cmp": "eq", "val": "a"}
    )
    assert result["recovered"] is True
    assert [p["data"] for p in result["publications"]] == [{"n": 2}]


async def test_subscribers_with_features_are_counted_and_cleaned_up(
    make_harness: MakeHarness,
) -> None:
    """Delta and filtered subscribers count as subscribers of the channel; once they leave
    (unsubscribe, or the connection closes) nothing of them stays in the hub."""
    harness = await _features(make_harness)
    delta = await harness.connect("d")
    filtered = await harness.connect("f")
    plain = await harness.connect("p")
    await delta.subscribe("f:count", delta="fossil")
    await filtered.subscribe("f:count", tf={"key": "k", "cmp": "ex"})
    await plain.subscribe("f:count")
    node = harness.node
    assert node.channels(harness.app.app_id) == {"f:count": 3}
    assert node.app_info(harness.app.app_id).num_subs == 3
    await delta.result("unsubscribe", {"channel": "f:count"})
    assert node.channels(harness.app.app_id) == {"f:count": 2}
    filtered.session.disconnect(3000)
    await plain.result("unsubscribe", {"channel": "f:count"})
    await plain.transport.until(lambda: not node.hub.has_channel(harness.ref("f:count")))
    assert node.channels(harness.app.app_id) == {}
    assert not node.hub._featured and not node.hub._pending_features
