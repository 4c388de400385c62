"""Connecting: the connect reply, token checks, app status, Origin, what comes before connect."""

from __future__ import annotations

import time

import jwt

from tests.unit.engine.conftest import MakeHarness, create_app
from tests.unit.engine.fakes import Harness
from xshathra.brokers.memory import MemoryBroker
from xshathra.model import ChannelRef, HistoryOptions, HistoryResult
from xshathra.storage.database import Database


async def test_connect_reply_carries_client_version_ping_and_pong(harness: Harness) -> None:
    """The connect result names the client id and node version and asks for pongs."""
    _, reply = await harness.connect_reply(harness.token("alice", ttl=600))
    result = reply["connect"]
    assert result["client"] and result["client"] != "00000000-0000-0000-0000-000000000000"
    assert result["version"] == harness.node.version
    assert result["ping"] == harness.node.options.ping_interval
    assert result["pong"] is True
    assert result["expires"] is True
    assert 590 <= result["ttl"] <= 600


async def test_connect_without_exp_does_not_expire(harness: Harness) -> None:
    """A token without `exp` opens a connection that never expires: no `expires`, no `ttl`."""
    token = jwt.encode({"sub": "u", "app_id": harness.app.app_id}, harness.app.app_secret, "HS256")
    _, reply = await harness.connect_reply(token)
    assert "expires" not in reply["connect"] and "ttl" not in reply["connect"]


async def test_each_connection_gets_its_own_client_id(harness: Harness) -> None:
    """Two connections of one user are two clients."""
    a, b = await harness.connect("u"), await harness.connect("u")
    assert a.session.client_id != b.session.client_id


async def test_token_signed_with_the_app_secret_is_accepted(harness: Harness) -> None:
    """An app's backend may sign connection tokens with its own `app_secret`."""
    token = jwt.encode(
        {"sub": "backend-user", "app_id": harness.app.app_id, "exp": int(time.time()) + 60},
        harness.app.app_secret,
        "HS256",
    )
    client, reply = await harness.connect_reply(token)
    assert "connect" in reply
    assert client.session.user == "backend-user"


async def test_command_before_connect_closes_with_3501(harness: Harness) -> None:
    """Anything but `connect` first is a bad request: the client is told not to reconnect."""
    client = harness.open()
    client.send({"id": 1, "subscribe": {"channel": "public:x"}})
    code, _ = await client.transport.wait_closed()
    assert code == 3501
    assert not client.transport.messages


async def test_malformed_frame_closes_with_3501(harness: Harness) -> None:
    """A frame that is not JSON commands closes the connection as a bad request."""
    client = await harness.connect()
    client.session.on_message(b'{"id":2,"ping":{}')
    assert (await client.transport.wait_closed())[0] == 3501


async def test_deeply_nested_payload_is_a_bad_request_not_a_server_error(
    harness: Harness,
) -> None:
    """A 2 KB frame nesting `data` a thousand levels deep is refused as malformed (3501), not
    answered with a server error (3004) that tells the client to reconnect and retry."""
    client = await harness.connect()
    depth = 1000
    client.session.on_message(
        b'{"id":2,"publish":{"channel":"public:x","data":' + b"[" * depth + b"]" * depth + b"}}"
    )
    assert (await client.transport.wait_closed())[0] == 3501


async def test_second_connect_is_a_bad_request(harness: Harness) -> None:
    """`connect` on a connected session closes it with 3501."""
    client = await harness.connect()
    client.send({"id": 2, "connect": {"token": harness.token()}})
    assert (await client.transport.wait_closed())[0] == 3501


async def test_expired_token_gets_error_109_and_stays_open(harness: Harness) -> None:
    """An expired token is answered with error 109 so the client fetches a new one."""
    now = int(time.time())
    token = jwt.encode(
        {"sub": "u", "app_id": harness.app.app_id, "iat": now - 120, "exp": now - 60},
        harness.app.app_secret,
        "HS256",
    )
    client, reply = await harness.connect_reply(token)
    assert reply["error"]["code"] == 109
    assert client.transport.closed is None
    # The same session may then connect with a fresh token.
    client.send({"id": 2, "connect": {"token": harness.token()}})
    assert "connect" in await client.transport.wait_for(lambda m: m.get("id") == 2)


async def test_forged_token_closes_with_3500(harness: Harness) -> None:
    """A token naming a real app but signed with another key is an invalid token (3500)."""
    forged = jwt.encode({"sub": "u", "app_id": harness.app.app_id}, "x" * 48, "HS256")
    client, reply = await harness.connect_reply(forged)
    assert not reply
    assert client.transport.closed is not None and client.transport.closed[0] == 3500


