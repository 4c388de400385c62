"""Who may call what: every endpoint that acts on an application, under every key rule
(missing, invalid, another app's id, disabled app, admin without or with an unknown app_id)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest

from tests.unit.api.conftest import Api, Json
from xshathra.api.views import application_view, webhook_view


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # "{app}" is replaced by the target app_id
    body: Json | None
    names_app_in: Literal["path", "body", "query"]
    ok: int = 200

    @property
    def realtime(self) -> bool:
        return self.path.startswith("/api/realtime/")

    def implied(self, app: Json) -> str | None:
        """What an app key sends: its own app_id where the path needs one, else nothing."""
        return str(app["app_id"]) if self.names_app_in == "path" else None

    def request(self, app_id: str | None) -> dict[str, Any]:
        path = self.path.replace("{app}", app_id or "")
        body = dict(self.body) if self.body is not None else None
        params: dict[str, str] = {}
        if app_id is not None and self.names_app_in == "body":
            assert body is not None
            body["app_id"] = app_id
        if app_id is not None and self.names_app_in == "query":
            params["app_id"] = app_id
        return {"method": self.method, "url": path, "json": body, "params": params}


HOOK = {"url": "https://93.184.216.34/hook", "events": ["*"]}
ENDPOINTS = [
    Endpoint("GET", "/api/applications", None, "query"),
    Endpoint("PUT", "/api/applications/{app}", {"rate_limit": 77}, "path"),
    Endpoint("POST", "/api/applications/{app}/regenerate-api-key", None, "path"),
    Endpoint("POST", "/api/broadcast", {"room": "r", "event": "e"}, "body"),
    Endpoint("GET", "/api/analytics", None, "query"),
    Endpoint("POST", "/api/webhooks", HOOK, "body", ok=201),
    Endpoint("GET", "/api/webhooks", None, "query"),
    Endpoint("DELETE", "/api/webhooks/webhook_0_none", None, "query", ok=404),
    Endpoint("POST", "/api/realtime/token", {"userId": "u"}, "query"),
    Endpoint("POST", "/api/realtime/subscription-token", {"userId": "u", "channel": "c"}, "query"),
    Endpoint("POST", "/api/realtime/publish", {"channel": "c", "data": 1}, "query"),
]
IDS = [f"{e.method} {e.path}" for e in ENDPOINTS]


def check_error(r: httpx.Response, endpoint: Endpoint, status: int) -> str:
    """The status, and the error in the shape of the endpoint's surface."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    if endpoint.realtime:
        assert set(body) == {"error"}, body
    else:
        assert set(body) == {"success", "error"} and body["success"] is False, body
    assert isinstance(body["error"], str) and body["error"]
    return str(body["error"])


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
async def test_own_key_is_accepted(api: Api, endpoint: Endpoint) -> None:
    app = await api.create_app()
    own = {"X-API-Key": app["api_key"]}
    r = await api.http.request(**endpoint.request(endpoint.implied(app)), headers=own)
    assert r.status_code == endpoint.ok, r.text
    if endpoint.names_app_in != "path":  # naming its own app is fine too
        r = await api.http.request(**endpoint.request(app["app_id"]), headers=own)
        assert r.status_code == endpoint.ok, r.text


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
async def test_missing_or_invalid_keys_get_401(api: Api, endpoint: Endpoint) -> None:
    app = await api.create_app()
    for headers in ({}, {"X-API-Key": "xs_not-a-key"}, {"X-ADMIN-API-KEY": "wrong"}):
        r = await api.http.request(**endpoint.request(app["app_id"]), headers=headers)
        message = check_error(r, endpoint, 401)
        assert "xs_not-a-key" not in message and "wrong" not in message


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
async def test_another_apps_id_gets_403(api: Api, endpoint: Endpoint) -> None:
    mine, theirs = await api.create_app(name="mine"), await api.create_app(name="theirs")
    r = await api.http.request(
        **endpoint.request(theirs["app_id"]), headers={"X-APP-API-KEY": mine["api_key"]}
    )
    check_error(r, endpoint, 403)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
async def test_disabled_app_gets_403(api: Api, endpoint: Endpoint) -> None:
    app = await api.create_app()
    r = await api.http.put(
        f"/api/applications/{app['app_id']}", json={"status": False}, headers=api.admin
    )
    assert r.status_code == 200
    own = {"X-API-Key": app["api_key"]}
    r = await api.http.request(**endpoint.request(endpoint.implied(app)), headers=own)
    assert check_error(r, endpoint, 403) == "application is disabled"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
