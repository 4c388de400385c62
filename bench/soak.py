"""The soak (`make soak`, not in `make test`): two nodes on PostgreSQL and Redis under mixed load
for `--duration` seconds (1800 by default): steady subscribers, clients that keep reconnecting,
publications with sequence numbers through both nodes, presence reads, and webhooks to a
receiver that fails one request in five. Every few seconds each node's RSS and open file
descriptors are sampled; at the end it checks that nothing was lost (every acknowledged
publication reached every steady subscriber of its channel, in order; every webhook event
was delivered) and draws results/soak.png. Exit status 1 if anything was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import websockets
from tests.support.clients import realtime_token
from tests.support.receiver import Receiver
from tests.support.server import ServerProcess, running_server
from tests.support.services import REDIS_HOST, REDIS_PORT, ensure_service, postgres_database

RESULTS = Path(__file__).resolve().parent / "results"
CHANNELS = 4
STEADY_PER_NODE = 10
CHURN = 10


Sample = tuple[int, int, int, int]


def sample(node: ServerProcess) -> Sample:
    """(RSS bytes, open file descriptors, event-loop tasks, webhook attempts in flight) of a
    node: the first two from /proc, the others from its /metrics."""
    pid = node.process.pid
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(x.split()[1]) * 1024 for x in status.splitlines() if x.startswith("VmRSS:"))
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    gauges = {"xshathra_asyncio_tasks": -1, "xshathra_webhook_attempts_in_flight": -1}
    try:
        text = httpx.get(f"{node.base_url}/metrics", timeout=10).text
    except httpx.HTTPError:
        text = ""  # a missed scrape shows as -1, not as a flat line
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in gauges:
            gauges[name] = int(float(value))
    return rss, fds, gauges["xshathra_asyncio_tasks"], gauges["xshathra_webhook_attempts_in_flight"]


async def steady(
    node: ServerProcess, app: Any, channel: str, got: list[int], dead: list[str]
) -> None:
    """A subscriber that never leaves: records every sequence number it receives, and keeps
    its connection alive past its token's expiry with `refresh`, as an SDK does (a soak
    outlives any one token). Should it be closed anyway, `dead` says why."""
    user = "steady-" + secrets.token_hex(3)
    try:
        async with websockets.connect(node.ws_url) as ws:
            token = await asyncio.to_thread(realtime_token, node, app, user, ttl=300)
            await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
            await ws.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
            refresher: asyncio.Task[None] | None = None
            async for frame in ws:
                for line in str(frame).split("\n"):
                    if not line:
                        continue
                    message = json.loads(line)
                    if message == {}:
                        await ws.send("{}")  # the server's ping: pong
                    answer = message.get("connect") or message.get("refresh")
                    if answer and answer.get("expires"):
                        if refresher is not None:
                            refresher.cancel()
                        refresher = asyncio.create_task(
                            refresh_later(ws, node, app, user, float(answer["ttl"]))
                        )
                    pub = message.get("push", {}).get("pub")
                    if pub is not None:
                        got.append(int(pub["data"]["seq"]))
    except (OSError, websockets.WebSocketException) as exc:
        dead.append(f"{user} on {node.base_url}: {exc}")


async def refresh_later(
    ws: websockets.ClientConnection, node: ServerProcess, app: Any, user: str, ttl: float
) -> None:
    await asyncio.sleep(max(1.0, ttl / 2))
    token = await asyncio.to_thread(realtime_token, node, app, user, ttl=300)
    await ws.send(json.dumps({"id": 3, "refresh": {"token": token}}))


async def churn(nodes: list[ServerProcess], app: Any, stop: asyncio.Event) -> int:
    """Connect, subscribe, read presence, leave; again and again, alternating nodes."""
    cycles = 0
    while not stop.is_set():
        node = nodes[cycles % len(nodes)]
        try:
            async with websockets.connect(node.ws_url) as ws:
                token = realtime_token(node, app, f"churn-{cycles % 50}")
                await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
                await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "public:c0"}}))
                await ws.send(json.dumps({"id": 3, "presence": {"channel": "public:c0"}}))
                await asyncio.wait_for(ws.recv(), 5)
                await asyncio.sleep(0.5)
        except (OSError, TimeoutError, websockets.WebSocketException):
            pass
        cycles += 1
    return cycles


async def publish(
    nodes: list[ServerProcess], app: Any, channel: int, stop: asyncio.Event, rate: float
) -> tuple[list[int], int]:
    """One channel's publisher: sequence numbers through both nodes in turn, one request at a
    time (so the channel's order is the sequence's). Returns the acknowledged sequence numbers
    and how many publishes got no answer (a transport error: maybe published, maybe not, so a
    subscriber may or may not see them; never counted as acknowledged)."""
    acked: list[int] = []
    unanswered = 0
    seq = channel
    name = f"public:c{channel}"
    async with httpx.AsyncClient(headers={"X-API-Key": str(app["api_key"])}) as http:
        while not stop.is_set():
            seq += CHANNELS  # unique across channels: the webhook check reads them all
            node = nodes[(seq // CHANNELS) % len(nodes)]
            body = {"channel": name, "data": {"seq": seq}, "tags": {"event": "news"}}
            try:
                r = await http.post(f"{node.base_url}/realtime/api/publish", json=body)
                if "result" in r.json():
                    acked.append(seq)
            except httpx.HTTPError:
                unanswered += 1
            await asyncio.sleep(1 / rate)
    return acked, unanswered


def missing(got: list[int], acked: list[int]) -> bool:
    """Whether a steady subscriber lost an acknowledged publication, got one twice or out of
    order (unacknowledged ones may appear: their answer, not the publish, was lost)."""
    return got != sorted(set(got)) or not set(acked) <= set(got)


@contextmanager
def private_redis() -> Iterator[str]:
    """A Redis server of the soak's own on a free port, so no other work on the machine (a
    test that restarts the shared Redis, say) can disturb a 30-minute run."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as conn:
                if conn.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait()


