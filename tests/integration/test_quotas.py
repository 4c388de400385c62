"""Quotas the operator sets per app (admin key): connections, connections per user, channels
per connection, message size and the rate_limit ceiling; over quota is 3504, 106 or 429, never
a silent drop; one app flooding cannot slow another app down."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any

import httpx
import websockets

from tests.integration.test_access_controls import connected, refused_with
from tests.integration.test_cluster import subscribe
from tests.integration.test_engine_bad_input import replies
from tests.support.clients import realtime_token
from tests.support.server import ServerProcess

Json = dict[str, Any]


def set_quotas(server: ServerProcess, app: Json, headers: dict[str, str], **quotas: Any) -> Any:
    return httpx.put(
        f"{server.base_url}/api/applications/{app['app_id']}", json=quotas, headers=headers
    )


def admin_quotas(server: ServerProcess, app: Json, **quotas: Any) -> Json:
    r = set_quotas(server, app, server.admin_headers(), **quotas)
    assert r.status_code == 200, r.text
    result: Json = r.json()["application"]
    return result


def app_key(app: Json) -> dict[str, str]:
    return {"X-API-Key": str(app["api_key"])}


def test_only_the_operator_sets_quotas(server: ServerProcess) -> None:
    app = server.create_app(name="quota-owner")
    assert app["max_connections"] is None and app["rate_limit_ceiling"] is None
    refused = set_quotas(server, app, app_key(app), max_connections=100000)
    assert refused.status_code == 403 and "operator" in refused.json()["error"]
    shown = admin_quotas(server, app, max_connections=5, max_message_size=100)
    assert shown["max_connections"] == 5 and shown["max_message_size"] == 100
    # Only the quotas named change; null clears one back to the deployment's limit.
    shown = admin_quotas(server, app, max_connections=None)
    assert shown["max_connections"] is None and shown["max_message_size"] == 100
    for bad in (0, -1, 10**12, "5", True):
        r = set_quotas(server, app, server.admin_headers(), max_channels_per_connection=bad)
        assert r.status_code == 400, (bad, r.text)


def test_rate_limit_ceiling_bounds_the_apps_own_key(server: ServerProcess) -> None:
    app = server.create_app(name="ceiling")
    admin_quotas(server, app, rate_limit_ceiling=50)
    too_high = set_quotas(server, app, app_key(app), rate_limit=51)
    assert too_high.status_code == 400 and "50" in too_high.json()["error"]
    assert set_quotas(server, app, app_key(app), rate_limit=50).status_code == 200
    # The operator is not bound by it.
    assert admin_quotas(server, app, rate_limit=5000)["rate_limit"] == 5000


async def test_connection_quotas(server: ServerProcess) -> None:
    app = server.create_app(name="conn-quota")
    admin_quotas(server, app, max_connections=3, max_connections_per_user=2)
    first = await connected(server, realtime_token(server, app, "ann"))
    second = await connected(server, realtime_token(server, app, "ann"))
    assert await refused_with(server, realtime_token(server, app, "ann")) == 3504
    third = await connected(server, realtime_token(server, app, "ben"))
    assert await refused_with(server, realtime_token(server, app, "cat")) == 3504
    await first.close()
    # A place freed is a place again (the close is seen by the node shortly after).
    deadline = time.monotonic() + 5
    while True:
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(
                json.dumps({"id": 1, "connect": {"token": realtime_token(server, app, "cat")}})
            )
            try:
                answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
            except websockets.ConnectionClosed:
                answer = {}
            if "connect" in answer:
                break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)  # the server has to notice the close first
    for ws in (second, third):
        await ws.close()


async def test_channel_and_message_size_quotas(server: ServerProcess) -> None:
    app = server.create_app(name="chan-quota")
    admin_quotas(server, app, max_channels_per_connection=1, max_message_size=16)
    ws = await connected(server, realtime_token(server, app, "dan"))
    assert "subscribe" in await subscribe(ws, "public:one")
    await ws.send(json.dumps({"id": 3, "subscribe": {"channel": "public:two"}}))
    answer = next(m for m in await replies(ws, 1) if m.get("id") == 3)
    assert answer["error"]["code"] == 106
    r = httpx.post(
        f"{server.base_url}/realtime/api/publish",
        json={"channel": "public:one", "data": "x" * 40},
        headers=app_key(app),
    )
    assert r.status_code == 200 and r.json()["error"]["code"] == 106
    metrics = httpx.get(f"{server.base_url}/metrics").text
    assert 'xshathra_refusals_total{reason="channel_limit"}' in metrics
    assert 'xshathra_refusals_total{reason="message_size"}' in metrics
    ok = httpx.post(
        f"{server.base_url}/realtime/api/publish",
        json={"channel": "public:one", "data": "small"},
        headers=app_key(app),
    )
    assert "result" in ok.json(), ok.text
    await ws.close()


async def _latencies(server: ServerProcess, app: Json, ws: Any, count: int) -> list[float]:
    """Publish-to-receive times (seconds) of `count` publications, one at a time."""
    found: list[float] = []
    async with httpx.AsyncClient(base_url=server.base_url, headers=app_key(app)) as http:
        for i in range(count):
            started = time.perf_counter()
            r = await http.post(
                "/realtime/api/publish", json={"channel": "public:lat", "data": {"i": i}}
            )
            assert "result" in r.json(), r.text
            while True:
                pushes = [m for m in await replies(ws, 1) if "push" in m]
                if any(p["push"].get("pub", {}).get("data") == {"i": i} for p in pushes):
                    break
            found.append(time.perf_counter() - started)
    return found


# The noisy app's flood, in a process of its own: in the test's event loop it would delay the
# quiet app's measurement itself. Publishes (4 at a time, no pause) and connects (2 at a time,
# held open) while on: each stdin line toggles it (it starts off, answering "on"/"off" once
# the switch took); at the end of stdin it stops and prints its outcomes as JSON.
_FLOOD = """
import asyncio, json, os, sys
import httpx, websockets

