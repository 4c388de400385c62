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
import sys
import time
from contextlib import ExitStack
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


async def steady(node: ServerProcess, app: Any, channel: str, got: list[int]) -> None:
    """A subscriber that never leaves: records every sequence number it receives."""
    async with websockets.connect(node.ws_url) as ws:
        token = realtime_token(node, app, "steady-" + secrets.token_hex(3))
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
        async for frame in ws:
            for line in str(frame).split("\n"):
                if not line:
                    continue
                message = json.loads(line)
                if message == {}:
                    await ws.send("{}")  # the server's ping: pong
                pub = message.get("push", {}).get("pub")
                if pub is not None:
                    got.append(int(pub["data"]["seq"]))


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
    nodes: list[ServerProcess], app: Any, stop: asyncio.Event, rate: float
) -> dict[str, int]:
    """Sequence numbers per channel, through both nodes; returns the last acknowledged."""
    acked: dict[str, int] = {}
    seq = 0
    async with httpx.AsyncClient(headers={"X-API-Key": str(app["api_key"])}) as http:
        while not stop.is_set():
            seq += 1
            channel = f"public:c{seq % CHANNELS}"
            node = nodes[seq % len(nodes)]
            body = {"channel": channel, "data": {"seq": seq}, "tags": {"event": "news"}}
            r = await http.post(f"{node.base_url}/realtime/api/publish", json=body)
            if "result" in r.json():
                acked[channel] = acked.get(channel, 0) + 1
            await asyncio.sleep(1 / rate)
    return acked


async def run(duration: float, rate: float) -> int:
    ensure_service("redis")
    env = {
        "XSHATHRA_BROKER_PREFIX": f"xs_soak_{secrets.token_hex(4)}",
        "XSHATHRA_WEBHOOK_RETRY_BASE": "0.2",
    }
    tmp = Path(f"/tmp/xshathra-soak-{secrets.token_hex(4)}")
    with ExitStack() as stack:
        url = stack.enter_context(postgres_database())
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
        for node in nodes:
            for i in range(STEADY_PER_NODE):
                channel = f"public:c{i % CHANNELS}"
                got: list[int] = []
                received[channel].append(got)
                listeners.append(asyncio.create_task(steady(node, app, channel, got)))
        await asyncio.sleep(2)  # every steady subscriber is in before the first publish
        stop = asyncio.Event()
        churners = [asyncio.create_task(churn(nodes, app, stop)) for _ in range(CHURN)]
        publisher = asyncio.create_task(publish(nodes, app, stop, rate))
        samples: list[tuple[float, list[Sample]]] = []
        started = time.monotonic()
        while time.monotonic() - started < duration:
            taken = await asyncio.gather(*(asyncio.to_thread(sample, n) for n in nodes))
            samples.append((time.monotonic() - started, list(taken)))
            await asyncio.sleep(min(5.0, duration / 20))
        stop.set()
        acked = await publisher
        cycles = sum(await asyncio.gather(*churners))
        total = sum(acked.values())
        # Deliveries in flight and webhook retries settle.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ids = {r.json()["id"] for r in list(hooks.requests) if r.json()["event"] == "news"}
            if len(ids) >= total:
                break
            await asyncio.sleep(1)
        lost_pubs = 0
        for channel, lists in received.items():
            for got in lists:
                if len(got) != acked.get(channel, 0) or got != sorted(got):
                    lost_pubs += 1
        for task in listeners:
            task.cancel()
        ids = {r.json()["id"] for r in list(hooks.requests) if r.json()["event"] == "news"}
        report = {
            "duration_s": duration,
            "publications_acked": total,
            "churn_cycles": cycles,
            "subscribers_missing_publications": lost_pubs,
            "webhook_events": total,
            "webhook_events_delivered": len(ids),
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
        return 0 if lost_pubs == 0 and len(ids) >= total else 1


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
