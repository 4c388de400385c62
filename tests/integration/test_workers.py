"""`xshathra serve --workers 2` (SPEC §12): one supervisor, two worker processes on one port,
sharing Redis (on SQLite) or NATS (on PostgreSQL). Clients land on both workers and everything
holds across them as across nodes: delivery of HTTP publications, presence, webhooks once,
analytics; a worker killed with -9 is restarted and its clients reconnect and recover; SIGTERM
drains every worker; the embedded memory broker is refused."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from centrifuge import Client

from tests.support.clients import Recorder, SubEvents, app_signed_token, make_client
from tests.support.receiver import Receiver
from tests.support.server import ServerProcess, free_port, running_server
from tests.support.services import (
    NATS_HOST,
    NATS_PORT,
    REDIS_HOST,
    REDIS_PORT,
    ensure_service,
    postgres_database,
)

Json = dict[str, Any]
WORKERS = ("--workers", "2")
CLIENTS = 12  # all on one worker by chance: 2 ** -11
STARTUP = 60.0  # a worker's start (a Python process importing the server) on a busy machine


def worker_pids(server: ServerProcess) -> set[int]:
    """The supervisor's child processes: its workers."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(c) for c in children}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) is gone for our purpose.
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


@contextlib.contextmanager
def start_workers(
    tmp: Path, broker: str, database_url: str | None = None
) -> Iterator[ServerProcess]:
    """`serve --workers 2`, yielded once both workers answer."""
    kind = broker.split(":", 1)[0]
    ensure_service(kind)
    env = {
        "XSHATHRA_BROKER_PREFIX": f"xs_wk_{secrets.token_hex(4)}",
        "XSHATHRA_WEBHOOK_RETRY_BASE": "0.05",
    }
    with running_server(
        tmp,
        broker_url=broker,
        database_url=database_url,
        env=env,
        args=WORKERS,
        stop_timeout=40,
        # The supervisor migrates before it starts the workers: two starts in a row.
        start_timeout=STARTUP,
    ) as server:
        probe = server.create_app(name="probe", rate_limit=1_000_000)
        answered: set[str] = set()
        deadline = time.monotonic() + STARTUP
        while len(answered) < 2:  # each request on a new connection: either worker takes it
            assert time.monotonic() < deadline, f"workers answering: {answered}"
            r = httpx.post(
                f"{server.base_url}/realtime/api/info",
                json={},
                headers={"X-API-Key": str(probe["api_key"])},
            )
            assert r.status_code == 200, r.text
            answered.add(r.json()["result"]["nodes"][0]["uid"])
            if len(answered) < 2:
                time.sleep(0.1)  # the other worker is still starting: its own schedule
        yield server


