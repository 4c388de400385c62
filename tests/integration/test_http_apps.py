"""Seed 000, the apps API, against a real node on SQLite and on PostgreSQL: every endpoint,
its error paths, and isolation between two applications."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest

from tests.support.server import ServerProcess

Json = dict[str, Any]


@pytest.fixture
def http(server_any_db: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server_any_db.base_url, timeout=10)


@pytest.fixture
def srv(server_any_db: ServerProcess) -> ServerProcess:
    return server_any_db


def key(app: Json) -> dict[str, str]:
    return {"X-API-Key": str(app["api_key"])}


def assert_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in r.text
    return str(body["error"])


# --- applications -------------------------------------------------------------------------------


def test_admin_creates_an_app_with_every_field(srv: ServerProcess, http: httpx.Client) -> None:
    """POST /api/applications answers 201 with all fields, secrets included, once."""
    r = http.post(
        "/api/applications",
        json={
            "app_id": "shop-1_" + str(time.time_ns())[-6:],
            "name": "Shop",
            "allowed_domain": "example.com",
            "rate_limit": 60,
        },
        headers=srv.admin_headers(),
    )
    assert r.status_code == 201, r.text
    app = r.json()["application"]
    assert r.json()["success"] is True
    for field in (
        "app_id",
        "name",
        "app_secret",
        "api_key",
        "server_api_key",
        "client_api_key",
        "allowed_domain",
        "rate_limit",
        "status",
        "namespaces",
        "created_at",
        "updated_at",
    ):
        assert field in app, field
    assert app["api_key"] == app["server_api_key"]
    assert app["allowed_domain"] == "example.com" and app["rate_limit"] == 60
    assert app["status"] is True
    assert len({app["api_key"], app["app_secret"], app["client_api_key"]}) == 3


def test_generated_app_id_and_default_rate_limit(srv: ServerProcess) -> None:
    app = srv.create_app(name="defaults")
    assert isinstance(app["app_id"], str) and len(str(app["app_id"])) >= 8
    assert app["rate_limit"] == 1000


def test_app_key_reads_only_its_own_app(srv: ServerProcess, http: httpx.Client) -> None:
    a, b = srv.create_app(name="A"), srv.create_app(name="B")
    r = http.get("/api/applications", headers=key(a))
    assert r.status_code == 200
    assert r.json()["application"]["app_id"] == a["app_id"]
    assert "api_key" not in r.json()["application"]  # shown once, stored hashed
    assert_error(http.get(f"/api/applications?app_id={b['app_id']}", headers=key(a)), 403)


def test_three_ways_to_pass_an_app_key(srv: ServerProcess, http: httpx.Client) -> None:
    app = srv.create_app(name="keys")
    k = str(app["api_key"])
    for kwargs in (
        {"headers": {"X-APP-API-KEY": k}},
        {"headers": {"X-API-Key": k}},
        {"params": {"api_key": k}},
    ):
        r = http.get("/api/applications", **kwargs)  # type: ignore[arg-type]
        assert r.status_code == 200 and r.json()["application"]["app_id"] == app["app_id"]


def test_admin_lists_all_apps(srv: ServerProcess, http: httpx.Client) -> None:
    a = srv.create_app(name="listed")
    r = http.get("/api/applications", headers=srv.admin_headers())
    assert r.status_code == 200
    assert a["app_id"] in {x["app_id"] for x in r.json()["applications"]}


def test_creation_errors(srv: ServerProcess, http: httpx.Client) -> None:
    """Bad bodies get 400, a taken id 409, an app key 403, no key 401; nothing is created."""
    admin = srv.admin_headers()
    before = len(http.get("/api/applications", headers=admin).json()["applications"])
    assert_error(
        http.post(
            "/api/applications",
            content=b"{not json",
            headers={**admin, "content-type": "application/json"},
        ),
        400,
    )
    assert "name" in assert_error(http.post("/api/applications", json={}, headers=admin), 400)
    assert_error(http.post("/api/applications", json={"name": 5}, headers=admin), 400)
    assert_error(http.post("/api/applications", json={"name": ""}, headers=admin), 400)
    assert_error(
        http.post("/api/applications", json={"name": "x", "app_id": "bad id!"}, headers=admin), 400
    )
    assert_error(
        http.post("/api/applications", json={"name": "x", "rate_limit": 0}, headers=admin), 400
    )
    assert_error(
        http.post("/api/applications", json={"name": "x", "rate_limit": "10"}, headers=admin), 400
    )
    assert_error(http.post("/api/applications", json=[1, 2], headers=admin), 400)
    existing = srv.create_app(name="taken")
    assert_error(
        http.post(
            "/api/applications", json={"name": "x", "app_id": existing["app_id"]}, headers=admin
        ),
        409,
    )
    assert_error(http.post("/api/applications", json={"name": "x"}, headers=key(existing)), 403)
    assert_error(http.post("/api/applications", json={"name": "x"}), 401)
    assert_error(
        http.post("/api/applications", json={"name": "x"}, headers={"X-ADMIN-API-KEY": "wrong"}),
        401,
    )
    after = len(http.get("/api/applications", headers=admin).json()["applications"])
    assert after == before + 1  # only `existing`


def test_update_application(srv: ServerProcess, http: httpx.Client) -> None:
    app = srv.create_app(name="upd")
    r = http.put(
        f"/api/applications/{app['app_id']}",
        headers=key(app),
        json={
            "allowed_domain": "example.org",
            "rate_limit": 60,
            "name": "Renamed",
            "namespaces": {"chat": {"presence": True, "history_size": 10, "history_ttl": 60}},
        },
    )
    assert r.status_code == 200, r.text
    got = r.json()["application"]
    assert got["allowed_domain"] == "example.org" and got["rate_limit"] == 60
    assert got["name"] == "Renamed" and got["namespaces"]["chat"]["history_size"] == 10
    again = http.get("/api/applications", headers=key(app)).json()["application"]
    assert again["name"] == "Renamed" and again["namespaces"]["chat"]["presence"] is True


def test_update_errors_leave_the_app_unchanged(srv: ServerProcess, http: httpx.Client) -> None:
    a, b = srv.create_app(name="keep"), srv.create_app(name="other")
    url = f"/api/applications/{a['app_id']}"
    assert_error(http.put(url, headers=key(a), json={"rate_limit": "fast"}), 400)
    assert_error(http.put(url, headers=key(a), json={"namespaces": {"chat": {"bogus": 1}}}), 400)
    assert_error(http.put(url, headers=key(a), json={"allowed_domain": "not a domain"}), 400)
    assert_error(http.put(url, headers=key(b), json={"name": "stolen"}), 403)
    assert_error(
        http.put("/api/applications/nope", headers=srv.admin_headers(), json={"name": "x"}), 404
    )
    assert http.get("/api/applications", headers=key(a)).json()["application"]["name"] == "keep"


def test_regenerate_key_kills_the_old_one_at_once(srv: ServerProcess, http: httpx.Client) -> None:
    app = srv.create_app(name="regen")
    r = http.post(f"/api/applications/{app['app_id']}/regenerate-api-key", headers=key(app))
    assert r.status_code == 200, r.text
    new_key = r.json()["api_key"]
    assert new_key != app["api_key"] and r.json()["application"]["api_key"] == new_key
    assert_error(http.get("/api/applications", headers=key(app)), 401)
    assert http.get("/api/applications", headers={"X-API-Key": new_key}).status_code == 200


def test_disabled_app_is_refused(srv: ServerProcess, http: httpx.Client) -> None:
    app = srv.create_app(name="off")
    r = http.put(
        f"/api/applications/{app['app_id']}", headers=srv.admin_headers(), json={"status": False}
    )
    assert r.status_code == 200 and r.json()["application"]["status"] is False
    assert_error(
        http.post("/api/broadcast", headers=key(app), json={"room": "r", "event": "e"}), 403
    )
    assert_error(
        http.post("/api/token", json={"app_id": app["app_id"], "app_secret": app["app_secret"]}),
        403,
    )


def test_admin_deletes_an_app(srv: ServerProcess, http: httpx.Client) -> None:
    app = srv.create_app(name="gone")
    assert_error(http.delete(f"/api/applications/{app['app_id']}", headers=key(app)), 403)
    r = http.delete(f"/api/applications/{app['app_id']}", headers=srv.admin_headers())
    assert r.status_code == 200 and r.json() == {"success": True}
    assert_error(http.get("/api/applications", headers=key(app)), 401)
    assert_error(
        http.delete(f"/api/applications/{app['app_id']}", headers=srv.admin_headers()), 404
    )


# --- tokens ------------------------------------------------------------------------------------


def test_token_carries_the_server_claims(srv: ServerProcess, http: httpx.Client) -> None:
    app = srv.create_app(name="tok")
    r = http.post(
        "/api/token",
        json={
            "app_id": app["app_id"],
            "app_secret": app["app_secret"],
            "payload": {"user_id": "user-123", "name": "John", "app_id": "evil", "exp": 1},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["expires_in"] == 86400
    assert body["expires_at"].endswith("Z")
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["app_id"] == app["app_id"]
    assert claims["sub"] == "user-123" and claims["user_id"] == "user-123"
    assert claims["name"] == "John"
    assert claims["exp"] - claims["iat"] == 86400


def test_token_errors(srv: ServerProcess, http: httpx.Client) -> None:
    app = srv.create_app(name="tokerr")
    wrong = assert_error(
        http.post("/api/token", json={"app_id": app["app_id"], "app_secret": "nope"}), 401
    )
    unknown = assert_error(
        http.post("/api/token", json={"app_id": "no-such-app", "app_secret": "nope"}), 401
    )
    assert wrong == unknown  # no way to tell which apps exist
    assert_error(http.post("/api/token", json={"app_id": app["app_id"]}), 400)
    assert_error(
        http.post(
            "/api/token",
            json={"app_id": app["app_id"], "app_secret": app["app_secret"], "payload": "x"},
        ),
        400,
    )


# --- broadcast ---------------------------------------------------------------------------------


def test_broadcast_answers_as_the_seed_says(srv: ServerProcess, http: httpx.Client) -> None:
    app = srv.create_app(name="bc")
    r = http.post(
        "/api/broadcast",
        headers=key(app),
        json={"room": "chat-room-1", "event": "new-message", "data": {"m": "hi"}},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    assert body["room"] == f"app-{app['app_id']}-chat-room-1"
    assert body["event"] == "new-message" and body["subscriber_count"] == 0
    assert abs(body["timestamp"] - time.time() * 1000) < 60_000


def test_broadcast_errors(srv: ServerProcess, http: httpx.Client) -> None:
    a, b = srv.create_app(name="bce"), srv.create_app(name="other")
    assert "room" in assert_error(
        http.post("/api/broadcast", headers=key(a), json={"event": "e"}), 400
    )
    assert "event" in assert_error(
        http.post("/api/broadcast", headers=key(a), json={"room": "r"}), 400
    )
    assert_error(http.post("/api/broadcast", headers=key(a), json={"room": 1, "event": "e"}), 400)
    assert_error(
        http.post("/api/broadcast", headers=key(a), json={"room": "bad room", "event": "e"}), 400
    )
    assert_error(
        http.post(
            "/api/broadcast",
            headers=key(a),
            json={"app_id": b["app_id"], "room": "r", "event": "e"},
        ),
        403,
    )
    assert_error(http.post("/api/broadcast", json={"room": "r", "event": "e"}), 401)
    assert_error(
        http.post(
            "/api/broadcast", headers={"X-API-Key": "wrong"}, json={"room": "r", "event": "e"}
        ),
        401,
    )
    assert_error(
        http.post("/api/broadcast", headers=srv.admin_headers(), json={"room": "r", "event": "e"}),
        400,
    )
    ok = http.post(
        "/api/broadcast",
        headers=srv.admin_headers(),
        json={"app_id": a["app_id"], "room": "r", "event": "e"},
    )
    assert ok.status_code == 200
    big = {"room": "r", "event": "e", "data": {"x": "y" * 70_000}}
    assert http.post("/api/broadcast", headers=key(a), json=big).status_code == 413


def test_oversized_request_body_is_refused(srv: ServerProcess, http: httpx.Client) -> None:
    app = srv.create_app(name="huge")
    r = http.post(
        "/api/broadcast",
        headers={**key(app), "content-type": "application/json"},
        content=b'{"room":"r","event":"e","data":"' + b"x" * 2_000_000 + b'"}',
    )
    assert_error(r, 413)


# --- analytics and webhooks ----------------------------------------------------------------------


def test_analytics_shape(srv: ServerProcess, http: httpx.Client) -> None:
    app = srv.create_app(name="an")
    http.post("/api/broadcast", headers=key(app), json={"room": "r", "event": "e"})
    for period in ("1h", "24h", "7d", "30d"):
        r = http.get(f"/api/analytics?period={period}", headers=key(app))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["success"] is True and body["app_id"] == app["app_id"]
        assert body["period"] == period
        m = body["metrics"]
        assert m["events"]["total"] == 1 and m["events"]["broadcasts"] == 1
        assert set(m["connections"]) == {"total", "current"}
        assert set(m["users"]) == {"online", "total"}
        assert isinstance(body["series"], list) and isinstance(body["timestamp"], int)
    assert http.get("/api/analytics", headers=key(app)).json()["period"] == "24h"
    assert_error(http.get("/api/analytics?period=2y", headers=key(app)), 400)
    assert_error(http.get("/api/analytics", headers=srv.admin_headers()), 400)


def test_webhook_registration(srv: ServerProcess, http: httpx.Client) -> None:
    a, b = srv.create_app(name="wh"), srv.create_app(name="wh2")
    r = http.post(
        "/api/webhooks",
        headers=key(a),
        json={
            "url": "http://127.0.0.1:9/hook",
            "secret": "s3cret-value",
            "events": ["new-message", "user-joined", "*"],
        },
    )
    assert r.status_code == 201, r.text
    hook = r.json()["webhook"]
    assert hook["id"].startswith("webhook_") and hook["enabled"] is True
    assert hook["events"] == ["new-message", "user-joined", "*"] and "secret" not in hook
    listed = http.get("/api/webhooks", headers=key(a)).json()["webhooks"]
    assert [h["id"] for h in listed] == [hook["id"]]
    assert http.get("/api/webhooks", headers=key(b)).json()["webhooks"] == []
    assert_error(http.delete(f"/api/webhooks/{hook['id']}", headers=key(b)), 404)
    assert http.delete(f"/api/webhooks/{hook['id']}", headers=key(a)).status_code == 200
    assert http.get("/api/webhooks", headers=key(a)).json()["webhooks"] == []


def test_webhook_errors(srv: ServerProcess, http: httpx.Client) -> None:
    app = srv.create_app(name="whe")
    for body in (
        {"url": "ftp://x.example/h", "events": ["*"]},
        {"url": "not a url", "events": ["*"]},
        {"url": "https://example.com/h", "events": []},
        {"url": "https://example.com/h"},
        {"url": "https://example.com/h", "events": "all"},
    ):
        assert_error(http.post("/api/webhooks", headers=key(app), json=body), 400)
    assert http.get("/api/webhooks", headers=key(app)).json()["webhooks"] == []


def test_unknown_route_has_the_documented_shape(http: httpx.Client) -> None:
    assert_error(http.get("/api/nothing-here"), 404)
