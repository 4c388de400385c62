"""Time and rate: connection expiry, server refresh, the ping sweep, command rate limits."""

from __future__ import annotations

import time

import pytest

from tests.unit.engine.conftest import MakeHarness
from tests.unit.engine.fakes import Harness
from xshathra.engine.control import Refresh


async def test_connection_expires_with_3005(make_harness: MakeHarness) -> None:
    """A connection whose token runs out (and is not refreshed) is closed with 3005, which
    tells the client to reconnect with a new token."""
    h = await make_harness(expired_close_delay=0)
    client, reply = await h.connect_reply(h.token("u", ttl=1))
    assert reply["connect"]["expires"] is True and reply["connect"]["ttl"] == 1
    assert client.transport.closed is None
    code, _ = await client.transport.wait_closed(timeout=4)
    assert code == 3005


async def test_refresh_before_expiry_keeps_the_connection(make_harness: MakeHarness) -> None:
    """A refresh with a longer token moves the expiry: the old deadline passes harmlessly."""
    h = await make_harness(expired_close_delay=0)
    client = await h.connect("u", ttl=1)
    await client.result("refresh", {"token": h.token("u", ttl=600)})
    assert client.session.expires_at is not None and client.session.expires_at > time.time() + 500
    # The first token's deadline (at most 1 s away) passes without a close.
    with pytest.raises(TimeoutError):
        await client.transport.wait_closed(timeout=1.5)


async def test_server_refresh_pushes_the_new_ttl(harness: Harness) -> None:
    """A server refresh (control) pushes `refresh` with the new expiry; 0 means never."""
    client = await harness.connect("u", ttl=60)
    expire_at = int(time.time()) + 3600
    await harness.node.send_control(
        Refresh(app_id=harness.app.app_id, user="u", expire_at=expire_at)
    )
    push = await client.transport.wait_for(lambda m: "refresh" in m.get("push", {}))
    assert push["push"]["refresh"]["expires"] is True
    assert 3590 <= push["push"]["refresh"]["ttl"] <= 3600
    assert client.session.expires_at == expire_at
    await harness.node.send_control(Refresh(app_id=harness.app.app_id, user="u", expire_at=0))
    await client.transport.until(lambda: len(client.transport.pushes("refresh")) == 2)
    assert client.transport.pushes("refresh")[-1] == {}
    assert client.session.expires_at is None


async def test_server_refresh_in_the_past_expires_the_connection(harness: Harness) -> None:
    """A server refresh with -1 expires the connection at once (3005)."""
    client = await harness.connect("u")
    await harness.node.send_control(Refresh(app_id=harness.app.app_id, user="u", expire_at=-1))
    assert (await client.transport.wait_closed())[0] == 3005


async def test_ping_sweep_pings_then_closes_those_without_pong(make_harness: MakeHarness) -> None:
    """Each sweep writes one shared `{}` ping frame to every connection; a client that answered
    with `{}` is pinged again at the next sweep, one that did not is closed with 3012."""
    h = await make_harness(ping_interval=1)
    answering, silent = await h.connect("a"), await h.connect("s")
    await answering.transport.wait_for(lambda m: m == {}, timeout=3)
    answering.send({})
    await silent.transport.wait_for(lambda m: m == {}, timeout=3)
    ping_a = next(f for f in answering.transport.frames if f.endswith(b"{}"))
    ping_s = next(f for f in silent.transport.frames if f.endswith(b"{}"))
    assert ping_a is ping_s  # built once for everyone
    assert (await silent.transport.wait_closed(timeout=3))[0] == 3012
    await answering.transport.until(
        lambda: sum(1 for m in answering.transport.messages if m == {}) >= 2, timeout=3
    )
    assert answering.transport.closed is None


async def test_command_rate_limit_closes_with_3013(make_harness: MakeHarness) -> None:
    """Commands beyond the per-connection burst close the connection with 3013."""
    h = await make_harness(client_command_burst=5, client_command_rate=0.001)
    client = await h.connect()
    client.send(*({"id": i, "ping": {}} for i in range(10, 30)))
    assert (await client.transport.wait_closed())[0] == 3013
    answered = [m["id"] for m in client.transport.messages if m.get("id", 0) >= 10]
    assert answered == [10, 11, 12, 13]  # connect took one of the five


async def test_commands_within_the_rate_are_served(make_harness: MakeHarness) -> None:
    """A burst within the limit is served entirely."""
    h = await make_harness(client_command_burst=50, client_command_rate=0.001)
    client = await h.connect()
    client.send(*({"id": i, "ping": {}} for i in range(10, 30)))
    await client.transport.wait_for(lambda m: m.get("id") == 29)
    assert client.transport.closed is None


async def test_too_many_queued_frames_close_with_3013(harness: Harness) -> None:
    """Frames arriving faster than they are handled are bounded: past the inbox limit the
    connection is closed with 3013, not queued without end."""
    client = await harness.connect()
    for i in range(200):
        client.session.on_message(b'{"id":%d,"ping":{}}' % (i + 10))
    assert (await client.transport.wait_closed())[0] == 3013