@pytest.fixture(scope="module", params=["redis", "nats"])
def pool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Two workers: on Redis with SQLite (WAL, shared by the processes), on NATS with
    PostgreSQL."""
    with ExitStack() as stack:
        if request.param == "redis":
            broker, url = f"redis://{REDIS_HOST}:{REDIS_PORT}/0", None
        else:
            broker = f"nats://{NATS_HOST}:{NATS_PORT}"
            url = stack.enter_context(postgres_database())
        tmp = tmp_path_factory.mktemp(f"workers-{request.param}")
        yield stack.enter_context(start_workers(tmp, broker, url))


async def node_clients(server: ServerProcess, app: Json, total: int) -> dict[str, int]:
    """Clients of `app` per worker (node uid), once the two workers' counts add up to `total`.
    `info` answers for every node from their heartbeats (every few seconds), the workers of
    one supervisor being nodes of one cluster: asked until both have reported the total."""
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient(headers={"X-API-Key": str(app["api_key"])}) as http:
        while len(seen) < 2 or sum(seen.values()) != total:
            assert time.monotonic() < deadline, f"workers seen: {seen}, expected {total} clients"
            r = await http.post(f"{server.base_url}/realtime/api/info", json={})
            assert r.status_code == 200, r.text
            nodes = r.json()["result"]["nodes"]
            seen = {node["uid"]: node.get("num_clients", 0) for node in nodes}
            if len(seen) < 2 or sum(seen.values()) != total:
                # Paced: each request draws from the app's rate limit (1,000 a minute).
                await asyncio.sleep(0.25)
    return seen


@contextlib.asynccontextmanager
async def subscribers(
    server: ServerProcess, app: Json, channel: str, count: int = CLIENTS, **kwargs: Any
) -> AsyncIterator[list[tuple[Client, Recorder]]]:
    """`count` centrifuge-python clients (users u0, u1, ...), each subscribed to `channel`."""
    made: list[tuple[Client, Recorder]] = []
    try:
        for i in range(count):
            rec = Recorder()
            client = make_client(server, rec, token=app_signed_token(app, f"u{i}"), **kwargs)
            made.append((client, rec))
            sub = client.new_subscription(channel, SubEvents(rec))
            await sub.subscribe()
            await client.connect()
            await sub.ready(10)
        yield made
    finally:
        for client, _ in made:
            await client.disconnect()


def publish(server: ServerProcess, app: Json, channel: str, data: Any) -> None:
    r = httpx.post(
        f"{server.base_url}/api/broadcast",
        headers={"X-API-Key": str(app["api_key"])},
        json={"room": channel, "event": "tick", "data": data},
    )
    assert r.status_code == 200, r.text


async def test_subscribers_land_on_both_workers_and_get_http_publications(
    pool: ServerProcess,
) -> None:
    app = pool.create_app(name="spread")
    async with subscribers(pool, app, "public:spread") as subs:
        per_worker = await node_clients(pool, app, CLIENTS)
        assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker
        for n in range(3):
            publish(pool, app, "public:spread", {"n": n})
        for _, rec in subs:
            got = [(await rec.next("publication")).pub.data for _ in range(3)]
            assert got == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_counts_idempotency_and_rate_limits_span_the_workers(pool: ServerProcess) -> None:
    """Subscriber counts are cluster-wide, an idempotency key is honoured whichever worker
    takes the retry, and an app's rate limit is one budget for all workers."""
    app = pool.create_app(name="shared", rate_limit=1_000_000)  # not this app's limit
    headers = {"X-API-Key": str(app["api_key"])}
    limits = httpx.Limits(max_keepalive_connections=0)  # each request: either worker
    async with (
        subscribers(pool, app, "public:count", count=6),
        httpx.AsyncClient(limits=limits, headers=headers) as http,
    ):
        await node_clients(pool, app, 6)
        counts = set()
        for _ in range(4):
            r = await http.post(
                f"{pool.base_url}/api/broadcast",
                json={"room": "public:count", "event": "e", "data": 1},
            )
            assert r.status_code == 200, r.text
            counts.add(r.json()["subscriber_count"])
        assert counts == {6}
        offsets = set()
        for _ in range(4):
            r = await http.post(
                f"{pool.base_url}/realtime/api/publish",
                json={"channel": "public:once", "data": {}, "idempotency_key": "k1"},
            )
            assert r.status_code == 200, r.text
            offsets.add(r.json()["result"]["offset"])
        assert offsets == {1}
    # A fresh app: 20 requests spread over both workers draw from one budget of 10 (11 when
    # a minute turns over mid-way and the sliding window weighs the last one a little less).
    capped = pool.create_app(name="capped", rate_limit=10)
    async with httpx.AsyncClient(
        limits=limits, headers={"X-API-Key": str(capped["api_key"])}
    ) as http:
        statuses = [
            (
                await http.post(
                    f"{pool.base_url}/realtime/api/publish",
                    json={"channel": "public:x", "data": {}},
                )
            ).status_code
            for _ in range(20)
        ]
    assert statuses.count(200) in (10, 11) and set(statuses) == {200, 429}, statuses


async def test_presence_is_whole_from_either_worker(pool: ServerProcess) -> None:
    """Presence asked of either worker lists the clients of both."""
    app = pool.create_app(name="presence")
    async with subscribers(pool, app, "public:here", count=6):
        await node_clients(pool, app, 6)  # clients on both workers
        answered: set[str] = set()
        headers = {"X-API-Key": str(app["api_key"])}
        deadline = time.monotonic() + 20
        while len(answered) < 2:
            assert time.monotonic() < deadline, answered
            # One connection for both requests, so one worker answers both.
            async with httpx.AsyncClient(headers=headers) as http:
                info = await http.post(f"{pool.base_url}/realtime/api/info", json={})
                presence = await http.post(
                    f"{pool.base_url}/realtime/api/presence", json={"channel": "public:here"}
                )
                assert presence.status_code == 200, presence.text
                users = sorted(c["user"] for c in presence.json()["result"]["presence"].values())
                assert users == [f"u{i}" for i in range(6)]
                answered.add(info.json()["result"]["nodes"][0]["uid"])


def test_webhooks_once_and_analytics_summed(pool: ServerProcess) -> None:
    """Both workers' dispatchers claim from one outbox: each event is delivered once; both
    workers' analytics add up."""
    app = pool.create_app(name="hooks")
    headers = {"X-API-Key": str(app["api_key"])}
    with Receiver().running() as rx:
        r = httpx.post(
            f"{pool.base_url}/api/webhooks",
            headers=headers,
            json={"url": rx.url, "secret": "whsec-workers", "events": ["*"]},
        )
        assert r.status_code == 201, r.text
        for i in range(20):
            # A new connection each: the broadcasts are spread over the workers.
            publish(pool, app, "room", i)
        got = rx.wait_for(20, timeout=30)
        ids = [g.json()["id"] for g in got]
        assert sorted(g.json()["data"] for g in got) == list(range(20))
        assert len(set(ids)) == len(ids) == 20
    deadline = time.monotonic() + 20
    while True:  # each worker flushes its counts every few seconds
        m = httpx.get(f"{pool.base_url}/api/analytics?period=24h", headers=headers).json()
        if m["metrics"]["events"]["broadcasts"] == 20:
            break
        assert time.monotonic() < deadline, m
        time.sleep(0.2)


