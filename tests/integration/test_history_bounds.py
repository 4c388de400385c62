"""Issue 11's history probes against a real node (SQLite + memory broker): history memory is
bounded per app and freed when it expires (H1), nothing unencodable is ever published (M8),
history replies and recoveries are capped and namespace options bounded (M9)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.support.clients import engine_api, realtime_token
from tests.support.server import ServerProcess, running_server

Json = dict[str, Any]
MIB = 1024 * 1024
APP_BUDGET = 2 * MIB
REPLY_CAP = 64 * 1024


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "XSHATHRA_HISTORY_MAX_BYTES_PER_APP": str(APP_BUDGET),
        "XSHATHRA_HISTORY_MAX_BYTES": str(8 * MIB),
        "XSHATHRA_MAX_HISTORY_REPLY_BYTES": str(REPLY_CAP),
    }
    with running_server(tmp_path_factory.mktemp("history"), env=env) as proc:
        yield proc


def rss(node: ServerProcess) -> int:
    status = Path(f"/proc/{node.process.pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match
    return int(match.group(1)) * 1024


def history_bytes(node: ServerProcess) -> float:
    text = httpx.get(f"{node.base_url}/metrics").text
    match = re.search(r"^xshathra_history_bytes (\S+)$", text, re.M)
    assert match, "no xshathra_history_bytes gauge"
    return float(match.group(1))


def put_namespaces(node: ServerProcess, app: Json, namespaces: Json) -> httpx.Response:
    return httpx.put(
        f"{node.base_url}/api/applications/{app['app_id']}",
        json={"namespaces": namespaces},
        headers={"X-API-Key": str(app["api_key"])},
    )


async def replies(ws: Any, count: int, timeout: float = 5) -> list[Json]:
    found: list[Json] = []
    while len(found) < count:
        frame = await asyncio.wait_for(ws.recv(), timeout)
        found += [json.loads(line) for line in str(frame).split("\n") if line]
    return found


async def command(ws: Any, cmd: Json) -> Json:
    """Send one command; return its reply (pushes meanwhile are skipped)."""
    await ws.send(json.dumps(cmd))
    while True:
        for msg in await replies(ws, 1):
            if msg.get("id") == cmd["id"]:
                return msg


# --- H1: history memory ----------------------------------------------------------------------


def test_broadcast_flood_stays_within_the_app_budget(node: ServerProcess) -> None:
    """The probe: one app broadcasts big messages to many public: channels. The node keeps at
    most the app's budget of it (RSS grows by far less than what was sent), another app's
    history survives, and the flooder's evicted channel is unrecoverable (112), not a gap."""
    victim, flooder = node.create_app(name="victim"), node.create_app(name="flooder")
    kept = engine_api(node, victim, "publish", {"channel": "public:keep", "data": {"v": 1}})
    first = engine_api(node, flooder, "publish", {"channel": "public:f0", "data": {"v": 0}})
    before = rss(node)
    data = {"blob": "x" * 60_000}
    for batch in range(5):  # 500 channels x 60 KB = 30 MB asked to be kept
        channels = [f"public:f{batch}-{i}" for i in range(100)]
        body = engine_api(node, flooder, "broadcast", {"channels": channels, "data": data})
        responses = body["result"]["responses"]
        assert all("result" in r for r in responses), responses[:1]
    grown = rss(node) - before
    assert grown < 15 * MIB, (
        f"RSS grew by {grown / MIB:.1f} MiB for a {APP_BUDGET / MIB} MiB budget"
    )
    assert history_bytes(node) <= 8 * MIB
    got = engine_api(node, victim, "history", {"channel": "public:keep", "limit": -1})
    assert [p["data"] for p in got["result"]["publications"]] == [{"v": 1}]
    assert got["result"]["epoch"] == kept["result"]["epoch"]
    since = {"offset": first["result"]["offset"], "epoch": first["result"]["epoch"]}
    gone = engine_api(
        node, flooder, "history", {"channel": "public:f0", "since": since, "limit": -1}
    )
    assert gone.get("error", {}).get("code") == 112, gone


async def test_expired_history_is_freed_without_another_publish(node: ServerProcess) -> None:
    """A 1 s TTL namespace: after the TTL, the memory it held is released by the node itself."""
    app = node.create_app(name="ttl")
    assert put_namespaces(node, app, {"short": {"history_size": 10, "history_ttl": 1}}).is_success
    base = history_bytes(node)
    channels = [f"short:{i}" for i in range(30)]
    engine_api(node, app, "broadcast", {"channels": channels, "data": {"b": "y" * 50_000}})
    assert history_bytes(node) - base > 1 * MIB
    deadline = asyncio.get_running_loop().time() + 5
    while history_bytes(node) - base > 64 * 1024:  # only the 30 positions may stay
        assert asyncio.get_running_loop().time() < deadline, "expired history never freed"
        await asyncio.sleep(0.1)  # the node's sweep runs on its own schedule


# --- M8: publications that cannot be encoded ---------------------------------------------------