async def run(duration: float, rate: float) -> int:
    env = {
        "XSHATHRA_BROKER_PREFIX": f"xs_soak_{secrets.token_hex(4)}",
        "XSHATHRA_WEBHOOK_RETRY_BASE": "0.2",
    }
    tmp = Path(f"/tmp/xshathra-soak-{secrets.token_hex(4)}")
    with ExitStack() as stack:
        url = stack.enter_context(postgres_database())
        if shutil.which("redis-server"):
            broker = stack.enter_context(private_redis())
        else:
            ensure_service("redis")
            broker = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
        a = stack.enter_context(
            running_server(tmp / "a", database_url=url, broker_url=broker, env=env)
        )
        b = stack.enter_context(
            running_server(
                tmp / "b", database_url=url, broker_url=broker, env=env, admin_key=a.admin_key
            )
        )
        nodes = [a, b]
        app = a.create_app(name="soak", rate_limit=1_000_000)
        flaky = Receiver(statuses=[500 if i % 5 == 0 else 200 for i in range(10**6)])
        hooks = stack.enter_context(flaky.running())
        async with httpx.AsyncClient() as http:
            r = await http.post(
                f"{a.base_url}/api/webhooks",
                json={"url": hooks.url, "events": ["news"]},
                headers={"X-API-Key": str(app["api_key"])},
            )
            r.raise_for_status()

        received: dict[str, list[list[int]]] = {f"public:c{i}": [] for i in range(CHANNELS)}
        listeners = []
        dead: list[str] = []
        for node in nodes:
            for i in range(STEADY_PER_NODE):
                channel = f"public:c{i % CHANNELS}"
                got: list[int] = []
                received[channel].append(got)
                listeners.append(asyncio.create_task(steady(node, app, channel, got, dead)))
        await asyncio.sleep(2)  # every steady subscriber is in before the first publish
        stop = asyncio.Event()
        churners = [asyncio.create_task(churn(nodes, app, stop)) for _ in range(CHURN)]
        publishers = [
            asyncio.create_task(publish(nodes, app, i, stop, rate / CHANNELS))
            for i in range(CHANNELS)
        ]
        samples: list[tuple[float, list[Sample]]] = []
        started = time.monotonic()
        while time.monotonic() - started < duration:
            taken = await asyncio.gather(*(asyncio.to_thread(sample, n) for n in nodes))
            samples.append((time.monotonic() - started, list(taken)))
            await asyncio.sleep(min(5.0, duration / 20))
        stop.set()
        outcomes = await asyncio.gather(*publishers)
        acked = {f"public:c{i}": seqs for i, (seqs, _) in enumerate(outcomes)}
        unanswered = sum(n for _, n in outcomes)
        cycles = sum(await asyncio.gather(*churners))
        total = sum(len(seqs) for seqs in acked.values())
        # Deliveries in flight and webhook retries settle.
        every_acked = {seq for seqs in acked.values() for seq in seqs}

        def hooked() -> set[int]:
            """Sequence numbers whose webhook event arrived (retries counted once)."""
            bodies = [r.json() for r in list(hooks.requests)]
            return {int(b["data"]["seq"]) for b in bodies if b["event"] == "news"}

        deadline = time.monotonic() + 120
        # Polling: the receiver runs in a thread and has no asyncio event to await.
        while time.monotonic() < deadline and not every_acked <= hooked():  # noqa: ASYNC110
            await asyncio.sleep(1)
        lost_pubs = 0
        for channel, lists in received.items():
            for got in lists:
                if missing(got, acked.get(channel, [])):
                    lost_pubs += 1
        for task in listeners:
            task.cancel()
        hooks_missing = len(every_acked - hooked())
        report = {
            "duration_s": duration,
            "publications_acked": total,
            "publishes_unanswered": unanswered,
            "steady_subscribers_closed": dead,
            "churn_cycles": cycles,
            "subscribers_missing_publications": lost_pubs,
            "webhook_events_of_acked_publications_missing": hooks_missing,
            "rss_mb_first_last": [
                [round(s[1][i][0] / 2**20, 1) for s in (samples[0], samples[-1])] for i in (0, 1)
            ],
            "fds_first_last": [[s[1][i][1] for s in (samples[0], samples[-1])] for i in (0, 1)],
            "tasks_first_last": [[s[1][i][2] for s in (samples[0], samples[-1])] for i in (0, 1)],
            "tasks_max": [max(s[1][i][2] for s in samples) for i in (0, 1)],
            "webhook_attempts_in_flight_max": [max(s[1][i][3] for s in samples) for i in (0, 1)],
        }
        print(json.dumps(report, indent=2))
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "soak.json").write_text(json.dumps({**report, "samples": samples}))
        draw(samples, RESULTS / "soak.png")
        return 0 if lost_pubs == 0 and not dead and hooks_missing == 0 else 1


def draw(samples: list[tuple[float, list[Sample]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, panels = plt.subplots(2, 2, figsize=(11, 7))
    titles = (
        "RSS (MiB)",
        "open file descriptors",
        "event-loop tasks",
        "webhook attempts in flight",
    )
    scale = (2**20, 1, 1, 1)
    times = [s[0] for s in samples]
    for k, (panel, title) in enumerate(zip(panels.flat, titles, strict=True)):
        for i, name in enumerate(("node a", "node b")):
            panel.plot(times, [s[1][i][k] / scale[k] for s in samples], label=name)
        panel.set(title=title, xlabel="seconds")
        panel.set_ylim(bottom=0)
        panel.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=1800.0)
    parser.add_argument("--rate", type=float, default=50.0, help="publications per second")
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.duration, args.rate)))


if __name__ == "__main__":
    main()