async def test_a_killed_worker_is_restarted_and_its_clients_recover(pool: ServerProcess) -> None:
    """kill -9 of a worker: the supervisor starts another; its clients reconnect (to whichever
    worker takes them) and recover what was published meanwhile, in order, none missing."""
    app = pool.create_app(name="crash")
    channel = "public:crash"
    before = worker_pids(pool)
    assert len(before) == 2
    # Reconnecting after 1-2 s leaves time to publish while they are away.
    async with subscribers(
        pool, app, channel, min_reconnect_delay=1.0, max_reconnect_delay=2.0
    ) as subs:
        await node_clients(pool, app, CLIENTS)
        publish(pool, app, channel, 0)
        for _, rec in subs:
            assert (await rec.next("publication")).pub.data == 0
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        lost = await clients_lost([rec for _, rec in subs])
        # Which clients were on the victim is the kernel's choice; some were (2 ** -11).
        assert lost, "no client was on the killed worker"
        for n in (1, 2, 3):
            publish(pool, app, channel, n)  # the surviving worker takes these
        for rec in lost:
            again = await rec.next("subscribed", timeout=20)
            assert again.was_recovering and again.recovered
        for _, rec in subs:
            got = [(await rec.next("publication", timeout=10)).pub for _ in range(3)]
            assert [p.data for p in got] == [1, 2, 3]
            assert [p.offset for p in got] == [2, 3, 4]
    deadline = time.monotonic() + STARTUP
    while len(after := worker_pids(pool)) < 2 or victim in after:
        assert time.monotonic() < deadline, f"workers now {after}, before {before}"
        await asyncio.sleep(0.1)  # the supervisor restarts on its own schedule (backoff)
    assert after - before and not alive(victim)


async def clients_lost(recs: list[Recorder]) -> list[Recorder]:
    """The clients that report their connection lost (`connecting` with a non-zero code): the
    first within 10 s, the others with it (a killed process's sockets all close at once)."""

    async def lost(rec: Recorder) -> Recorder:
        await rec.next("connecting", lambda ctx: ctx.code != 0, timeout=10)
        return rec

    tasks = [asyncio.create_task(lost(rec)) for rec in recs]
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.wait(pending, timeout=1.0)
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return [r for r in results if isinstance(r, Recorder)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_drains_every_worker(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM or SIGINT to the supervisor: workers close their clients and exit, then it
    exits 0."""
    with start_workers(tmp_path, f"redis://{REDIS_HOST}:{REDIS_PORT}/0") as server:
        app = server.create_app(name="drain")
        async with subscribers(server, app, "public:drain", count=4) as subs:
            pids = worker_pids(server)
            assert len(pids) == 2
            server.process.send_signal(sig)
            for _, rec in subs:  # every client hears its connection end
                await rec.next("connecting", lambda ctx: ctx.code != 0, timeout=30)
            code = await asyncio.to_thread(server.process.wait, 40)
        assert code == 0, server.log()
        assert not any(alive(pid) for pid in pids)
        assert "Application shutdown complete" in server.log()


def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    """kill -9 of the supervisor: no worker stays behind holding the port."""
    with start_workers(tmp_path, f"redis://{REDIS_HOST}:{REDIS_PORT}/0") as server:
        pids = worker_pids(server)
        server.process.kill()
        server.process.wait(10)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in pids):
            assert time.monotonic() < deadline, "workers outlived their supervisor"
            time.sleep(0.1)  # each worker checks on its supervisor every second
    with socket.create_server(("127.0.0.1", server.port)):
        pass  # the port is free again


@pytest.mark.timeout(240)
def test_workers_that_cannot_start_stop_the_supervisor(tmp_path: Path) -> None:
    """A worker that keeps failing at start (its broker is unreachable) is retried with
    backoff a few times; then the supervisor stops, with exit code 1, rather than loop."""
    env = {
        **os.environ,
        "XSHATHRA_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        "XSHATHRA_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "XSHATHRA_ALLOW_WEAK_SECRETS": "1",
    }
    args = [sys.executable, "-m", "xshathra", "serve", "--port", str(free_port())]
    done = subprocess.run(
        [*args, "--workers", "2"], env=env, capture_output=True, timeout=200, cwd=tmp_path
    )
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "restarting in 0.5 s" in err and "restarting in 1.0 s" in err
    assert "failed 5 times in a row" in err


@pytest.mark.parametrize("how", ["flag", "env"])
def test_memory_broker_refuses_several_workers(tmp_path: Path, how: str) -> None:
    env = {
        **os.environ,
        "XSHATHRA_BROKER_URL": "memory://",
        "XSHATHRA_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
    }
    args = [sys.executable, "-m", "xshathra", "serve", "--port", str(free_port())]
    if how == "flag":
        args += ["--workers", "2"]
    else:
        env["XSHATHRA_WORKERS"] = "2"
    done = subprocess.run(args, env=env, capture_output=True, timeout=60, cwd=tmp_path)
    assert done.returncode != 0
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "XSHATHRA_BROKER_URL" in lines[0], lines
    assert "redis://" in lines[0] and "nats://" in lines[0]
    assert not (tmp_path / "x.db").exists()  # refused before anything was touched
