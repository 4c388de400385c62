"""Subscriptions: who may subscribe, the limits, join/leave, and unsubscribing either way."""

from __future__ import annotations

import time

import jwt

from tests.unit.engine.conftest import MakeHarness
from tests.unit.engine.fakes import FlakyPresence, Harness
from xshathra.engine.control import Disconnect, Subscribe, Unsubscribe
from xshathra.tenancy.apps import NamespaceOptions


async def test_public_channel_needs_only_the_connection_token(harness: Harness) -> None:
    """`public:*` is open to any connected client, and reports a stream position."""
    client = await harness.connect()
    result = await client.subscribe("public:lobby")
    assert result["recoverable"] is True and result["epoch"]
    assert harness.node.hub.subscriber_count(harness.ref("public:lobby")) == 1


async def test_private_channel_without_a_token_is_permission_denied(harness: Harness) -> None:
    """A channel outside `public:` needs a subscription token: 103 without one."""
    client = await harness.connect()
    assert await client.error("subscribe", {"channel": "secret"}) == 103
    assert await client.error("subscribe", {"channel": "other:room"}) == 103
    assert harness.node.hub.subscriber_count(harness.ref("secret")) == 0
    assert client.transport.closed is None


async def test_subscription_token_opens_a_private_channel(harness: Harness) -> None:
    """A subscription token for this user and channel lets the client in, with its ttl."""
    client = await harness.connect("u")
    token = harness.tokens.mint_subscription_token(harness.app.app_id, "u", "secret", 120)
    result = await client.subscribe("secret", token=token.token)
    assert result["expires"] is True and 110 <= result["ttl"] <= 120


async def test_subscription_token_for_another_channel_or_user_is_refused(
    harness: Harness,
) -> None:
    """A token minted for another channel, or for another user, is permission denied."""
    client = await harness.connect("u")
    mint = harness.tokens.mint_subscription_token
    other_channel = mint(harness.app.app_id, "u", "other", 60).token
    other_user = mint(harness.app.app_id, "mallory", "secret", 60).token
    assert await client.error("subscribe", {"channel": "secret", "token": other_channel}) == 103
    assert await client.error("subscribe", {"channel": "secret", "token": other_user}) == 103
    assert "secret" not in client.session.subs


async def test_forged_or_expired_subscription_token(harness: Harness) -> None:
    """A subscription token signed with another key is 103; an expired one is 109."""
    client = await harness.connect("u")
    claims = {"sub": "u", "app_id": harness.app.app_id, "channel": "secret"}
    forged = jwt.encode(claims, "f" * 48, "HS256")
    now = int(time.time())
    expired = jwt.encode({**claims, "iat": now - 100, "exp": now - 60}, harness.app.app_secret)
    assert await client.error("subscribe", {"channel": "secret", "token": forged}) == 103
    assert await client.error("subscribe", {"channel": "secret", "token": expired}) == 109


async def test_channels_claim_subscribes_on_connect_and_permits_subscribe(
    harness: Harness,
) -> None:
    """Channels in the connection token's `channels` claim are server-side subscriptions,
    reported in the connect result."""
    client, reply = await harness.connect_reply(harness.token("u", channels=["news", "public:a"]))
    subs = reply["connect"]["subs"]
    assert set(subs) == {"news", "public:a"}
    assert set(client.session.subs) == {"news", "public:a"}
    await harness.publish("news", {"n": 1})
    pub = await client.transport.wait_for(lambda m: "pub" in m.get("push", {}))
    assert pub["push"] == {"channel": "news", "pub": {"data": {"n": 1}}}


async def test_already_subscribed_is_error_105(harness: Harness) -> None:
    """Subscribing twice to one channel is refused with 105; the first one stays."""
    client = await harness.connect()
    await client.subscribe("public:twice")
    assert await client.error("subscribe", {"channel": "public:twice"}) == 105
    assert harness.node.hub.subscriber_count(harness.ref("public:twice")) == 1


async def test_channel_limit_is_error_106(make_harness: MakeHarness) -> None:
    """Past `max_channels_per_connection`, subscribe answers 106 (limit exceeded)."""
    h = await make_harness(max_channels_per_connection=2)
    client = await h.connect()
    await client.subscribe("public:1")
    await client.subscribe("public:2")
    assert await client.error("subscribe", {"channel": "public:3"}) == 106
    assert set(client.session.subs) == {"public:1", "public:2"}


async def test_invalid_channel_name_is_error_107(harness: Harness) -> None:
    """Empty, too long, or badly spelled channel names are bad requests (107)."""
    client = await harness.connect()
    for name in ("", "public:with space", "public:" + "x" * 300, 'public:"q"', "public:é"):
        assert await client.error("subscribe", {"channel": name}) == 107, name
    assert client.session.subs == {}


