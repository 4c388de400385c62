"""Bad requests against a real node: each surface answers in its own error shape with the
documented status, bodies are cut off at the limit even when streamed, and neither answers
nor the server's log ever carry a key or a secret."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess

Json = dict[str, Any]

# (method, path) of every endpoint that takes a JSON body; "{app}" is the caller's app_id.
JSON_ENDPOINTS = [
    ("POST", "/api/token"),
    ("POST", "/api/broadcast"),
    ("POST", "/api/applications"),
    ("PUT", "/api/applications/{app}"),
    ("POST", "/api/webhooks"),
    ("POST", "/api/realtime/token"),
    ("POST", "/api/realtime/subscription-token"),
    ("POST", "/api/realtime/publish"),
]


# Nesting deeper than any decoder's stack: refused as bad JSON, never a 500.
DEEP = b'{"channel": "c", "room": "r", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield client


@pytest.fixture
def app(server: ServerProcess) -> Json:
    return server.create_app(name="errors")


def headers_for(server: ServerProcess, app: Json, path: str) -> dict[str, str]:
    """Valid credentials for the path: admin for app creation, the app's key elsewhere."""
    if path == "/api/applications":
        return server.admin_headers()
    return {"X-API-Key": str(app["api_key"])}


def assert_shape(r: httpx.Response, status: int) -> str:
    """The status, a JSON content type, and the error object of the path's surface."""
    assert r.status_code == status, (r.request.url, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    if r.request.url.path.startswith("/api/realtime/"):
        assert set(body) == {"error"}, body
    else:
        assert body["success"] is False and set(body) == {"success", "error"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in r.text and 'File "' not in r.text
    return str(body["error"])


@pytest.mark.parametrize(("method", "path"), JSON_ENDPOINTS)
@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"a": 1', b"\xff\xfe\x00garbage", b'{"a": 1}}', b"nan", DEEP],
    ids=["broken", "truncated", "binary", "trailing", "bare-word", "too-deep"],
)
def test_invalid_json_is_400(
    server: ServerProcess, http: httpx.Client, app: Json, method: str, path: str, raw: bytes
) -> None:
    headers = {**headers_for(server, app, path), "content-type": "application/json"}
    r = http.request(
        method, path.replace("{app}", str(app["app_id"])), content=raw, headers=headers
    )
    assert_shape(r, 400)


@pytest.mark.parametrize(("method", "path"), JSON_ENDPOINTS)
@pytest.mark.parametrize(
    "body", [[1, 2], "text", 7, None], ids=["array", "string", "number", "null"]
)
def test_a_body_that_is_not_an_object_is_400(
    server: ServerProcess, http: httpx.Client, app: Json, method: str, path: str, body: object
) -> None:
    url = path.replace("{app}", str(app["app_id"]))
    r = http.request(method, url, json=body, headers=headers_for(server, app, path))
    assert_shape(r, 400)


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/api/broadcast", {"event": "e"}, "room is required"),
        ("/api/broadcast", {"room": "r", "event": 5}, "event must be a string"),
        ("/api/broadcast", {"room": ["r"], "event": "e"}, "room must be a string"),
        ("/api/webhooks", {"url": "https://example.com", "events": [1]}, "events.0 must be"),
        ("/api/realtime/token", {"userId": None}, "userId must be a string"),
        ("/api/realtime/token", {"ttlSeconds": 60}, "userId is required"),
        ("/api/realtime/subscription-token", {"userId": "u", "channel": 3}, "channel must be"),
    ],
)
def test_messages_name_the_field(
    server: ServerProcess, http: httpx.Client, app: Json, path: str, body: Json, message: str
) -> None:
    r = http.post(path, json=body, headers=headers_for(server, app, path))
    assert assert_shape(r, 400).startswith(message)


def test_unknown_paths_and_methods(http: httpx.Client) -> None:
    assert assert_shape(http.get("/api/no-such-thing"), 404) == "not found"
    assert assert_shape(http.post("/api/realtime/no-such-thing"), 404) == "not found"
    assert assert_shape(http.get("/api/token"), 405) == "method not allowed"
    assert assert_shape(http.get("/api/realtime/publish"), 405) == "method not allowed"


