"""Applications under attack from their own leaked key, against a real node on SQLite and on
PostgreSQL: updates never undo the admin's key regeneration, suspension or rate limit (H2), an
app key cannot raise its own rate limit past the operator's ceiling (M7), and what a disabled
app may still do (only the admin re-enables it); and that a deleted app leaves nothing behind
for a new tenant to inherit, since its app_id is never given out again (M4)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.integration.test_engine_bad_input import closed_with, connect
from tests.support.clients import app_signed_token, realtime_token
from tests.support.server import ServerProcess, running_server
from tests.support.services import REDIS_HOST, REDIS_PORT, ensure_service, postgres_database

Json = dict[str, Any]
WORKERS = 8
DEADLINE = 20.0


@pytest.fixture
def srv(server_any_db: ServerProcess) -> ServerProcess:
    return server_any_db


def key(app: Json) -> dict[str, str]:
    return {"X-API-Key": str(app["api_key"])}


def assert_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and isinstance(body["error"], str) and body["error"]
    return str(body["error"])


async def _under_flood(
    srv: ServerProcess, app: Json, admin_action: Callable[[httpx.AsyncClient], Awaitable[None]]
) -> None:
    """WORKERS loops PUT the app's name with its (leaked) key while the admin acts once in
    the middle; returns when every PUT, including those in flight at the admin's moment, has
    been answered."""
    url = f"/api/applications/{app['app_id']}"
    answered = 0
    target = 4 * WORKERS  # answers to wait for before the admin acts, then after it
    reached, stop = asyncio.Event(), asyncio.Event()
    statuses: set[int] = set()

    async def worker(http: httpx.AsyncClient, n: int) -> None:
        nonlocal answered
        i = 0
        while not stop.is_set():
            i += 1
            r = await http.put(url, headers=key(app), json={"name": f"leaked {n}.{i}"})
            statuses.add(r.status_code)
            assert r.status_code in (200, 401, 403, 429), r.text
            answered += 1
            if answered >= target:
                reached.set()

    async with (
        httpx.AsyncClient(base_url=srv.base_url, timeout=10) as http,
        asyncio.timeout(DEADLINE),
        asyncio.TaskGroup() as group,
    ):
        for n in range(WORKERS):
            group.create_task(worker(http, n))
        await reached.wait()
        await admin_action(http)
        # Keep the flood going until the workers have sent as many requests again.
        reached.clear()
        target = answered + 4 * WORKERS
        await reached.wait()
        stop.set()
    assert 200 in statuses  # the flood did reach the update path


async def test_leaked_key_cannot_undo_regeneration(srv: ServerProcess) -> None:
    """H2: after the admin regenerates the key, the old key stays refused whatever PUTs it
    had in flight."""
    app = srv.create_app(name="leaky", rate_limit=1_000_000)
    fresh: list[str] = []

    async def regenerate(http: httpx.AsyncClient) -> None:
        r = await http.post(
            f"/api/applications/{app['app_id']}/regenerate-api-key", headers=srv.admin_headers()
        )
        assert r.status_code == 200, r.text
        fresh.append(r.json()["api_key"])

    await _under_flood(srv, app, regenerate)
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=10) as http:
        assert_error(await http.get("/api/applications", headers=key(app)), 401)
        r = await http.get("/api/applications", headers={"X-API-Key": fresh[0]})
        assert r.status_code == 200, r.text


async def test_leaked_key_cannot_undo_suspension(srv: ServerProcess) -> None:
    """H2: the admin's `status: false` stays false while the app's key keeps updating."""
    app = srv.create_app(name="suspended", rate_limit=1_000_000)

    async def suspend(http: httpx.AsyncClient) -> None:
        r = await http.put(
            f"/api/applications/{app['app_id']}",
            headers=srv.admin_headers(),
            json={"status": False},
        )
        assert r.status_code == 200, r.text

    await _under_flood(srv, app, suspend)
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=10) as http:
        r = await http.get(
            "/api/applications", params={"app_id": str(app["app_id"])}, headers=srv.admin_headers()
        )
        assert r.json()["application"]["status"] is False, r.text
        assert_error(await http.get("/api/applications", headers=key(app)), 403)


async def test_leaked_key_cannot_undo_the_admins_rate_limit(srv: ServerProcess) -> None:
    """H2: a rate limit the admin sets is not written over by the app's concurrent updates
    of other fields."""
    app = srv.create_app(name="throttled", rate_limit=1_000_000)

    async def throttle(http: httpx.AsyncClient) -> None:
        r = await http.put(
            f"/api/applications/{app['app_id']}",
            headers=srv.admin_headers(),
            json={"rate_limit": 777_777},
        )
        assert r.status_code == 200, r.text

    await _under_flood(srv, app, throttle)
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=10) as http:
        r = await http.get(
            "/api/applications", params={"app_id": str(app["app_id"])}, headers=srv.admin_headers()
        )
        got = r.json()["application"]
        assert got["rate_limit"] == 777_777, r.text
        assert got["name"].startswith("leaked ")  # the app's own changes did land


async def _refused_within(node: ServerProcess, headers: dict[str, str], status: int) -> None:
    """Until `node` answers `status` to these headers: another node's change reaches it by a
    control message, on the broker's schedule."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    async with httpx.AsyncClient(base_url=node.base_url, timeout=10) as http:
        while (await http.get("/api/applications", headers=headers)).status_code != status:
            assert loop.time() < deadline, f"{node.base_url} never answered {status}"
            await asyncio.sleep(0.05)  # the control message travels through Redis