async def test_garbage_and_missing_tokens_close_with_3500(harness: Harness) -> None:
    """No token, a non-JWT, and a JWT for an unknown app are all invalid tokens."""
    unknown_app = jwt.encode({"sub": "u", "app_id": "no_such_app"}, "x" * 48, "HS256")
    for token in ("", "not-a-jwt", unknown_app):
        client, _ = await harness.connect_reply(token)
        assert client.transport.closed is not None and client.transport.closed[0] == 3500


async def test_token_of_another_app_is_refused(harness: Harness, db: Database) -> None:
    """A token signed with app B's secret but claiming app A does not open A."""
    other = await create_app(db)
    token = jwt.encode({"sub": "u", "app_id": harness.app.app_id}, other.app_secret, "HS256")
    client, _ = await harness.connect_reply(token)
    assert client.transport.closed is not None and client.transport.closed[0] == 3500


async def test_subscription_token_cannot_open_a_connection(harness: Harness) -> None:
    """A subscription token (it has `channel`) is refused at connect."""
    token = harness.tokens.mint_subscription_token(harness.app.app_id, "u", "secret", 60).token
    client, _ = await harness.connect_reply(token)
    assert client.transport.closed is not None and client.transport.closed[0] == 3500


async def test_disabled_app_closes_with_3507(harness: Harness, db: Database) -> None:
    """A disabled application's tokens open nothing: permission denied, do not reconnect."""
    disabled = await create_app(db, status=False)
    client, reply = await harness.connect_reply(harness.token(app=disabled))
    assert not reply
    assert client.transport.closed is not None and client.transport.closed[0] == 3507


async def test_app_disabled_while_connected_closes_its_connections(
    harness: Harness, db: Database
) -> None:
    """Disabling an app (app_changed control) closes its open connections with 3507."""
    from xshathra.engine.control import AppChanged

    client = await harness.connect()
    await db.apps.update_app(harness.app.app_id, {"status": False})
    await harness.node.send_control(AppChanged(app_id=harness.app.app_id))
    assert (await client.transport.wait_closed())[0] == 3507


async def test_origin_must_match_allowed_domain_or_a_subdomain(
    make_harness: MakeHarness,
) -> None:
    """With `allowed_domain`, browsers from the domain or a subdomain connect; others get 3507;
    a connection without Origin (not a browser) is not restricted."""
    h = await make_harness(allowed_domain="example.com")
    token = h.token()
    for origin in (
        "https://example.com",
        "https://chat.example.com",
        "http://EXAMPLE.com:8080",
        None,
    ):
        client, reply = await h.connect_reply(token, origin=origin)
        assert "connect" in reply, origin
    for origin in (
        "https://evil.com",
        "https://notexample.com",
        "https://example.com.evil.com",
        "null",
    ):
        client, reply = await h.connect_reply(token, origin=origin)
        assert not reply, origin
        assert client.transport.closed is not None and client.transport.closed[0] == 3507


async def test_connection_limit_per_app_closes_with_3504(make_harness: MakeHarness) -> None:
    """Past `max_connections_per_app`, a connect is refused with the connection-limit code."""
    h = await make_harness(max_connections_per_app=2)
    await h.connect("a")
    await h.connect("b")
    client, reply = await h.connect_reply(h.token("c"))
    assert not reply
    assert client.transport.closed is not None and client.transport.closed[0] == 3504


async def test_no_connect_within_the_timeout_closes_as_stale(make_harness: MakeHarness) -> None:
    """A socket that never sends `connect` is closed with 3502 after `connect_timeout`."""
    h = await make_harness(connect_timeout=0.2)
    client = h.open()
    assert (await client.transport.wait_closed())[0] == 3502


async def test_refresh_extends_the_connection(harness: Harness) -> None:
    """`refresh` with a fresh token answers with the new ttl; another user's token is refused."""
    client = await harness.connect("u", ttl=60)
    result = await client.result("refresh", {"token": harness.token("u", ttl=3000)})
    assert result["expires"] is True and 2990 <= result["ttl"] <= 3000
    assert result["client"] == client.session.client_id
    client.send({"id": 99, "refresh": {"token": harness.token("mallory", ttl=3000)}})
    assert (await client.transport.wait_closed())[0] == 3500


class _HistoryDown(MemoryBroker):
    """A broker whose history is unreachable (a shared broker that just went away)."""

    async def history(self, ref: ChannelRef, opts: HistoryOptions) -> HistoryResult:
        raise ConnectionError("history unreachable")


async def test_a_connect_that_fails_half_way_ends_with_a_reconnect_code(
    make_harness: MakeHarness,
) -> None:
    """A backend failing after the connection was registered (here: the server-side
    subscription's history read) must not leave the client half connected: it is closed with
    3004, and reconnects; nothing of it stays registered."""
    h = await make_harness(broker=_HistoryDown())
    client, _ = await h.connect_reply(h.token("u", channels=["public:feed"]))
    code, _ = await client.transport.wait_closed(timeout=4)
    assert code == 3004
    assert h.node.hub.connection_count(h.app.app_id) == 0
