"""Issue 11 (H1, M7, M2, M6 and two Lows), replayed against a real server: the work one HTTP
request may ask for is capped and counted against the app's rate limit, the `channels`
pattern is bounded, forwarded client addresses are believed only from configured proxies, key
guessing is throttled per client address, and a publish without `channel` says so."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess, running_server

Json = dict[str, Any]


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A node with small fan-out caps, so the caps can be crossed with small requests."""
    env = {"XSHATHRA_MAX_BROADCAST_CHANNELS": "20", "XSHATHRA_MAX_BATCH_COMMANDS": "20"}
    with running_server(tmp_path_factory.mktemp("capped"), env=env) as proc:
        yield proc


def call(srv: ServerProcess, app: Json, method: str, body: Json) -> httpx.Response:
    return httpx.post(
        f"{srv.base_url}/realtime/api/{method}",
        json=body,
        headers={"X-API-Key": str(app["api_key"])},
    )


def history_count(srv: ServerProcess, app: Json, channel: str) -> int:
    r = call(srv, app, "history", {"channel": channel, "limit": 100})
    assert r.status_code == 200, r.text
    return len(r.json()["result"]["publications"])


def publishes(n: int, tag: str) -> list[Json]:
    return [{"publish": {"channel": f"public:{tag}{i}", "data": {"i": i}}} for i in range(n)]


def test_each_channel_of_a_broadcast_counts_against_the_rate_limit(capped: ServerProcess) -> None:
    app = capped.create_app(name="broadcaster", rate_limit=10)
    channels = [f"public:b{i}" for i in range(6)]
    first = call(capped, app, "broadcast", {"channels": channels, "data": {"n": 1}})
    assert first.status_code == 200 and len(first.json()["result"]["responses"]) == 6
    again = [f"public:again{i}" for i in range(6)]
    second = call(capped, app, "broadcast", {"channels": again, "data": {"n": 2}})
    assert second.status_code == 429, second.text  # 6 + 6 > 10: refused as a whole
    assert int(second.headers["Retry-After"]) >= 1
    assert second.json()["error"]["code"] == 111
    # Nothing of the refused broadcast was done, and it used none of the budget: 6 + 4 fit.
    assert sum(history_count(capped, app, c) for c in again[:2]) == 0
    rest = call(capped, app, "broadcast", {"channels": again[:2], "data": {"n": 3}})
    assert rest.status_code == 200, rest.text


def test_each_command_of_a_batch_counts_against_the_rate_limit(capped: ServerProcess) -> None:
    app = capped.create_app(name="batcher", rate_limit=10)
    first = call(capped, app, "batch", {"commands": publishes(6, "first")})
    assert first.status_code == 200 and len(first.json()["replies"]) == 6
    second = call(capped, app, "batch", {"commands": publishes(6, "second")})
    assert second.status_code == 429, second.text
    assert int(second.headers["Retry-After"]) >= 1
    assert history_count(capped, app, "public:second0") == 0  # no partial batch


def test_a_broadcast_inside_a_batch_counts_its_channels(capped: ServerProcess) -> None:
    app = capped.create_app(name="nested", rate_limit=10)
    nested = {"broadcast": {"channels": [f"public:n{i}" for i in range(8)], "data": 1}}
    assert call(capped, app, "batch", {"commands": [nested]}).status_code == 200
    again = call(capped, app, "batch", {"commands": [nested]})
    assert again.status_code == 429, again.text


def test_fan_out_per_request_is_capped(capped: ServerProcess) -> None:
    """Over the node's caps (20 here): refused before any publish, naming the limit."""
    app = capped.create_app(name="wide", rate_limit=1000)
    channels = [f"public:w{i}" for i in range(21)]
    wide = call(capped, app, "broadcast", {"channels": channels, "data": 1})
    assert wide.status_code == 200 and "result" not in wide.json(), wide.text
    assert wide.json()["error"]["code"] == 106 and "20" in wide.json()["error"]["message"]
    assert history_count(capped, app, "public:w0") == 0
    batch = call(capped, app, "batch", {"commands": publishes(21, "wb")})
    assert batch.json()["error"]["code"] == 106 and "20" in batch.json()["error"]["message"]
    assert history_count(capped, app, "public:wb0") == 0
    nested = {"broadcast": {"channels": channels[:11], "data": 1}}
    both = call(capped, app, "batch", {"commands": [nested, nested]})  # 22 publishes in all
    assert both.json()["error"]["code"] == 106, both.text
    # Requests that fit the caps still run.
    assert call(capped, app, "broadcast", {"channels": channels[:20], "data": 1}).status_code == 200


def test_work_that_can_never_fit_the_apps_limit_says_so(capped: ServerProcess) -> None:
    app = capped.create_app(name="tiny", rate_limit=5)
    r = call(capped, app, "broadcast", {"channels": [f"public:t{i}" for i in range(6)], "data": 1})
    assert r.status_code == 200 and r.json()["error"]["code"] == 106, r.text
    assert "rate_limit" in r.json()["error"]["message"]


