"""Route behaviour in process: token claims, what a broadcast publishes, keys shown once,
updates reaching the engine, webhook secrets, and 429 answers on each surface."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import httpx
import jwt
import pytest

from tests.unit.api.conftest import TOKEN_SECRET, Api, start_api, unit_settings
from xshathra.model import AppId
from xshathra.tenancy.tokens import TokenError, TokenExpiredError, TokenService


async def test_api_token_claims_and_expiry(api: Api) -> None:
    app = await api.create_app()
    r = await api.http.post(
        "/api/token",
        json={
            "app_id": app["app_id"],
            "app_secret": app["app_secret"],
            "payload": {"user_id": 42, "app_id": "other", "iat": 1, "exp": 2, "role": "x"},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    claims = jwt.decode(body["token"], TOKEN_SECRET, algorithms=["HS256"])
    assert claims["app_id"] == app["app_id"] and claims["sub"] == "42"
    assert claims["role"] == "x" and claims["exp"] - claims["iat"] == 86400
    assert body["expires_in"] == 86400
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["expires_at"])
    expires_at = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%S.%f%z")
    assert int(expires_at.timestamp()) == claims["exp"]
    stored = await api.runtime.db.apps.get_app(app["app_id"])  # type: ignore[union-attr]
    assert stored is not None
    assert TokenService(TOKEN_SECRET).verify_connection_token(body["token"], stored).user == "42"


async def test_forged_and_expired_tokens_are_refused(api: Api) -> None:
    """What the server mints verifies; a token signed with another key or expired does not."""
    a, b = await api.create_app(name="a"), await api.create_app(name="b")
    r = await api.http.post(
        "/api/realtime/token", json={"userId": "u", "ttlSeconds": 30}, headers=key(a)
    )
    token = r.json()["token"]
    db = api.runtime.db
    assert db is not None
    app_a, app_b = await db.apps.get_app(a["app_id"]), await db.apps.get_app(b["app_id"])
    assert app_a is not None and app_b is not None
    tokens = TokenService(TOKEN_SECRET)
    assert tokens.verify_connection_token(token, app_a).app_id == AppId(a["app_id"])
    with pytest.raises(TokenError):
        tokens.verify_connection_token(token, app_b)  # another app's token
    claims = jwt.decode(token, TOKEN_SECRET, algorithms=["HS256"])
    forged = jwt.encode(claims, "not-the-server-secret-" + "x" * 20, algorithm="HS256")
    with pytest.raises(TokenError):
        tokens.verify_connection_token(forged, app_a)
    expired = jwt.encode({**claims, "exp": int(time.time()) - 60}, TOKEN_SECRET, "HS256")
    with pytest.raises(TokenExpiredError):
        tokens.verify_connection_token(expired, app_a)


def key(app: dict[str, str]) -> dict[str, str]:
    return {"X-API-Key": app["api_key"]}


async def test_subscription_token_claims(api: Api) -> None:
    app = await api.create_app()
    r = await api.http.post(
        "/api/realtime/subscription-token",
        json={"userId": "u1", "channel": "room:7", "ttlSeconds": 3600, "info": {"n": 1}},
        headers={"Authorization": f"apikey {app['api_key']}"},
    )
    assert r.json()["expiresInSeconds"] == 3600 and r.json()["channel"] == "room:7"
    claims = jwt.decode(r.json()["token"], TOKEN_SECRET, algorithms=["HS256"])
    assert claims["channel"] == "room:7" and claims["sub"] == "u1" and claims["info"] == {"n": 1}
    assert claims["exp"] - claims["iat"] == 3600 and claims["app_id"] == app["app_id"]
    r = await api.http.post(
        "/api/realtime/subscription-token",
        json={"userId": "u1", "channel": "bad channel"},
        headers=key(app),
    )
    assert r.status_code == 400 and "channel" in r.json()["error"]


async def test_broadcast_publishes_data_with_the_event_tag(api: Api) -> None:
    app = await api.create_app()
    data = {"text": "héllo", "n": [1, 2.5, None]}
    for body in (
        {"room": "public:chat", "event": "new-message", "data": data},
        {"room": "public:chat", "event": "ping"},
    ):
        r = await api.http.post("/api/broadcast", json=body, headers=key(app))
        assert r.status_code == 200, r.text
        assert r.json()["room"] == f"app-{app['app_id']}-public:chat"
    history = await api.http.post(
        "/realtime/api/history", json={"channel": "public:chat", "limit": 10}, headers=key(app)
    )
    pubs = history.json()["result"]["publications"]
    assert [p["data"] for p in pubs] == [data, {}]
    assert [p["tags"] for p in pubs] == [{"event": "new-message"}, {"event": "ping"}]


async def test_publish_proxy_answers_exactly_as_the_engine(api: Api) -> None:
    app = await api.create_app()
    body = {"channel": "public:x", "data": {"a": 1}}
    proxied = await api.http.post("/api/realtime/publish", json=body, headers=key(app))
    engine = await api.http.post("/realtime/api/publish", json=body, headers=key(app))
    assert proxied.status_code == engine.status_code == 200
    assert set(proxied.json()["result"]) == set(engine.json()["result"]) == {"offset", "epoch"}
    assert engine.json()["result"]["offset"] == proxied.json()["result"]["offset"] + 1
    bad = {"channel": "public:x", "data": {"big": "y" * 70_000}}
    r = await api.http.post("/api/realtime/publish", json=bad, headers=key(app))
    assert r.status_code == 200 and r.json()["error"]["code"] == 106
    r = await api.http.post(
        "/api/realtime/publish",
        content=b"{nope",
        headers={**key(app), "content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json() == {"error": "invalid JSON body"}


async def test_keys_are_shown_only_when_made(api: Api) -> None:
    app = await api.create_app(app_id="shown-once")
    assert app["api_key"] == app["server_api_key"] and app["api_key_hint"] == app["api_key"][-4:]
    listed = (await api.http.get("/api/applications", headers=api.admin)).json()["applications"]
    mine = next(a for a in listed if a["app_id"] == "shown-once")
    assert "api_key" not in mine and "server_api_key" not in mine
    assert app["api_key"] not in str(listed)
    regen = await api.http.post(
        "/api/applications/shown-once/regenerate-api-key", headers=api.admin
    )
    new_key = regen.json()["api_key"]
    assert regen.json()["application"]["server_api_key"] == new_key != app["api_key"]
    assert (await api.http.get("/api/applications", headers=key(app))).status_code == 401
    own = await api.http.get("/api/applications", headers={"X-API-Key": new_key})
    assert own.json()["application"]["api_key_hint"] == new_key[-4:]
    assert "api_key" not in own.json()["application"]


async def test_create_errors(api: Api) -> None:
    await api.create_app(app_id="taken")
    for body, status in (
        ({"name": "x", "app_id": "taken"}, 409),
        ({"name": "x" * 201}, 400),
        ({"name": "   "}, 400),
        ({"name": "x", "app_id": "a" * 65}, 400),
        ({"name": "x", "rate_limit": 1_000_001}, 400),
        ({"name": "x", "rate_limit": 1.5}, 400),
        ({"name": "x", "allowed_domain": "http://example.com/"}, 400),
    ):
        r = await api.http.post("/api/applications", json=body, headers=api.admin)
        assert r.status_code == status, (body, r.text)
    names = [a.app_id for a in await api.runtime.db.apps.list_apps()]  # type: ignore[union-attr]
    assert names == ["taken"]


async def test_updates_reach_the_engine(api: Api) -> None:
    app = await api.create_app(allowed_domain="example.com")
    url = f"/api/applications/{app['app_id']}"
    r = await api.http.put(
        url,
        json={"namespaces": {"chat": {"history_size": 5, "history_ttl": 60}}, "allowed_domain": ""},
        headers=key(app),
    )
    assert r.status_code == 200, r.text
    assert r.json()["application"]["allowed_domain"] is None
    stored = await api.runtime.db.apps.get_app(app["app_id"])  # type: ignore[union-attr]
    assert stored is not None and stored.namespace_options("chat").history_size == 5
    await api.http.post("/api/broadcast", json={"room": "chat:1", "event": "e"}, headers=key(app))
    history = await api.http.post(
        "/realtime/api/history", json={"channel": "chat:1", "limit": 5}, headers=key(app)
    )
    assert len(history.json()["result"]["publications"]) == 1


async def test_webhook_secrets(api: Api) -> None:
    app = await api.create_app()
    generated = await api.http.post(
        "/api/webhooks", json={"url": "https://93.184.216.34/a", "events": ["*"]}, headers=key(app)
    )
    assert generated.status_code == 201
    secret = generated.json()["webhook"]["secret"]
    assert len(secret) >= 24
    given = await api.http.post(
        "/api/webhooks",
        json={"url": "https://93.184.216.34/b", "events": ["e"], "secret": "my-own-secret"},
        headers=key(app),
    )
    assert "secret" not in given.json()["webhook"]
    listed = (await api.http.get("/api/webhooks", headers=key(app))).text
    assert secret not in listed and "my-own-secret" not in listed
    private = await api.http.post(
        "/api/webhooks", json={"url": "http://127.0.0.1:8080/h", "events": ["*"]}, headers=key(app)
    )
    assert private.status_code == 400 and "private or loopback" in private.json()["error"]


async def test_analytics_for_admin_and_bad_period(api: Api) -> None:
    app = await api.create_app()
    r = await api.http.get(f"/api/analytics?app_id={app['app_id']}&period=7d", headers=api.admin)
    assert r.status_code == 200 and r.json()["app_id"] == app["app_id"]
    assert r.json()["period"] == "7d" and r.json()["metrics"]["events"]["total"] == 0
    r = await api.http.get("/api/analytics?period=1d", headers=key(app))
    assert r.status_code == 400 and "period" in r.json()["error"]


async def test_429_on_each_surface(tmp_path: Path) -> None:
    runtime, http = await start_api(unit_settings(tmp_path, token_rate_limit=2))
    try:
        api = Api(http, runtime)
        app = await api.create_app(rate_limit=1)
        k = key(app)
        secret = {"app_id": app["app_id"], "app_secret": app["app_secret"]}
        codes = [(await http.post("/api/token", json=secret)).status_code for _ in range(2)]
        assert codes == [200, 200]
        check_429(await http.post("/api/token", json=secret), realtime=False)  # per IP
        # With an app key the token endpoints count against the app's rate_limit instead.
        first = await http.post("/api/realtime/token", json={"userId": "u"}, headers=k)
        assert first.status_code == 200
        limited = await http.post("/api/realtime/token", json={"userId": "u"}, headers=k)
        check_429(limited, realtime=True)
        check_429(await http.get("/api/webhooks", headers=k), realtime=False)
        check_429(
            await http.post("/api/realtime/publish", json={"channel": "c", "data": 1}, headers=k),
            realtime=True,
        )
        admin = await http.get(f"/api/webhooks?app_id={app['app_id']}", headers=api.admin)
        assert admin.status_code == 200  # the admin key is not counted against the app
    finally:
        await http.aclose()
        await runtime.stop()


def check_429(r: httpx.Response, *, realtime: bool) -> None:
    assert r.status_code == 429, r.text
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    expected = {"error": "rate limit exceeded", "retry_after": retry_after}
    assert r.json() == (expected if realtime else {"success": False, **expected})