async def test_channel_name_ending_in_a_newline_is_error_107(harness: Harness) -> None:
    """A newline is not a channel character, at the end of the name as anywhere else: it must
    never reach a backend (a NATS subject or a log line)."""
    client = await harness.connect()
    assert await client.error("subscribe", {"channel": "public:a\n"}) == 107
    assert client.session.subs == {}


async def test_unsubscribe_stops_delivery_and_presence(harness: Harness) -> None:
    """After `unsubscribe`, the client gets no more publications and leaves presence."""
    client = await harness.connect()
    other = await harness.connect("other")
    await client.subscribe("public:u")
    await other.subscribe("public:u")
    await client.result("unsubscribe", {"channel": "public:u"})
    assert harness.node.hub.subscriber_count(harness.ref("public:u")) == 1
    await harness.publish("public:u", "after")
    await other.transport.wait_for(
        lambda m: m.get("push", {}).get("pub", {}).get("data") == "after"
    )
    assert client.transport.pushes("pub") == []
    stats = await other.result("presence_stats", {"channel": "public:u"})
    assert stats == {"num_clients": 1, "num_users": 1}


async def test_unsubscribe_from_a_channel_not_subscribed_is_harmless(harness: Harness) -> None:
    """Unsubscribing where there is no subscription answers with an empty result."""
    client = await harness.connect()
    assert await client.result("unsubscribe", {"channel": "public:none"}) == {}


async def test_join_and_leave_pushes_reach_other_subscribers(harness: Harness) -> None:
    """In `public:` (join/leave forced on) a subscriber sees others join and leave."""
    watcher = await harness.connect("watcher")
    await watcher.subscribe("public:jl")
    joiner = await harness.connect("joiner", info={"name": "J"})
    await joiner.subscribe("public:jl")
    join = await watcher.transport.wait_for(lambda m: "join" in m.get("push", {}))
    assert join["push"]["channel"] == "public:jl"
    assert join["push"]["join"]["info"] == {
        "user": "joiner",
        "client": joiner.session.client_id,
        "conn_info": {"name": "J"},
    }
    await joiner.result("unsubscribe", {"channel": "public:jl"})
    leave = await watcher.transport.wait_for(lambda m: "leave" in m.get("push", {}))
    assert leave["push"]["leave"]["info"]["client"] == joiner.session.client_id


async def test_leave_is_pushed_when_a_subscriber_disconnects(harness: Harness) -> None:
    """A closed connection leaves its channels: others get `leave`, presence forgets it."""
    watcher = await harness.connect("watcher")
    await watcher.subscribe("public:gone")
    goner = await harness.connect("goner")
    await goner.subscribe("public:gone")
    goner.session.disconnect(3000)
    await watcher.transport.wait_for(lambda m: "leave" in m.get("push", {}))
    assert await harness.node.presence_stats(harness.ref("public:gone")) == (1, 1)


async def test_join_leave_is_opt_in_where_not_forced(make_harness: MakeHarness) -> None:
    """With join_leave on but not forced, only subscribers that asked (`join_leave`) get them."""
    h = await make_harness(
        namespaces={
            "room": NamespaceOptions(join_leave=True, allow_subscribe_for_client=True),
        }
    )
    quiet, asking = await h.connect("quiet"), await h.connect("asking")
    await quiet.subscribe("room:1")
    await asking.subscribe("room:1", join_leave=True)
    joiner = await h.connect("joiner")
    await joiner.subscribe("room:1")
    await asking.transport.wait_for(
        lambda m: m.get("push", {}).get("join", {}).get("info", {}).get("user") == "joiner"
    )
    await h.publish("room:1", "marker")  # everything before it has been delivered
    await quiet.transport.wait_for(lambda m: "pub" in m.get("push", {}))
    assert quiet.transport.pushes("join") == []


async def test_server_unsubscribe_pushes_code_2000(harness: Harness) -> None:
    """A server-side unsubscribe (control message) tells the client with code 2000 and stops
    delivery."""
    client = await harness.connect("victim")
    await client.subscribe("public:kick")
    await harness.node.send_control(
        Unsubscribe(app_id=harness.app.app_id, user="victim", channel="public:kick")
    )
    push = await client.transport.wait_for(lambda m: "unsubscribe" in m.get("push", {}))
    assert push["push"]["channel"] == "public:kick"
    assert push["push"]["unsubscribe"]["code"] == 2000
    assert "public:kick" not in client.session.subs
    assert harness.node.hub.subscriber_count(harness.ref("public:kick")) == 0
    assert client.transport.closed is None


