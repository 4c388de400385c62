"""Webhook controls: `PUT /api/webhooks/:id` (url, events, rooms globs, headers, enabled),
`POST /api/webhooks/:id/test`, and leaves held `XSHATHRA_WEBHOOK_LEAVE_DELAY` seconds so that a
page reload reports nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_access_controls import connected
from tests.integration.test_cluster import subscribe
from tests.integration.test_webhooks import broadcast, register
from tests.support.clients import realtime_token
from tests.support.receiver import Receiver
from tests.support.server import ServerProcess, free_port, running_server
from xshathra.outbound.signing import verify

Json = dict[str, Any]
LEAVE_DELAY = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"XSHATHRA_WEBHOOK_LEAVE_DELAY": str(LEAVE_DELAY)}
    with running_server(tmp_path_factory.mktemp("hooks"), env=env) as srv:
        yield srv


def put(srv: ServerProcess, app: Json, hook: str, **body: Any) -> httpx.Response:
    return httpx.put(
        f"{srv.base_url}/api/webhooks/{hook}",
        json=body,
        headers={"X-API-Key": str(app["api_key"])},
    )


def test_put_changes_rooms_headers_events_and_url(server: ServerProcess) -> None:
    app = server.create_app(name="hook-put")
    with Receiver().running() as first, Receiver().running() as second:
        hook = register(server, app, first.url, ["news"])
        r = put(
            server,
            app,
            hook,
            url=second.url,
            events=["news", "alert"],
            rooms=["sport:*", "exact"],
            headers={"X-Tenant": "t-42"},
        )
        assert r.status_code == 200, r.text
        shown = r.json()["webhook"]
        assert shown["url"] == second.url and shown["rooms"] == ["sport:*", "exact"]
        assert shown["headers"] == {"X-Tenant": "t-42"} and shown["events"] == ["news", "alert"]
        broadcast(server, app, "weather:1", "news", 0)  # a room it does not want
        broadcast(server, app, "sport:football", "news", 1)
        broadcast(server, app, "exact", "alert", 2)
        got = second.wait_for(2)
        assert [g.json()["data"] for g in got] == [1, 2]
        assert all(g.headers["X-Tenant"] == "t-42" for g in got)
        assert not first.requests
        # Paused: nothing more goes out; resumed, it does again.
        assert put(server, app, hook, enabled=False).json()["webhook"]["enabled"] is False
        broadcast(server, app, "exact", "alert", 3)
        assert put(server, app, hook, enabled=True).status_code == 200
        broadcast(server, app, "exact", "alert", 4)
        got = second.wait_for(3)
        assert got[2].json()["data"] == 4 and len(second.requests) == 3


@pytest.mark.parametrize(
    "body",
    [
        {"rooms": ["has space"]},
        {"rooms": ["r"] * 101},
        {"headers": {"Content-Type": "text/plain"}},
        {"headers": {"X-Xshathra-Signature": "forged"}},
        {"headers": {"X-Ok": "two\r\nlines"}},
        {"headers": {"bad name": "v"}},
        {"events": []},
        {"url": "ftp://example.com/"},
    ],
)
def test_put_refuses_bad_values(server: ServerProcess, body: Json) -> None:
    app = server.create_app(name="hook-put-bad")
    with Receiver().running() as rx:
        hook = register(server, app, rx.url, ["*"])
        r = put(server, app, hook, **body)
        assert r.status_code == 400 and r.json()["success"] is False, r.text


def test_put_and_test_reach_only_the_apps_own_webhooks(server: ServerProcess) -> None:
    owner, other = server.create_app(name="owner"), server.create_app(name="other")
    with Receiver().running() as rx:
        hook = register(server, owner, rx.url, ["*"])
        assert put(server, other, hook, enabled=False).status_code == 404
        r = httpx.post(
            f"{server.base_url}/api/webhooks/{hook}/test",
            headers={"X-API-Key": str(other["api_key"])},
        )
        assert r.status_code == 404 and not rx.requests


def test_test_endpoint_sends_a_signed_test_event(server: ServerProcess) -> None:
    app = server.create_app(name="hook-test")
    with Receiver(statuses=[200, 503]).running() as rx:
        hook = register(server, app, rx.url, ["news"], secret="whsec-for-the-test")
        put(server, app, hook, headers={"X-Custom": "yes"})
        url = f"{server.base_url}/api/webhooks/{hook}/test"
        headers = {"X-API-Key": str(app["api_key"])}
        r = httpx.post(url, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"success": True, "delivered": True, "status": 200, "error": None}
        (got,) = rx.wait_for(1)
        assert got.json()["event"] == "test" and got.headers["X-Custom"] == "yes"
        assert verify(
            "whsec-for-the-test",
            got.headers["X-Xshathra-Timestamp"],
            got.body,
            got.headers["X-Xshathra-Signature"],
        )
        second = httpx.post(url, headers=headers).json()
        assert second["delivered"] is False and second["status"] == 503
        # Both attempts are listed among the webhook's deliveries, as the dashboard shows them.
        listed = httpx.get(
            f"{server.base_url}/api/webhooks/{hook}/deliveries", headers=headers
        ).json()
        assert [d["status"] for d in listed["deliveries"] if d["event"] == "test"] == [
            "failed",
            "delivered",
        ], listed
    # Nobody listening: the answer says why.
    hook2 = register(server, app, f"http://127.0.0.1:{free_port()}/none", ["news"])
    r = httpx.post(f"{server.base_url}/api/webhooks/{hook2}/test", headers=headers).json()
    assert r["delivered"] is False and r["status"] is None and r["error"]


async def test_a_reload_within_the_leave_delay_reports_nothing(server: ServerProcess) -> None:
    app = server.create_app(name="reload")
    with Receiver().running() as rx:
        register(server, app, rx.url, ["user-joined", "user-left", "room-occupied", "room-vacated"])
        first = await connected(server, realtime_token(server, app, "rita"))
        await subscribe(first, "public:page")
        got = await asyncio.to_thread(rx.wait_for, 2)
        assert sorted(g.json()["event"] for g in got) == ["room-occupied", "user-joined"]
        await first.close()  # the reload: gone, and back well within the delay
        again = await connected(server, realtime_token(server, app, "rita"))
        await subscribe(again, "public:page")
        await again.close()  # and now gone for good
        got = await asyncio.to_thread(rx.wait_for, 4, 10 * LEAVE_DELAY)
        assert sorted(g.json()["event"] for g in got[2:]) == ["room-vacated", "user-left"]
        assert len(rx.requests) == 4


def test_leaves_are_reported_when_the_node_stops(tmp_path: Path) -> None:
    """A node stopping reports the leaves it still holds instead of losing them."""
    env = {"XSHATHRA_WEBHOOK_LEAVE_DELAY": "60"}
    with Receiver().running() as rx:
        with running_server(tmp_path, env=env) as srv:
            app = srv.create_app(name="stopping")
            register(srv, app, rx.url, ["user-left"])

            async def visit() -> None:
                ws = await connected(srv, realtime_token(srv, app, "sam"))
                await subscribe(ws, "public:x")
                await ws.close()

            asyncio.run(visit())
        (got,) = rx.wait_for(1, 30)
        assert got.json()["event"] == "user-left" and got.json()["user_id"] == "sam"