async def test_two_nodes_a_leaked_key_on_one_cannot_undo_the_admin_on_the_other(
    tmp_path: Path,
) -> None:
    """H2 across nodes (PostgreSQL + Redis): the leaked key floods node B while the admin
    regenerates the key and suspends the app on node A; afterwards the old key is refused on
    both nodes and the app stays suspended."""
    ensure_service("redis")
    broker = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
    env = {"XSHATHRA_BROKER_PREFIX": f"xs_it_{secrets.token_hex(4)}"}
    with (
        postgres_database() as url,
        running_server(tmp_path / "a", database_url=url, broker_url=broker, env=env) as a,
        running_server(
            tmp_path / "b", database_url=url, broker_url=broker, env=env, admin_key=a.admin_key
        ) as b,
    ):
        app = a.create_app(name="two-node leak", rate_limit=1_000_000)
        fresh: list[str] = []

        async def regenerate_and_suspend(_: httpx.AsyncClient) -> None:
            async with httpx.AsyncClient(base_url=a.base_url, timeout=10) as http:
                url = f"/api/applications/{app['app_id']}"
                r = await http.post(f"{url}/regenerate-api-key", headers=a.admin_headers())
                assert r.status_code == 200, r.text
                fresh.append(r.json()["api_key"])
                r = await http.put(url, headers=a.admin_headers(), json={"status": False})
                assert r.status_code == 200, r.text

        await _under_flood(b, app, regenerate_and_suspend)
        for node in (a, b):
            await _refused_within(node, key(app), 401)
            await _refused_within(node, {"X-API-Key": fresh[0]}, 403)
        r = httpx.get(
            f"{a.base_url}/api/applications",
            params={"app_id": str(app["app_id"])},
            headers=a.admin_headers(),
        )
        assert r.json()["application"]["status"] is False, r.text