async def test_server_subscribe_pushes_subscribe_then_delivers(harness: Harness) -> None:
    """A server-side subscribe pushes `subscribe` with the stream position; publications
    follow."""
    client = await harness.connect("target")
    await harness.node.send_control(
        Subscribe(app_id=harness.app.app_id, user="target", channel="public:srv")
    )
    push = await client.transport.wait_for(lambda m: "subscribe" in m.get("push", {}))
    assert push["push"]["channel"] == "public:srv"
    assert push["push"]["subscribe"]["recoverable"] is True
    await harness.publish("public:srv", 1)
    pub = await client.transport.wait_for(lambda m: "pub" in m.get("push", {}))
    assert pub["push"]["pub"]["offset"] == 1


async def test_server_disconnect_uses_the_given_code(harness: Harness) -> None:
    """A disconnect control closes the user's connections with its code (default 3503)."""
    a, b = await harness.connect("dropped"), await harness.connect("dropped")
    keep = await harness.connect("kept")
    await harness.node.send_control(Disconnect(app_id=harness.app.app_id, user="dropped"))
    assert (await a.transport.wait_closed())[0] == 3503
    assert (await b.transport.wait_closed())[0] == 3503
    await harness.node.send_control(
        Disconnect(
            app_id=harness.app.app_id,
            client=keep.session.client_id,
            code=4001,
            reason="custom",
        )
    )
    assert await keep.transport.wait_closed() == (4001, "custom")


async def test_subscription_token_expiry_unsubscribes_with_2501(
    make_harness: MakeHarness,
) -> None:
    """When a subscription token runs out (and no sub_refresh came), the server unsubscribes
    the client with 2501 so that it resubscribes with a new token."""
    h = await make_harness(expired_close_delay=0)
    client = await h.connect("u")
    token = h.tokens.mint_subscription_token(h.app.app_id, "u", "timed", 1).token
    await client.subscribe("timed", token=token)
    push = await client.transport.wait_for(lambda m: "unsubscribe" in m.get("push", {}))
    assert push["push"] == {
        "channel": "timed",
        "unsubscribe": {"code": 2501, "reason": "subscription expired"},
    }
    assert client.transport.closed is None


async def test_sub_refresh_extends_a_subscription(harness: Harness) -> None:
    """`sub_refresh` with a new token for the same channel and user answers its ttl; a token for
    another channel is refused (103)."""
    client = await harness.connect("u")
    mint = harness.tokens.mint_subscription_token
    await client.subscribe("secret", token=mint(harness.app.app_id, "u", "secret", 60).token)
    result = await client.result(
        "sub_refresh",
        {"channel": "secret", "token": mint(harness.app.app_id, "u", "secret", 900).token},
    )
    assert result["expires"] is True and 890 <= result["ttl"] <= 900
    wrong = mint(harness.app.app_id, "u", "elsewhere", 900).token
    assert await client.error("sub_refresh", {"channel": "secret", "token": wrong}) == 103


async def test_subscribe_failing_on_a_backend_can_be_retried(make_harness: MakeHarness) -> None:
    """When the presence store fails during subscribe, the client gets a temporary error and
    nothing half-made stays behind: retrying subscribes (not 105) and publications arrive."""
    presence = FlakyPresence()
    h = await make_harness(presence=presence)
    client = await h.connect()
    presence.fail_adds = 1
    reply = await client.call("subscribe", {"channel": "public:flaky"})
    assert reply["error"]["code"] == 100 and reply["error"]["temporary"] is True
    assert "public:flaky" not in client.session.subs
    assert h.node.hub.subscriber_count(h.ref("public:flaky")) == 0
    await client.subscribe("public:flaky")
    await h.publish("public:flaky", "after-retry")
    pub = await client.transport.wait_for(lambda m: "pub" in m.get("push", {}))
    assert pub["push"]["pub"]["data"] == "after-retry"


async def test_an_unencodable_user_id_never_breaks_other_clients(harness: Harness) -> None:
    """A connection token whose `sub` holds a lone surrogate (valid in JSON escapes, not in
    UTF-8) must not let that user poison a channel: other subscribers' presence still works
    and they stay connected."""
    watcher = await harness.connect("watcher")
    await watcher.subscribe("public:room")
    token = jwt.encode(
        {"sub": "m\ud800", "app_id": harness.app.app_id}, harness.app.app_secret, "HS256"
    )
    mallory, _ = await harness.connect_reply(token)
    if mallory.transport.closed is None:
        mallory.send({"id": 50, "subscribe": {"channel": "public:room"}})
        await mallory.transport.until(
            lambda: (
                mallory.transport.closed is not None
                or any(m.get("id") == 50 for m in mallory.transport.messages)
            )
        )
    watcher.send({"id": 60, "presence": {"channel": "public:room"}})
    await watcher.transport.until(
        lambda: (
            watcher.transport.closed is not None
            or any(m.get("id") == 60 for m in watcher.transport.messages)
        )
    )
    assert watcher.transport.closed is None
    reply = await watcher.transport.wait_for(lambda m: m.get("id") == 60)
    assert list(reply["presence"]["presence"].values()) == [
        {"user": "watcher", "client": watcher.session.client_id}
    ]