async def test_lone_surrogate_is_refused_before_publishing(node: ServerProcess) -> None:
    """A lone surrogate as a broadcast event (seed 000) or engine API tag answers 400 / 107 and
    publishes nothing: a subscriber gets nothing, history stays readable and then works."""
    app = node.create_app(name="surrogate")
    async with websockets.connect(node.ws_url) as ws:
        await command(ws, {"id": 1, "connect": {"token": realtime_token(node, app, "u")}})
        sub = await command(ws, {"id": 2, "subscribe": {"channel": "public:s"}})
        assert "subscribe" in sub, sub
        headers = {"X-API-Key": str(app["api_key"]), "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=node.base_url, headers=headers) as http:
            seed = await http.post(
                "/api/broadcast", content=b'{"room": "public:s", "event": "\\ud800", "data": {}}'
            )
            assert seed.status_code == 400, seed.text
            assert seed.json()["success"] is False and "Unicode" in seed.json()["error"]
            data = await http.post(
                "/api/broadcast",
                content=b'{"room": "public:s", "event": "e", "data": {"x": "\\udfff"}}',
            )
            assert data.status_code == 400, data.text
            engine = await http.post(
                "/realtime/api/publish",
                content=b'{"channel": "public:s", "data": {}, "tags": {"e": "\\ud800"}}',
            )
            assert engine.status_code in (200, 400), engine.text
            assert engine.json()["error"]["code"] == 107, engine.text
        hist = await command(ws, {"id": 3, "history": {"channel": "public:s", "limit": -1}})
        assert "history" in hist and not hist["history"].get("publications"), hist
        engine_api(
            node, app, "broadcast", {"channels": ["public:s"], "data": "ok", "tags": {"e": "ok"}}
        )
        (push,) = await replies(ws, 1)
        assert push["push"]["pub"]["data"] == "ok" and push["push"]["pub"]["tags"] == {"e": "ok"}
        hist = await command(ws, {"id": 4, "history": {"channel": "public:s", "limit": -1}})
        assert [p["data"] for p in hist["history"]["publications"]] == ["ok"]


# --- M9: reply caps and option bounds ---------------------------------------------------------


async def test_history_replies_and_recovery_are_capped(node: ServerProcess) -> None:
    """200 KB in history, a 64 KiB cap: a history call returns what fits (and pages on), a
    recovery that does not fit answers recovered=false, a small one still recovers."""
    app = node.create_app(name="big-history")
    first = engine_api(node, app, "publish", {"channel": "public:big", "data": "z" * 20_000})
    for _ in range(9):
        last = engine_api(node, app, "publish", {"channel": "public:big", "data": "z" * 20_000})
    page = engine_api(node, app, "history", {"channel": "public:big", "limit": -1})["result"]
    offsets = [p["offset"] for p in page["publications"]]
    assert 1 <= len(offsets) <= 3 and offsets[0] == 1, offsets
    epoch = first["result"]["epoch"]
    async with websockets.connect(node.ws_url) as ws:
        await command(ws, {"id": 1, "connect": {"token": realtime_token(node, app, "u")}})
        hist = await command(ws, {"id": 2, "history": {"channel": "public:big", "limit": -1}})
        assert hist["error"]["code"] == 103  # not subscribed: permission denied
        far = {"channel": "public:big", "recover": True, "epoch": epoch, "offset": 0}
        sub = (await command(ws, {"id": 3, "subscribe": far}))["subscribe"]
        assert sub.get("recovered") is not True and not sub.get("publications")
        assert sub["offset"] == last["result"]["offset"]
        hist = await command(ws, {"id": 4, "history": {"channel": "public:big", "limit": -1}})
        assert 1 <= len(hist["history"]["publications"]) <= 3
        assert len(json.dumps(hist)) < REPLY_CAP + 4096
    async with websockets.connect(node.ws_url) as ws:
        await command(ws, {"id": 1, "connect": {"token": realtime_token(node, app, "u2")}})
        near = {"channel": "public:big", "recover": True, "epoch": epoch, "offset": 8}
        sub = (await command(ws, {"id": 2, "subscribe": near}))["subscribe"]
        assert sub["recovered"] is True and [p["offset"] for p in sub["publications"]] == [9, 10]


@pytest.mark.parametrize(
    ("option", "value"),
    [("history_ttl", 10**20), ("history_ttl", 30 * 86400 + 1), ("history_size", 10_001)],
)
def test_namespace_history_options_are_bounded(
    node: ServerProcess, option: str, value: int
) -> None:
    """An absurd history_ttl (10^20 broke every publish of the namespace on Redis) or size is
    refused with a clear error naming the option; the app keeps its namespaces."""
    app = node.create_app(name="bounds")
    ns = {"chat": {"history_size": 10, "history_ttl": 60}}
    assert put_namespaces(node, app, ns).is_success
    r = put_namespaces(node, app, {"chat": {"history_size": 10, "history_ttl": 60, option: value}})
    assert r.status_code == 400, r.text
    assert r.json()["success"] is False and option in r.json()["error"]
    got = httpx.get(
        f"{node.base_url}/api/applications", headers={"X-API-Key": str(app["api_key"])}
    ).json()["application"]["namespaces"]
    assert got["chat"]["history_ttl"] == 60