@pytest.mark.parametrize(
    "path", ["/api/token", "/api/broadcast", "/api/realtime/token", "/api/realtime/publish"]
)
def test_streamed_bodies_are_cut_off_at_the_limit(
    server: ServerProcess, http: httpx.Client, app: Json, path: str
) -> None:
    """Chunked uploads (no Content-Length) past 1 MiB get 413, not 400 and not a hang."""
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"room": "r", "event": "e", "userId": "u", "channel": "c", "data": "'
        for _ in range(64):  # 4 MiB in all, if nobody stopped it
            sent += 1
            yield b"x" * 65536
        yield b'"}'

    headers = {**headers_for(server, app, path), "content-type": "application/json"}
    try:
        r = http.post(path, content=chunks(), headers=headers)
    except httpx.WriteError:
        pytest.fail("the server closed the connection without answering")
    assert "content-length" not in r.request.headers
    assert assert_shape(r, 413) == "request body too large"


def test_declared_oversized_body_is_refused_before_reading(
    server: ServerProcess, http: httpx.Client, app: Json
) -> None:
    r = http.post(
        "/api/realtime/publish",
        content=b"{" + b" " * 1_100_000 + b"}",
        headers={**headers_for(server, app, "/api/realtime/publish"), "content-type": "text/plain"},
    )
    assert assert_shape(r, 413) == "request body too large"


@pytest.mark.parametrize("path", ["/realtime/api/publish", "/realtime/api/batch"])
def test_engine_api_bodies_past_the_limit_get_its_error_shape(
    server: ServerProcess, http: httpx.Client, app: Json, path: str
) -> None:
    """The server API answers outside FastAPI (api.server.engine_http): the limit holds there too,
    declared or streamed, in Centrifugo's error shape; the node goes on answering."""
    key = {"X-API-Key": str(app["api_key"]), "content-type": "application/json"}
    too_large = {"error": {"code": 106, "message": "request body too large"}}
    declared = http.post(path, content=b"{" + b" " * 1_100_000 + b"}", headers=key)
    assert (declared.status_code, declared.json()) == (413, too_large)

    def chunks() -> Iterator[bytes]:
        yield b'{"channel": "c", "data": "'
        for _ in range(64):
            yield b"x" * 65536
        yield b'"}'

    streamed = http.post(path, content=chunks(), headers=key)
    assert "content-length" not in streamed.request.headers
    assert (streamed.status_code, streamed.json()) == (413, too_large)
    ok = http.post("/realtime/api/publish", json={"channel": "c", "data": {}}, headers=key)
    assert ok.status_code == 200 and "result" in ok.json(), ok.text


def test_no_secret_in_answers_or_the_log(
    server: ServerProcess, http: httpx.Client, app: Json
) -> None:
    """Refused requests with real and almost-real keys: none shows up anywhere."""
    real_key, secret = str(app["api_key"]), str(app["app_secret"])
    near_key = real_key[:-1] + ("A" if real_key[-1] != "A" else "B")
    answers = [
        http.get("/api/applications", params={"api_key": near_key}),
        http.get("/api/applications", headers={"X-ADMIN-API-KEY": real_key}),
        http.post("/api/token", json={"app_id": app["app_id"], "app_secret": secret + "x"}),
        http.post("/api/token", json={"app_id": app["app_id"], "app_secret": 5}),
        http.post("/api/realtime/token", headers={"Authorization": f"apikey {near_key}"}, json={}),
        http.post(
            "/api/broadcast",
            headers={"X-API-Key": real_key},
            json={"room": "bad room", "event": "e", "data": {"secret": secret}},
        ),
    ]
    assert [r.status_code for r in answers] == [401, 401, 401, 400, 401, 400]
    log = server.log()
    for r in answers:
        assert_shape(r, r.status_code)
        for value in (real_key, near_key, secret, server.admin_key):
            assert value not in r.text
    for value in (real_key, near_key, secret, server.admin_key):
        assert value not in log
    assert http.get("/realtime/health").status_code == 200  # and the node is still up