def test_channels_pattern_is_bounded(capped: ServerProcess) -> None:
    """A 300 KB pattern blocked every tenant for ~1.5 s: it is refused at once now."""
    app = capped.create_app(name="patterns")
    started = time.monotonic()
    r = call(capped, app, "channels", {"pattern": "*a" * 150_000 + "b"})
    elapsed = time.monotonic() - started
    assert r.status_code == 200 and r.json()["error"]["code"] == 107, r.text
    assert "pattern" in r.json()["error"]["message"]
    assert elapsed < 0.5, elapsed
    # The longest allowed pattern, built to backtrack, still answers quickly.
    started = time.monotonic()
    ok = call(capped, app, "channels", {"pattern": "*a" * 500 + "b"})
    assert ok.status_code == 200 and ok.json()["result"] == {"channels": {}}, ok.text
    assert time.monotonic() - started < 0.5


def test_publish_without_channel_names_the_field(server: ServerProcess) -> None:
    app = server.create_app(name="no-channel")
    for body in ({}, {"data": {"x": 1}}):
        r = httpx.post(
            f"{server.base_url}/api/realtime/publish",
            json=body,
            headers={"Authorization": f"apikey {app['api_key']}"},
        )
        assert r.status_code == 400, r.text
        assert "channel" in r.json()["error"], r.text


def token_codes(srv: ServerProcess, app: Json, forwarded: list[str]) -> list[int]:
    """`POST /api/token` (app_id + app_secret: no key, so the per-IP limit) from each address."""
    body = {"app_id": app["app_id"], "app_secret": app["app_secret"]}
    with httpx.Client(base_url=srv.base_url) as http:
        return [
            http.post("/api/token", json=body, headers={"X-Forwarded-For": ip}).status_code
            for ip in forwarded
        ]


def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(tmp_path: Path) -> None:
    """By default every request from loopback is loopback's: X-Forwarded-For cannot buy a
    fresh per-IP bucket."""
    addresses = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    env = {"XSHATHRA_TOKEN_RATE_LIMIT": "2"}
    with running_server(tmp_path / "plain", env=env) as srv:
        app = srv.create_app(name="xff")
        assert token_codes(srv, app, addresses) == [200, 200, 429]
    env["XSHATHRA_TRUSTED_PROXIES"] = "127.0.0.1, 10.0.0.0/8"
    with running_server(tmp_path / "proxied", env=env) as srv:
        app = srv.create_app(name="xff")
        assert token_codes(srv, app, addresses) == [200, 200, 200]
        assert token_codes(srv, app, ["198.51.100.1"] * 2) == [200, 429]


def test_failed_key_attempts_are_throttled_per_client(tmp_path: Path) -> None:
    env = {"XSHATHRA_AUTH_FAILURE_LIMIT": "3", "XSHATHRA_TRUSTED_PROXIES": "127.0.0.1"}
    with running_server(tmp_path, env=env) as srv:
        app = srv.create_app(name="guessed")
        guesser = {"X-Forwarded-For": "198.51.100.7"}
        other = {"X-Forwarded-For": "198.51.100.8"}
        with httpx.Client(base_url=srv.base_url) as http:

            def engine(key: str, via: dict[str, str]) -> int:
                r = http.post("/realtime/api/info", json={}, headers={"X-API-Key": key, **via})
                return r.status_code

            codes = [engine(f"wrong-{i}", guesser) for i in range(3)]
            assert codes == [401, 401, 401]
            # A key that would need a lookup is refused, the right one too while this node
            # has not cached it; on every surface.
            refused = http.post(
                "/realtime/api/info", json={}, headers={"X-API-Key": str(app["api_key"]), **guesser}
            )
            assert refused.status_code == 429, refused.text
            assert int(refused.headers["Retry-After"]) >= 1
            seed = http.get("/api/applications", headers={"X-ADMIN-API-KEY": "wrong", **guesser})
            assert seed.status_code == 429 and seed.json()["success"] is False
            # The admin key costs no lookup: it still works from the throttled address, so a
            # guesser (or a backend with a rotated key) behind one address locks nobody out.
            admin = http.get(
                "/api/applications", headers={"X-ADMIN-API-KEY": srv.admin_key, **guesser}
            )
            assert admin.status_code == 200, admin.text
            # Another client is not affected; once its use has cached the key, the key works
            # from the throttled address too, while guesses there are still refused.
            assert engine(str(app["api_key"]), other) == 200
            assert engine(str(app["api_key"]), guesser) == 200
            assert engine("wrong-again", guesser) == 429
            mine = http.get(
                "/api/applications", headers={"X-ADMIN-API-KEY": srv.admin_key, **other}
            )
            assert mine.status_code == 200