async def test_admin_must_name_an_existing_app(api: Api, endpoint: Endpoint) -> None:
    app = await api.create_app()
    if endpoint.names_app_in != "path" and endpoint.path != "/api/applications":
        r = await api.http.request(**endpoint.request(None), headers=api.admin)
        assert "app_id" in check_error(r, endpoint, 400)
    r = await api.http.request(**endpoint.request("no-such-app"), headers=api.admin)
    check_error(r, endpoint, 404)
    r = await api.http.request(**endpoint.request(app["app_id"]), headers=api.admin)
    assert r.status_code == endpoint.ok, r.text


async def test_authorization_header_only_on_the_realtime_surface(api: Api) -> None:
    """`Authorization: apikey|Bearer` is seed 001's; seed 000 documents X-*-API-KEY only."""
    app = await api.create_app()
    for scheme in ("apikey", "Bearer", "APIKEY"):
        headers = {"Authorization": f"{scheme} {app['api_key']}"}
        r = await api.http.post("/api/realtime/token", json={"userId": "u"}, headers=headers)
        assert r.status_code == 200, r.text
    r = await api.http.get(
        "/api/applications", headers={"Authorization": f"apikey {app['api_key']}"}
    )
    assert r.status_code == 401
    r = await api.http.post(
        "/api/realtime/token", json={"userId": "u"}, params={"api_key": app["api_key"]}
    )
    assert r.status_code == 200


async def test_client_api_key_grants_nothing(api: Api) -> None:
    app = await api.create_app()
    r = await api.http.get("/api/applications", headers={"X-API-Key": app["client_api_key"]})
    assert r.status_code == 401


async def test_auth_is_checked_before_the_body(api: Api) -> None:
    """Without a key, a malformed body still gets 401: nothing is learned before auth."""
    for path in ("/api/broadcast", "/api/realtime/token", "/api/realtime/publish"):
        r = await api.http.post(path, json={"unexpected": True})
        assert r.status_code == 401, (path, r.text)


async def test_admin_only_operations(api: Api) -> None:
    app = await api.create_app()
    key = {"X-API-Key": app["api_key"]}
    r = await api.http.post("/api/applications", json={"name": "x"}, headers=key)
    assert r.status_code == 403 and r.json()["success"] is False
    r = await api.http.delete(f"/api/applications/{app['app_id']}", headers=key)
    assert r.status_code == 403
    assert await api.runtime.db.apps.get_app(app["app_id"]) is not None  # type: ignore[union-attr]


async def test_failed_requests_change_nothing(api: Api) -> None:
    """Every refused request above leaves applications and webhooks exactly as they were."""
    mine, theirs = await api.create_app(name="mine"), await api.create_app(name="theirs")
    db = api.runtime.db
    assert db is not None

    async def state() -> list[Any]:
        apps = await db.apps.list_apps()
        hooks = [await db.webhooks.list_webhooks(a.app_id) for a in apps]
        return [application_view(a) for a in apps] + [[webhook_view(h) for h in hs] for hs in hooks]

    before = await state()
    for endpoint in ENDPOINTS:
        for headers in ({}, {"X-API-Key": "bogus"}, {"X-API-Key": mine["api_key"]}):
            await api.http.request(**endpoint.request(theirs["app_id"]), headers=headers)
    bad_bodies: list[tuple[str, str, Json]] = [
        ("PUT", f"/api/applications/{mine['app_id']}", {"rate_limit": 0}),
        ("PUT", f"/api/applications/{mine['app_id']}", {"name": "ok", "status": "off"}),
        ("PUT", f"/api/applications/{mine['app_id']}", {"namespaces": {"x": {"bad": 1}}}),
        ("POST", "/api/webhooks", {"url": "http://10.0.0.1/h", "events": ["*"]}),
        ("POST", "/api/webhooks", {"url": "https://93.184.216.34/h", "events": []}),
    ]
    for method, url, body in bad_bodies:
        r = await api.http.request(method, url, json=body, headers={"X-API-Key": mine["api_key"]})
        assert r.status_code == 400, (url, body, r.text)
    assert await state() == before
