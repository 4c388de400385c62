"""Seed 001, the realtime API: connection and subscription tokens, the publish proxy, health,
and the per-IP and per-app rate limits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.support.server import ServerProcess, running_server

Json = dict[str, Any]


def apikey(app: Json, scheme: str = "apikey") -> dict[str, str]:
    return {"Authorization": f"{scheme} {app['api_key']}"}


def assert_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"error"} and "success" not in body
    assert isinstance(body["error"], str) and body["error"]
    return str(body["error"])


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield client


def test_connection_token(server: ServerProcess, http: httpx.Client) -> None:
    app = server.create_app(name="rt")
    r = http.post(
        "/api/realtime/token",
        headers=apikey(app),
        json={
            "userId": "user_01",
            "ttlSeconds": 120,
            "channels": ["public:lobby"],
            "info": {"displayName": "Player One"},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expiresInSeconds"] == 120
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["sub"] == "user_01" and claims["app_id"] == app["app_id"]
    assert claims["channels"] == ["public:lobby"]
    assert claims["info"] == {"displayName": "Player One"}
    assert claims["exp"] - claims["iat"] == 120


def test_default_ttl_and_bearer(server: ServerProcess, http: httpx.Client) -> None:
    app = server.create_app(name="rt2")
    r = http.post("/api/realtime/token", headers=apikey(app, "Bearer"), json={"userId": "u"})
    assert r.status_code == 200 and r.json()["expiresInSeconds"] == 900


def test_subscription_token(server: ServerProcess, http: httpx.Client) -> None:
    app = server.create_app(name="rt3")
    r = http.post(
        "/api/realtime/subscription-token",
        headers=apikey(app),
        json={"userId": "u1", "channel": "room_abc", "ttlSeconds": 600},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["channel"] == "room_abc" and body["expiresInSeconds"] == 600
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["channel"] == "room_abc" and claims["sub"] == "u1"
    assert claims["app_id"] == app["app_id"]


def test_ttl_seconds_is_any_whole_json_number(server: ServerProcess, http: httpx.Client) -> None:
    app = server.create_app(name="ttl-float")
    for url, extra in (
        ("/api/realtime/token", {}),
        ("/api/realtime/subscription-token", {"channel": "room"}),
    ):
        r = http.post(url, headers=apikey(app), json={"userId": "u", "ttlSeconds": 900.0, **extra})
        assert r.status_code == 200, r.text
        assert r.json()["expiresInSeconds"] == 900
        claims = jwt.decode(r.json()["token"], options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == 900
        for bad in (900.5, 1e300, "900", True):
            body = {"userId": "u", "ttlSeconds": bad, **extra}
            assert_error(http.post(url, headers=apikey(app), json=body), 400)


def test_token_channels_must_be_in_configured_namespaces(
    server: ServerProcess, http: httpx.Client
) -> None:
    app = server.create_app(name="ns-check")
    url = "/api/realtime/token"
    r = http.post(url, headers=apikey(app), json={"userId": "u", "channels": ["chat:room1"]})
    assert r.status_code == 400 and "chat:room1" in r.json()["error"], r.text
    # public:, the default namespace, and a namespace the app configured are all fine.
    r = http.put(
        f"/api/applications/{app['app_id']}",
        headers={"X-API-Key": str(app["api_key"])},
        json={"namespaces": {"chat": {"presence": True}}},
    )
    assert r.status_code == 200, r.text
    channels = ["chat:room1", "public:lobby", "personal"]
    r = http.post(url, headers=apikey(app), json={"userId": "u", "channels": channels})
    assert r.status_code == 200, r.text
    claims = jwt.decode(r.json()["token"], options={"verify_signature": False})
    assert claims["channels"] == channels


def test_token_errors(server: ServerProcess, http: httpx.Client) -> None:
    app = server.create_app(name="rt4")
    url = "/api/realtime/token"
    assert_error(http.post(url, json={"userId": "u"}), 401)
    assert_error(
        http.post(url, headers={"Authorization": "apikey nope"}, json={"userId": "u"}), 401
    )
    assert "userId" in assert_error(http.post(url, headers=apikey(app), json={}), 400)
    assert_error(http.post(url, headers=apikey(app), json={"userId": ""}), 400)
    assert_error(http.post(url, headers=apikey(app), json={"userId": 7}), 400)
    assert_error(http.post(url, headers=apikey(app), json={"userId": "u", "ttlSeconds": 10}), 400)
    assert_error(http.post(url, headers=apikey(app), json={"userId": "u", "ttlSeconds": 9999}), 400)
    assert_error(http.post(url, headers=apikey(app), json={"userId": "u", "channels": "x"}), 400)
    assert_error(
        http.post(
            url, headers={**apikey(app), "content-type": "application/json"}, content=b"{oops"
        ),
        400,
    )
    assert_error(
        http.post("/api/realtime/subscription-token", headers=apikey(app), json={"userId": "u"}),
        400,
    )


def test_publish_proxy_answers_as_the_engine(server: ServerProcess, http: httpx.Client) -> None:
    app = server.create_app(name="pub")
    r = http.post(
        "/api/realtime/publish",
        headers=apikey(app),
        json={"channel": "public:lobby", "data": {"type": "ping"}},
    )
    assert r.status_code == 200, r.text
    first = r.json()["result"]
    assert first["offset"] == 1 and first["epoch"]
    second = http.post(
        "/api/realtime/publish", headers=apikey(app), json={"channel": "public:lobby", "data": 1}
    ).json()["result"]
    assert second == {"offset": 2, "epoch": first["epoch"]}
    engine = http.post(
        "/realtime/api/publish",
        headers={"X-API-Key": str(app["api_key"])},
        json={"channel": "public:lobby", "data": 2},
    ).json()["result"]
    assert engine["offset"] == 3
    no_history = http.post(
        "/api/realtime/publish", headers=apikey(app), json={"channel": "room", "data": {}}
    ).json()
    assert no_history == {"result": {}}


def test_publish_proxy_errors(server: ServerProcess, http: httpx.Client) -> None:
    app = server.create_app(name="puberr")
    assert_error(http.post("/api/realtime/publish", json={"channel": "c", "data": 1}), 401)
    bad = http.post(
        "/api/realtime/publish", headers=apikey(app), json={"channel": "bad channel", "data": 1}
    )
    assert bad.status_code == 200 and bad.json()["error"]["code"] == 107
    missing = http.post("/api/realtime/publish", headers=apikey(app), json={"channel": "c"})
    assert missing.json()["error"]["code"] == 107
    assert_error(http.post("/api/realtime/publish", headers=apikey(app), json={"data": 1}), 400)


def test_health(http: httpx.Client) -> None:
    r = http.get("/realtime/health")
    assert r.status_code == 200 and r.json() == {}


def test_openapi_and_docs_are_served_locally(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    for path in (
        "/api/token",
        "/api/broadcast",
        "/api/applications",
        "/api/analytics",
        "/api/webhooks",
        "/api/realtime/token",
        "/api/realtime/subscription-token",
        "/api/realtime/publish",
        "/realtime/health",
    ):
        assert path in spec["paths"], path
    page = http.get("/docs")
    assert page.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    assert http.get("/docs/static/swagger-ui-bundle.js").status_code == 200


def test_rate_limits(tmp_path: Path) -> None:
    """Token endpoints with an app key count against the app's rate_limit, POST /api/token per
    IP, and the HTTP API per app; every refusal is a 429 with Retry-After."""
    with running_server(tmp_path, env={"XSHATHRA_TOKEN_RATE_LIMIT": "3"}) as srv:
        app = srv.create_app(name="limited", rate_limit=5)
        with httpx.Client(base_url=srv.base_url) as http:
            # Five token calls fit the app's limit, past the per-IP limit of three.
            codes = [
                http.post(
                    "/api/realtime/token", headers=apikey(app), json={"userId": "u"}
                ).status_code
                for _ in range(4)
            ]
            codes.append(
                http.post(
                    "/api/realtime/subscription-token",
                    headers=apikey(app),
                    json={"userId": "u", "channel": "room"},
                ).status_code
            )
            assert codes == [200] * 5
            limited = http.post("/api/realtime/token", headers=apikey(app), json={"userId": "u"})
            assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
            secret = {"app_id": app["app_id"], "app_secret": app["app_secret"]}
            codes = [http.post("/api/token", json=secret).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            r = http.post("/api/token", json=secret)
            assert r.status_code == 429 and r.json()["success"] is False
            assert int(r.headers["Retry-After"]) >= 1 and r.json()["retry_after"] >= 1
            body = {"room": "r", "event": "e"}
            headers = {"X-API-Key": str(app["api_key"])}
            assert http.post("/api/broadcast", headers=headers, json=body).status_code == 429
            engine = http.post(
                "/realtime/api/publish", headers=headers, json={"channel": "c", "data": 1}
            )
            assert engine.status_code == 429 and "Retry-After" in engine.headers
            other = srv.create_app(name="unlimited")
            ok = http.post(
                "/api/broadcast", headers={"X-API-Key": str(other["api_key"])}, json=body
            )
            assert ok.status_code == 200  # one app's limit never touches another's


def test_centrifugo_secret_alias_signs_tokens(tmp_path: Path) -> None:
    """CENTRIFUGO_TOKEN_HMAC_SECRET_KEY sets the HS256 key the server mints with."""
    secret = "s" * 48
    with running_server(tmp_path, env={"CENTRIFUGO_TOKEN_HMAC_SECRET_KEY": secret}) as srv:
        app = srv.create_app(name="alias")
        r = httpx.post(
            f"{srv.base_url}/api/realtime/token", headers=apikey(app), json={"userId": "u"}
        )
    claims = jwt.decode(r.json()["token"], secret, algorithms=["HS256"])
    assert claims["sub"] == "u"
