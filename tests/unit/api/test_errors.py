"""Error shapes by surface, readable validation messages, the body limit (declared and
streamed), and the catch-all 500 that never leaks a message."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel, StrictInt, StrictStr

from tests.unit.api.conftest import Api
from xshathra.api.http_app import error_body, install_error_handling

SECRET_TEXT = "db-password-hunter2"


class Body(BaseModel):
    room: StrictStr
    count: StrictInt = 0


def toy_app(max_body: int = 1000) -> FastAPI:
    """The three surfaces' prefixes, each with a body route, a raw-body route and a crash."""
    app = FastAPI()
    install_error_handling(app, max_body=max_body)
    for prefix in ("/api", "/api/realtime", "/realtime/api"):

        @app.post(f"{prefix}/body")
        async def with_body(body: Body) -> dict[str, str]:
            return {"room": body.room}

        @app.post(f"{prefix}/raw")
        async def raw(request: Request) -> dict[str, int]:
            return {"size": len(await request.body())}

        @app.get(f"{prefix}/crash")
        async def crash() -> None:
            raise RuntimeError(SECRET_TEXT)

    return app


@pytest.fixture
async def toy() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=toy_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


def test_error_body_follows_the_path() -> None:
    assert error_body("/api/broadcast", "x") == {"success": False, "error": "x"}
    assert error_body("/api/realtime/token", "x") == {"error": "x"}
    assert error_body("/realtime/api/publish", "x", status=413) == {
        "error": {"code": 106, "message": "x"}
    }
    assert error_body("/api/token", "slow", {"retry_after": 3}, status=429) == {
        "success": False,
        "error": "slow",
        "retry_after": 3,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "room is required"),
        ({"room": 5}, "room must be a string"),
        ({"room": "r", "count": "7"}, "count must be an integer"),
        ([1, 2], "request body must be a JSON object"),
        ("text", "request body must be a JSON object"),
    ],
)
async def test_validation_messages_are_readable(
    toy: httpx.AsyncClient, body: object, message: str
) -> None:
    r = await toy.post("/api/body", json=body)
    assert r.status_code == 400 and r.json() == {"success": False, "error": message}


async def test_invalid_and_missing_json(toy: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    r = await toy.post("/api/body", content=b'{"room": ', headers=headers)
    assert r.status_code == 400 and r.json()["error"] == "invalid JSON body"
    r = await toy.post("/api/realtime/body", content=b"", headers=headers)
    assert r.status_code == 400 and r.json() == {"error": "request body is required"}


async def test_unknown_route_and_method(toy: httpx.AsyncClient) -> None:
    r = await toy.get("/api/nowhere")
    assert r.status_code == 404 and r.json() == {"success": False, "error": "not found"}
    r = await toy.get("/api/realtime/body")
    assert r.status_code == 405 and r.json() == {"error": "method not allowed"}
    r = await toy.get("/realtime/api/body")
    assert r.status_code == 405 and r.json()["error"]["code"] == 104


@pytest.mark.parametrize("prefix", ["/api", "/api/realtime", "/realtime/api"])
async def test_declared_oversized_body_is_413(toy: httpx.AsyncClient, prefix: str) -> None:
    r = await toy.post(f"{prefix}/raw", content=b"x" * 1001)
    assert r.status_code == 413
    assert r.json() == error_body(f"{prefix}/raw", "request body too large", status=413)
    assert (await toy.post(f"{prefix}/raw", content=b"x" * 1000)).json() == {"size": 1000}


@pytest.mark.parametrize("route", ["/raw", "/body"])
@pytest.mark.parametrize("prefix", ["/api", "/api/realtime", "/realtime/api"])
async def test_streamed_oversized_body_is_413(
    toy: httpx.AsyncClient, prefix: str, route: str
) -> None:
    """Chunked upload without Content-Length: cut off at the limit, answered 413 (not 400)."""
    chunks_sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(100):
            chunks_sent += 1
            yield b"x" * 300

    r = await toy.post(
        f"{prefix}{route}", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in r.request.headers
    assert r.status_code == 413, r.text
    assert r.json() == error_body(f"{prefix}{route}", "request body too large", status=413)
    assert chunks_sent < 10  # reading stopped at the limit


@pytest.mark.parametrize("prefix", ["/api", "/api/realtime", "/realtime/api"])
async def test_crash_is_a_generic_500_and_the_log_hides_the_message(
    toy: httpx.AsyncClient, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    r = await toy.get(f"{prefix}/crash")
    assert r.status_code == 500
    assert r.json() == error_body(f"{prefix}/crash", "internal server error", status=500)
    assert SECRET_TEXT not in r.text
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "RuntimeError" in logged and f"{prefix}/crash" in logged
    assert SECRET_TEXT not in logged and SECRET_TEXT not in caplog.text


async def test_real_app_messages(api: Api) -> None:
    """The routes' own checks read as sentences naming the field."""
    app = await api.create_app()
    key = {"X-API-Key": app["api_key"]}
    cases: list[tuple[str, dict[str, object], str]] = [
        ("/api/broadcast", {"event": "e"}, "room is required"),
        ("/api/broadcast", {"room": "r", "event": 1}, "event must be a string"),
        ("/api/broadcast", {"room": "r"}, "event is required"),
        ("/api/realtime/token", {}, "userId is required"),
        (
            "/api/realtime/token",
            {"userId": "u", "ttlSeconds": "9"},
            "ttlSeconds must be an integer",
        ),
        ("/api/realtime/token", {"userId": "u", "ttlSeconds": 5}, "ttlSeconds must be between"),
        ("/api/realtime/token", {"userId": "u", "channels": [1]}, "channels.0 must be a string"),
        ("/api/realtime/token", {"userId": "u", "info": []}, "info must be an object"),
        ("/api/realtime/subscription-token", {"userId": "u"}, "channel is required"),
        ("/api/webhooks", {"url": "https://93.184.216.34/"}, "events is required"),
    ]
    for path, body, expected in cases:
        r = await api.http.post(path, json=body, headers=key)
        assert r.status_code == 400, (path, body, r.text)
        assert r.json()["error"].startswith(expected), (path, body, r.json())
    r = await api.http.put(
        f"/api/applications/{app['app_id']}",
        json={"namespaces": {"chat": {"history_size": -1}}},
        headers=key,
    )
    assert r.json()["error"] == "namespaces.chat.history_size must be at least 0"
    r = await api.http.put(
        f"/api/applications/{app['app_id']}",
        json={"namespaces": {"chat": {"presense": True}}},
        headers=key,
    )
    assert r.json()["error"] == "namespaces.chat.presense is not a known field"
