"""What the engine does for the stream transports: a unidirectional session gets its connect
result as a `connect` push (a refusal as a disconnect) and is never asked for a pong; an
emulated session gets an emulation session id, and emulation requests reach it by that id
(here, or through the control bus from another node), from an allowed origin only."""

from __future__ import annotations

import json

import msgspec

from tests.unit.engine.conftest import MakeHarness
from tests.unit.engine.fakes import Client, FakeTransport, Harness
from xshathra.engine.client import ClientSession
from xshathra.engine.control import Emulation, encode_control
from xshathra.engine.node import EmulationOutcome
from xshathra.protocol.uni_json_codec import UNI_HTTP_STREAM_CODEC


class UniTransport(FakeTransport):
    codec = UNI_HTTP_STREAM_CODEC  # bare pushes
    unidirectional = True


class EmulatedTransport(FakeTransport):
    emulation = True


def open_with(harness: Harness, transport: FakeTransport) -> Client:
    return Client(ClientSession(harness.node, transport), transport)


async def test_unidirectional_connect_is_a_push_with_the_token_channels(harness: Harness) -> None:
    client = open_with(harness, UniTransport())
    client.send({"id": 1, "connect": {"token": harness.token("u", channels=["public:a"])}})
    connect = (await client.transport.wait_for(lambda m: "connect" in m))["connect"]
    assert list(connect["subs"]) == ["public:a"] and "pong" not in connect
    assert "session" not in connect
    await harness.publish("public:a", {"x": 1})
    pub = await client.transport.wait_for(lambda m: "pub" in m)
    assert pub == {"channel": "public:a", "pub": {"data": {"x": 1}, "offset": 1}}


async def test_unidirectional_refusal_is_a_disconnect(harness: Harness) -> None:
    expired = open_with(harness, UniTransport())
    expired.send({"id": 1, "connect": {"token": harness.token("u", ttl=-10)}})
    assert (await expired.transport.wait_closed())[0] == 3005
    bad = open_with(harness, UniTransport())
    bad.send({"id": 1, "connect": {"token": "nope"}})
    assert (await bad.transport.wait_closed())[0] == 3500


async def test_no_pong_is_awaited_from_a_unidirectional_client(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(ping_interval=1)
    client = open_with(harness, UniTransport())
    client.send({"id": 1, "connect": {"token": harness.token("u")}})
    await client.transport.until(
        lambda: sum(m is None for m in client.transport.messages) >= 3, timeout=5
    )
    assert client.transport.closed is None  # three pings (`null`), never answered, still open


async def test_emulation_requests_reach_the_session_by_its_id(harness: Harness) -> None:
    client = open_with(harness, EmulatedTransport())
    client.send({"id": 1, "connect": {"token": harness.token("u")}})
    connect = (await client.transport.wait_for(lambda m: m.get("id") == 1))["connect"]
    session, node_id = connect["session"], connect["node"]
    assert len(session) >= 24 and node_id == harness.node.node_id

    command = json.dumps({"id": 2, "subscribe": {"channel": "public:e"}}).encode()
    assert await harness.node.emulate(node_id, session, command, None) is EmulationOutcome.DELIVERED
    assert "subscribe" in await client.transport.wait_for(lambda m: m.get("id") == 2)
    unknown = await harness.node.emulate(node_id, "unknown", command, None)
    assert unknown is EmulationOutcome.NO_SESSION
    # A node nobody has heard of (or none named): Centrifugo's 404, the client reconnects.
    for node in ("", "gone"):
        assert await harness.node.emulate(node, session, command, None) is EmulationOutcome.NO_NODE

    client.session.disconnect(3000)
    assert (
        await harness.node.emulate(node_id, session, command, None) is EmulationOutcome.NO_SESSION
    )


async def test_emulation_from_an_origin_the_app_does_not_allow_is_refused(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(allowed_domain="example.com")
    client = open_with(harness, EmulatedTransport())
    client.send({"id": 1, "connect": {"token": harness.token("u")}})
    session = (await client.transport.wait_for(lambda m: m.get("id") == 1))["connect"]["session"]
    ping = json.dumps({"id": 2, "ping": {}}).encode()
    here = harness.node.node_id
    refused = await harness.node.emulate(here, session, ping, "https://evil.test")
    assert refused is EmulationOutcome.ORIGIN_REFUSED
    allowed = await harness.node.emulate(here, session, ping, "https://app.example.com")
    assert allowed is EmulationOutcome.DELIVERED
    await client.transport.wait_for(lambda m: m.get("id") == 2)


async def test_emulation_for_another_node_goes_over_the_control_bus(
    make_harness: MakeHarness,
) -> None:
    """Node B forwards what names node A once it has heard A announce itself; A, given the
    control message as its bus delivers it, hands the commands to the session; a node ignores
    what is addressed to another. (Two real nodes: tests/integration/test_streams_js.py.)"""
    a = await make_harness()
    b = await make_harness()
    client = open_with(a, EmulatedTransport())
    client.send({"id": 1, "connect": {"token": a.token("u")}})
    connect = (await client.transport.wait_for(lambda m: m.get("id") == 1))["connect"]
    command = json.dumps({"id": 2, "ping": {}}).encode()
    unknown = await b.node.emulate(connect["node"], connect["session"], command, None)
    assert unknown is EmulationOutcome.NO_NODE  # B has not heard of A yet
    beat = msgspec.structs.replace(a.node.local_stats(), origin_node=a.node.node_id)
    b.node.on_control(encode_control(beat))  # A's heartbeat reached B
    assert b.node.node_running(a.node.node_id)
    outcome = await b.node.emulate(connect["node"], connect["session"], command, None)
    assert outcome is EmulationOutcome.FORWARDED
    message = Emulation(node=connect["node"], session=connect["session"], data=command)
    b.node.on_control(encode_control(message))  # not B's: ignored
    a.node.on_control(encode_control(message))
    assert "ping" in await client.transport.wait_for(lambda m: m.get("id") == 2)
    assert sum("ping" in m for m in client.transport.messages) == 1
