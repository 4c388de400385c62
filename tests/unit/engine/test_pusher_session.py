"""The Pusher session on a real node (memory broker and presence) through a fake transport
that records what a pusher-js client would receive: opening, early messages, subscriptions,
presence membership by user, fan-out with the sender skipped, and close codes."""

from __future__ import annotations

import json
from typing import Any

from tests.unit.engine.conftest import MakeHarness
from tests.unit.engine.fakes import FakeTransport, Harness
from xshathra.model import ClientInfoData
from xshathra.protocol import pusher as p
from xshathra.protocol.codes import DisconnectCode
from xshathra.pusher.session import PusherSession

Json = dict[str, Any]


class PusherTransport(FakeTransport):
    """Records Pusher events (one per line of a frame) instead of Centrifuge replies."""

    codec = p.PUSHER_CODEC
    framing = "fake-pusher"


def events(transport: FakeTransport, name: str) -> list[Json]:
    return [m for m in transport.messages if m.get("event") == name]


def error_message(message: Json) -> str:
    return str(message["data"]["message"]) if message["event"] == "pusher:error" else ""


async def opened(h: Harness, **query: str) -> tuple[PusherSession, PusherTransport]:
    transport = PusherTransport()
    session = PusherSession(h.node, transport)
    await session.open(h.app.client_api_key, {"protocol": "7", **query})
    return session, transport


def send(session: PusherSession, event: str, data: object, channel: str | None = None) -> None:
    message: Json = {"event": event, "data": data}
    if channel is not None:
        message["channel"] = channel
    session.on_message(json.dumps(message).encode())


async def test_open_greets_with_a_socket_id(make_harness: MakeHarness) -> None:
    h = await make_harness()
    session, transport = await opened(h)
    hello = await transport.wait_for(lambda m: m["event"] == "pusher:connection_established")
    assert json.loads(hello["data"]) == {"socket_id": session.client_id, "activity_timeout": 120}


async def test_unknown_key_closes_with_4001(make_harness: MakeHarness) -> None:
    h = await make_harness()
    transport = PusherTransport()
    await PusherSession(h.node, transport).open("xc_nope", {"protocol": "7"})
    assert (await transport.wait_closed())[0] == 4001
    assert events(transport, "pusher:error")[0]["data"]["code"] == 4001


async def test_a_subscribe_sent_before_the_greeting_is_kept(make_harness: MakeHarness) -> None:
    h = await make_harness()
    transport = PusherTransport()
    session = PusherSession(h.node, transport)
    send(session, "pusher:subscribe", {"channel": "early"})
    await session.open(h.app.client_api_key, {"protocol": "7"})
    await transport.wait_for(lambda m: m["event"] == "pusher_internal:subscription_succeeded")
    assert transport.messages[0]["event"] == "pusher:connection_established"


async def test_publications_skip_the_connection_that_sent_them(make_harness: MakeHarness) -> None:
    h = await make_harness()
    a, ta = await opened(h)
    b, tb = await opened(h)
    for session, transport in ((a, ta), (b, tb)):
        send(session, "pusher:subscribe", {"channel": "room"})
        await transport.wait_for(lambda m: m["event"] == "pusher_internal:subscription_succeeded")
    ref = h.ref("room")
    options = h.app.namespace_options("")
    info = ClientInfoData("", a.client_id)
    await h.node.publish(ref, b'{"n":1}', options, info=info, tags={"event": "first"})
    await h.node.publish(ref, b'{"n":2}', options, tags={"event": "second"})
    await ta.wait_for(lambda m: m["event"] == "second")
    await tb.wait_for(lambda m: m["event"] == "second")
    assert [m["event"] for m in ta.messages if m.get("channel") == "room"][1:] == ["second"]
    assert events(tb, "first")[0]["data"] == '{"n":1}'


async def test_presence_members_are_users_not_connections(make_harness: MakeHarness) -> None:
    h = await make_harness()
    key, secret = h.app.client_api_key, h.app.app_secret

    async def join(user: str) -> tuple[PusherSession, PusherTransport]:
        session, transport = await opened(h)
        data = json.dumps({"user_id": user})
        auth = p.channel_auth(key, secret, session.client_id, "presence-x", data)
        send(
            session,
            "pusher:subscribe",
            {"channel": "presence-x", "auth": auth, "channel_data": data},
        )
        await transport.wait_for(lambda m: m["event"] == "pusher_internal:subscription_succeeded")
        return session, transport

    _, watcher = await join("ann")
    bob1, _ = await join("bob")
    bob2, t2 = await join("bob")
    ok = events(t2, "pusher_internal:subscription_succeeded")[0]
    assert json.loads(ok["data"])["presence"]["count"] == 2
    await watcher.wait_for(lambda m: m["event"] == "pusher_internal:member_added")
    bob1.disconnect(DisconnectCode.SHUTDOWN)
    bob2.disconnect(DisconnectCode.SHUTDOWN)
    await watcher.wait_for(lambda m: m["event"] == "pusher_internal:member_removed")
    assert len(events(watcher, "pusher_internal:member_added")) == 1
    assert len(events(watcher, "pusher_internal:member_removed")) == 1


async def test_bad_auth_is_a_subscription_error(make_harness: MakeHarness) -> None:
    h = await make_harness()
    session, transport = await opened(h)
    send(session, "pusher:subscribe", {"channel": "private-a", "auth": "k:bad"})
    error = await transport.wait_for(lambda m: m["event"] == "pusher:subscription_error")
    assert error["data"]["status"] == 401 and not session.subs and transport.closed is None


async def test_engine_codes_close_with_pusher_codes(make_harness: MakeHarness) -> None:
    h = await make_harness()
    session, transport = await opened(h)
    session.disconnect(DisconnectCode.NO_PONG)
    assert (await transport.wait_closed())[0] == 4201


async def test_client_events_are_checked_before_they_go_out(make_harness: MakeHarness) -> None:
    """Refused while the app does not allow them, past 10 KiB, and past 10 per second; a
    refusal is a `pusher:error` and the connection stays."""
    h = await make_harness()
    session, transport = await opened(h)
    auth = p.channel_auth(
        h.app.client_api_key, h.app.app_secret, session.client_id, "private-c", None
    )
    send(session, "pusher:subscribe", {"channel": "private-c", "auth": auth})
    await transport.wait_for(lambda m: m["event"] == "pusher_internal:subscription_succeeded")
    send(session, "client-x", {}, "private-c")
    await transport.wait_for(lambda m: "not enabled" in error_message(m))
    assert session.app is not None
    session.app = session.app.with_changes(pusher_client_events=True)
    send(session, "client-x", {"blob": "x" * (11 * 1024)}, "private-c")
    await transport.wait_for(lambda m: "too large" in error_message(m))
    for i in range(12):
        send(session, "client-x", {"i": i}, "private-c")
    limited = await transport.wait_for(
        lambda m: m["event"] == "pusher:error" and m["data"]["code"] == 4301
    )
    assert "per second" in limited["data"]["message"] and transport.closed is None