def test_an_app_key_cannot_lift_its_rate_limit_past_the_ceiling(srv: ServerProcess) -> None:
    """M7: with its own key an app sets rate_limit up to the operator's ceiling (default
    1000), a 400 naming the ceiling above it; the admin key may set any value."""
    app = srv.create_app(name="greedy", rate_limit=10)
    url = f"{srv.base_url}/api/applications/{app['app_id']}"
    error = assert_error(httpx.put(url, headers=key(app), json={"rate_limit": 1_000_000}), 400)
    assert "1000" in error and "1000000" not in error
    assert_error(httpx.put(url, headers=key(app), json={"rate_limit": 1001}), 400)
    r = httpx.put(url, headers=key(app), json={"rate_limit": 1000})
    assert r.status_code == 200 and r.json()["application"]["rate_limit"] == 1000, r.text
    r = httpx.put(url, headers=srv.admin_headers(), json={"rate_limit": 1_000_000})
    assert r.status_code == 200 and r.json()["application"]["rate_limit"] == 1_000_000, r.text


def test_an_app_that_disables_itself_is_re_enabled_only_by_the_admin(srv: ServerProcess) -> None:
    """Low: `status: false` with the app's own key disables it; from then on its key is
    refused (403), `status: true` included, until the admin enables it again."""
    app = srv.create_app(name="self-off")
    url = f"{srv.base_url}/api/applications/{app['app_id']}"
    r = httpx.put(url, headers=key(app), json={"status": False})
    assert r.status_code == 200 and r.json()["application"]["status"] is False, r.text
    assert_error(httpx.put(url, headers=key(app), json={"status": True}), 403)
    r = httpx.put(url, headers=srv.admin_headers(), json={"status": True})
    assert r.status_code == 200 and r.json()["application"]["status"] is True, r.text
    assert httpx.get(f"{srv.base_url}/api/applications", headers=key(app)).status_code == 200


async def test_a_deleted_app_id_is_retired_with_everything_it_had(srv: ServerProcess) -> None:
    """M4: after the admin deletes an app (whose webhooks, key and history every cache on the
    node holds), its app_id cannot be created again (409 saying why), its tokens, those the
    server minted and those its backend signed, are refused at once, its key is refused, and
    nothing answers 500."""
    app_id = "doomed-" + secrets.token_hex(4)
    app = srv.create_app(name="doomed", app_id=app_id)
    base, admin = srv.base_url, srv.admin_headers()
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        r = await http.post(
            "/api/webhooks",
            headers=key(app),
            json={"url": "http://127.0.0.1:9/hook", "events": ["news"]},
        )
        assert r.status_code == 201, r.text
        body = {"room": "public:lobby", "event": "news", "data": {"n": 1}}
        r = await http.post("/api/broadcast", headers=key(app), json=body)
        assert r.status_code == 200, r.text
        minted, signed = realtime_token(srv, app, "u"), app_signed_token(app, "u")
        async with websockets.connect(srv.ws_url) as open_ws:
            assert "connect" in await connect(open_ws, minted)
            r = await http.delete(f"/api/applications/{app_id}", headers=admin)
            assert r.status_code == 200, r.text
            assert await closed_with(open_ws) == 3507  # its open connections are closed
        again = await http.post(
            "/api/applications", headers=admin, json={"app_id": app_id, "name": "squatter"}
        )
        assert "deleted" in assert_error(again, 409)
        assert_error(await http.post("/api/broadcast", headers=key(app), json=body), 401)
        r = await http.post("/api/broadcast", headers=admin, json={**body, "app_id": app_id})
        assert_error(r, 404)
        r = await http.post("/api/token", json={"app_id": app_id, "app_secret": app["app_secret"]})
        assert_error(r, 401)
    for token in (minted, signed):
        async with websockets.connect(srv.ws_url) as ws:
            await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
            assert await closed_with(ws) == 3500


async def test_the_id_of_an_app_that_never_existed_is_free(srv: ServerProcess) -> None:
    """Retiring deleted ids takes nothing else: a fresh id is created, a taken one is 409."""
    app_id = "fresh-" + secrets.token_hex(4)
    srv.create_app(app_id=app_id)
    r = httpx.post(
        f"{srv.base_url}/api/applications",
        headers=srv.admin_headers(),
        json={"app_id": app_id, "name": "twin"},
    )
    assert "already exists" in assert_error(r, 409)
