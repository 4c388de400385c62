"""Rotating secrets with a grace period: the deployment's HMAC secret
(XSHATHRA_TOKEN_HMAC_PREVIOUS_SECRET) and an app's secret
(`POST /api/applications/:app_id/regenerate-secret` with `grace_seconds`)."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import websockets

from tests.integration.test_access_controls import connected, refused_with
from tests.support.clients import app_signed_token
from tests.support.server import ServerProcess, running_server

Json = dict[str, Any]


def server_signed(secret: str, app: Json, user: str) -> str:
    now = int(time.time())
    claims = {"sub": user, "app_id": app["app_id"], "iat": now, "exp": now + 600}
    return jwt.encode(claims, secret, algorithm="HS256")


def regenerate(server: ServerProcess, app: Json, headers: dict[str, str], **body: Any) -> Any:
    return httpx.post(
        f"{server.base_url}/api/applications/{app['app_id']}/regenerate-secret",
        json=body,
        headers=headers,
    )


async def test_previous_hmac_secret_verifies_during_a_rotation(tmp_path: Path) -> None:
    old, new = secrets.token_urlsafe(40), secrets.token_urlsafe(40)
    with running_server(tmp_path / "a", env={"XSHATHRA_TOKEN_HMAC_SECRET": old}) as srv:
        app = srv.create_app(name="rotate-hmac")
        before = server_signed(old, app, "u")
        port, admin = srv.port, srv.admin_key
    env = {"XSHATHRA_TOKEN_HMAC_SECRET": new, "XSHATHRA_TOKEN_HMAC_PREVIOUS_SECRET": old}
    with running_server(tmp_path / "a", env=env, port=port, admin_key=admin) as srv:
        ws = await connected(srv, before)  # signed with the old secret: still good
        await ws.close()
        minted = httpx.post(
            f"{srv.base_url}/api/realtime/token",
            json={"userId": "u"},
            headers={"Authorization": f"apikey {app['api_key']}"},
        ).json()["token"]
        jwt.decode(minted, new, algorithms=["HS256"])  # new tokens use the new secret
        assert await refused_with(srv, server_signed("x" * 40, app, "u")) == 3500
    # Rotation over: the old secret no longer verifies.
    env = {"XSHATHRA_TOKEN_HMAC_SECRET": new}
    with running_server(tmp_path / "a", env=env, port=port, admin_key=admin) as srv:
        assert await refused_with(srv, before) == 3500


def test_a_weak_previous_secret_stops_the_start(tmp_path: Path) -> None:
    env = {
        "XSHATHRA_TOKEN_HMAC_SECRET": secrets.token_urlsafe(40),
        "XSHATHRA_TOKEN_HMAC_PREVIOUS_SECRET": "weak-Zq9",
    }
    try:
        with running_server(tmp_path, env=env):
            raise AssertionError("a node started with a weak previous secret")
    except RuntimeError as exc:
        assert "XSHATHRA_TOKEN_HMAC_PREVIOUS_SECRET" in str(exc)
        assert "weak-Zq9" not in str(exc)


async def test_app_secret_rotation_with_grace(server: ServerProcess) -> None:
    app = server.create_app(name="rotate-app")
    key = {"X-API-Key": str(app["api_key"])}
    old_token = app_signed_token(app, "u")
    r = regenerate(server, app, key, grace_seconds=60)
    assert r.status_code == 200, r.text
    fresh = r.json()["application"]
    assert fresh["app_secret"] != app["app_secret"]
    assert fresh["previous_secret_expires_at"] >= int(time.time()) + 55
    # Within the grace period the old secret still signs tokens and still mints on /api/token.
    ws = await connected(server, old_token)
    await ws.close()
    ws = await connected(server, app_signed_token(fresh, "u"))
    await ws.close()
    for secret in (app["app_secret"], fresh["app_secret"]):
        minted = httpx.post(
            f"{server.base_url}/api/token", json={"app_id": app["app_id"], "app_secret": secret}
        )
        assert minted.status_code == 200, minted.text
    # A second rotation without grace: only the newest secret works, at once.
    r = regenerate(server, app, server.admin_headers(), grace_seconds=0)
    newest = r.json()["application"]
    assert r.status_code == 200 and newest["previous_secret_expires_at"] is None
    assert await refused_with(server, app_signed_token(fresh, "u")) == 3500
    assert await refused_with(server, old_token) == 3500
    ws = await connected(server, app_signed_token(newest, "u"))
    await ws.close()


async def test_grace_ends(server: ServerProcess) -> None:
    app = server.create_app(name="grace-ends")
    key = {"X-API-Key": str(app["api_key"])}
    assert regenerate(server, app, key, grace_seconds=1).status_code == 200
    deadline = time.monotonic() + 10
    while True:  # the grace is wall-clock time: the refusal is what is awaited
        async with websockets.connect(server.ws_url) as ws:
            token = app_signed_token(app, "u")
            await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
            try:
                await ws.recv()
            except websockets.ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 3500
                break
        assert time.monotonic() < deadline, "the old secret kept working past its grace"


def test_regenerate_secret_refusals(server: ServerProcess) -> None:
    app, other = server.create_app(name="rs1"), server.create_app(name="rs2")
    key = {"X-API-Key": str(app["api_key"])}
    for bad in (-1, 30 * 86400 + 1, "60", 1.5):
        r = regenerate(server, app, key, grace_seconds=bad)
        assert r.status_code == 400 and r.json()["success"] is False, (bad, r.text)
    r = regenerate(server, other, key, grace_seconds=0)
    assert r.status_code == 403, r.text
    assert regenerate(server, app, {"X-API-Key": "nope"}).status_code == 401