os.nice(10)  # the attacker's own CPU is not the server's to share (it runs elsewhere in life)

base, ws_url, key, token = sys.argv[1:5]
outcomes = {}

def count(name):
    outcomes[name] = outcomes.get(name, 0) + 1

async def publishes(on, stop):
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}) as http:
        while not stop.is_set():
            await on.wait()
            body = {"channel": "public:f", "data": "x" * 1000}
            r = await http.post("/realtime/api/publish", json=body)
            count(str(r.status_code))

async def connects(on, stop):
    held = []
    while not stop.is_set():
        await on.wait()
        ws = await websockets.connect(ws_url)
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        try:
            answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
            held.append(ws)
            count("connected" if "connect" in answer else f"error{answer['error']['code']}")
        except websockets.ConnectionClosed as exc:
            count(f"ws{exc.rcvd.code if exc.rcvd else 0}")
    for ws in held:
        await ws.close()

async def main():
    on, stop = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    tasks = [asyncio.create_task(publishes(on, stop)) for _ in range(4)]
    tasks += [asyncio.create_task(connects(on, stop)) for _ in range(2)]
    print("ready", flush=True)
    while await loop.run_in_executor(None, sys.stdin.readline):
        if on.is_set():
            on.clear()
            await asyncio.sleep(0.2)  # requests under way finish before the quiet ones
        else:
            on.set()
            await asyncio.sleep(0.5)  # the flood is under way (and refused) before measuring
        print("on" if on.is_set() else "off", flush=True)
    stop.set()
    on.set()
    await asyncio.gather(*tasks)
    print(json.dumps(outcomes), flush=True)

asyncio.run(main())
"""


async def test_a_flooding_app_does_not_slow_another(server: ServerProcess) -> None:
    """SPEC §11: while one app floods publishes (4 at a time, refused 429 past its rate limit)
    and connects (refused 3504 past its `max_connections`), another app's median
    publish-to-receive latency stays within twice its idle median.

    Idle and flooded windows alternate (four of each, 20 samples a window, medians over all
    80), so load on the machine that comes and goes during the test weighs on both figures
    alike. The bound is 2x idle plus 5 ms: idle medians are about 1 ms, and on a loaded
    2-core CI machine (this test, the server and the flooding process share those cores) one
    timer tick or one context switch is already a millisecond or more; 5 ms is that
    resolution, not slack for the server. What used to break the 2x: every connect, refused
    ones included, read its app from the store (on SQLite a worker thread taking the GIL from
    the event loop); the engine now reads apps through the node's invalidated app cache. And
    the flooding process runs at a lower priority (nice 10): on a shared 2-core machine its
    own CPU came out of the server's share (measured at load 8: flooded medians of 12 ms
    against 2 ms idle before, about equal to idle after, with as many refusals), which is a
    property of the test bench, not of the server (an attacker's client runs elsewhere)."""
    quiet = server.create_app(name="quiet")
    noisy = server.create_app(name="noisy", rate_limit=100)
    admin_quotas(server, noisy, max_connections=5)
    ws = await connected(server, realtime_token(server, quiet, "q"))
    assert "subscribe" in await subscribe(ws, "public:lat")
    await _latencies(server, quiet, ws, 10)  # warm up
    flood = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _FLOOD,
        server.base_url,
        server.ws_url,
        str(noisy["api_key"]),
        realtime_token(server, noisy, "flood"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert flood.stdin is not None and flood.stdout is not None

    async def toggle(expect: bytes) -> None:
        assert flood.stdin is not None and flood.stdout is not None
        flood.stdin.write(b"toggle\n")
        await flood.stdin.drain()
        assert await asyncio.wait_for(flood.stdout.readline(), 30) == expect

    idle_samples: list[float] = []
    loaded_samples: list[float] = []
    try:
        assert await asyncio.wait_for(flood.stdout.readline(), 30) == b"ready\n"
        for _ in range(4):
            idle_samples += await _latencies(server, quiet, ws, 20)
            await toggle(b"on\n")
            loaded_samples += await _latencies(server, quiet, ws, 20)
            # What the node holds while flooded: the quiet app's one and the noisy app's quota.
            metrics = httpx.get(f"{server.base_url}/metrics").text
            (held,) = [m for m in metrics.splitlines() if m.startswith("xshathra_connections")]
            await toggle(b"off\n")
    finally:
        flood.stdin.close()
        report = await asyncio.wait_for(flood.stdout.read(), 30)
        await flood.wait()
    idle = statistics.median(idle_samples)
    loaded = statistics.median(loaded_samples)
    outcomes = json.loads(report)
    print(
        f"quiet app publish-to-receive median: idle {idle * 1000:.1f} ms, "
        f"while flooded {loaded * 1000:.1f} ms; noisy outcomes {outcomes}"
    )
    # Refused loudly: 429 past its rate limit, 3504 past its connection quota.
    assert outcomes.get("429", 0) > 0 and outcomes.get("ws3504", 0) > 0, outcomes
    assert float(held.split()[-1]) <= 1 + 5, held
    # SPEC's twice the idle figure, plus the timer resolution of a shared 2-core machine.
    assert loaded <= 2 * idle + 0.005, (idle, loaded)
    await ws.close()
