"""Xshathra and its peers under the same load, server pinned to core 0; the load client (C,
bench/loadclient) and the HTTP publisher (this process) pinned to core 1.
`python -m bench.run --quick` runs the fan-out scenario at N=1,000 only and prints, as its last
line, one JSON object with each stack's figures and the ratios.

Scenarios (`--scenarios`, see bench/README.md):
- fanout: N clients on one channel; ~100-byte JSON publications sent over HTTP at a rising
  rate until deliveries per second (counted at the clients) stop rising. Reported: the
  maximum, p50/p99 publish-to-receive latency at 70% of it, and the CPU of the server, of the
  load client and of the publisher (either near 100% would mean the benchmark, not the server,
  was the limit).
- many: N clients, each on its own channel and on one shared channel; publications go
  round-robin to the own channels with every tenth to the shared one; same method as fanout.
  Xshathra only: the peers have no channels.
- idle: server memory per idle connection.
- recovery: clients reconnect after missing publications and recover them from history.
  Xshathra only.
- cluster (asked for by name): fan-out on two nodes sharing Redis or NATS against one node on
  the memory broker, as ratios. Xshathra only.
- storm (asked for by name): the recovery reconnect at several sizes, time per client against
  the smallest size's. Xshathra only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import loadclient, profile, report, targets
from bench.cluster import BROKERS, broker_env
from bench.loadclient import ClientGroup, LoadClient
from bench.recovery import recovery, storm
from bench.report import cluster_ratios, cpu_per_million
from bench.stacks import (
    BENCH,
    CLIENT_CORE,
    CONNECT_BATCH,
    PUBLISHERS,
    STACKS,
    Publisher,
    Stack,
    children_cpu,
    cpu_seconds,
    missing,
    rss_bytes,
    serving,
    serving_nodes,
    xs_hello,
    xs_publish,
    xs_ready,
)

STEP_SECONDS = 2.0
LATENCY_SECONDS = 4.0  # the fixed-rate latency step: longer, for a steadier p99
PROFILE_SECONDS = 5.0
# The idle scenario opens connections 100 at a time, not 500: what it measures is the memory a
# connection holds, and a burst of 500 handshakes at once leaves the allocator's high-water
# mark behind in RSS too (Xshathra: ~500 B more per connection at 10,000, see bench/README.md).
IDLE_BATCH = 100
RATES = [25.0 * 2**i for i in range(12)]
SAMPLE_EVERY = 50  # one connection in fifty times publications (latency)
SHARED = "bench:shared"
SHARED_EVERY = 10  # in the many-channels mix, every tenth publication goes to SHARED
SCENARIOS = ("fanout", "many", "idle", "recovery", "cluster", "storm")
DEFAULT_SCENARIOS = ("fanout", "many", "idle", "recovery")  # cluster and storm: asked for
# The scenarios the peers cannot run: they have no channels.
CHANNEL_ONLY = ("many", "recovery", "cluster", "storm")


@dataclass
class Load:
    """What a ramp's clients subscribe to and where its publications go."""

    hellos: list[list[bytes]]  # connection i sends the frames hellos[i % len(hellos)]
    ready_marker: bytes
    body: Callable[[bytes], bytes]  # a payload into the next publish request's body
    info: dict[str, Any] = field(default_factory=dict)  # what the results should say about it
    path: str | None = None  # the WebSocket path, where it is not the stack's fixed one


LoadFor = Callable[[Stack, dict[str, Any], int], Load]


@dataclass(frozen=True)
class Topology:
    """Where a measurement's server runs: one node (the default), or `nodes` nodes whose
    environment (`env`) names one shared broker. The publisher posts to node 1; the clients
    are split evenly over the nodes, one load client per node."""

    nodes: int = 1
    env: dict[str, str] = field(default_factory=dict)
    connect_batch: int = CONNECT_BATCH  # connections each load client opens at once
    # The publisher's keep-alive connections, each with one request in flight: on a cluster
    # a request's answer waits for the broker's round trip, so these over that latency can
    # cap publications/s below what the nodes would fan out (--cluster-publishers).
    publishers: int = PUBLISHERS


ONE_NODE = Topology()
# Connections opened at once per node in the cluster: with 500, some subscribes on Redis failed
# with error 100 (the node's log: "command failed on a backend: MaxConnectionsError"; redis-py
# 8's pool refuses a 101st concurrent command), which is a finding for the broker, not what
# this scenario measures (fan-out once everyone is subscribed).
CLUSTER_CONNECT_BATCH = 50


def fanout_load(stack: Stack, ctx: dict[str, Any], n: int) -> Load:
    """Every client on the stack's one channel (or, for peers, on the server's one stream)."""
    return Load(
        [stack.hello(ctx)],
        stack.ready_marker,
        lambda d: stack.publish_body(d, ctx),
        {"deliveries_per_publication": n},
        stack.path_for(ctx) if stack.path_for is not None else None,
    )


class MixedTargets:
    """Request bodies for the many-channels mix: round-robin over the n own channels, every
    tenth publication to the shared one."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.sent = 0
        self.next_own = 0

    def __call__(self, data: bytes) -> bytes:
        self.sent += 1
        if self.sent % SHARED_EVERY == 0:
            return xs_publish(SHARED, data)
        channel = own_channel(self.next_own)
        self.next_own = (self.next_own + 1) % self.n
        return xs_publish(channel, data)


def own_channel(i: int) -> str:
    return f"bench:c{i}"


def many_load(stack: Stack, ctx: dict[str, Any], n: int) -> Load:
    """Xshathra only: connection i subscribes to its own channel (id 2) and the shared one
    (id 3) in the hello frame; it is ready when the second subscribe is answered."""
    return Load(
        [xs_hello(ctx, {"channel": own_channel(i)}, {"channel": SHARED}) for i in range(n)],
        xs_ready(3),
        MixedTargets(n),
        {
            "channels": n + 1,
            "shared_every": SHARED_EVERY,
            "deliveries_per_publication": (SHARED_EVERY - 1 + n) / SHARED_EVERY,
        },
    )


def capacity_env(n: int) -> dict[str, str]:
    """Room for n connections on Xshathra (its default cap is 10,000 per application); the
    peers ignore it."""
    return {"XSHATHRA_MAX_CONNECTIONS_PER_APP": str(max(10_000, 2 * n))}


def _pct(values: list[int], pct: int) -> float | None:
    if len(values) < 10:
        return None
    return round(statistics.quantiles(values, n=100)[pct - 1] / 1e6, 2)


async def start_client(
    stack: Stack,
    port: int,
    n: int,
    hellos: list[list[bytes]],
    ready_marker: bytes,
    sample_every: int = 0,
    batch: int = CONNECT_BATCH,
    path: str | None = None,
) -> LoadClient:
    """n load connections speaking `stack`'s protocol, all taken on when this returns."""
    return await LoadClient.start(
        port,
        path or stack.path,
        n,
        hellos,
        stack.marker,
        stack.ping,
        ready_marker,
        sample_every,
        batch,
        sse=stack.transport == "sse",
        deflate=stack.deflate,
        protobuf=stack.protobuf,
    )


async def start_clients(
    stack: Stack,
    ports: list[int],
    n: int,
    load: Load,
    sample_every: int,
    batch: int = CONNECT_BATCH,
) -> ClientGroup:
    """n load connections split evenly over the nodes' ports (connection i keeps
    `load.hellos[i % len(load.hellos)]` whichever node it lands on)."""
    clients: list[LoadClient] = []
    try:
        for k, port in enumerate(ports):
            first, last = n * k // len(ports), n * (k + 1) // len(ports)
            hellos = load.hellos
            if len(hellos) > 1:
                hellos = [hellos[i % len(hellos)] for i in range(first, last)]
            clients.append(
                await start_client(
                    stack,
                    port,
                    last - first,
                    hellos,
                    load.ready_marker,
                    sample_every,
                    batch,
                    path=load.path,
                )
            )
    except BaseException:
        await ClientGroup(clients).close()
        raise
    return ClientGroup(clients)


async def ramp(
    pids: list[int],
    client: LoadClient | ClientGroup,
    publisher: Publisher,
    rates: list[float],
    seconds: float = STEP_SECONDS,
) -> list[dict[str, Any]]:
    """One step per rate, stopping once deliveries rise by less than 5%."""
    steps: list[dict[str, Any]] = []
    best = 0.0
    for rate in rates:
        before = await client.stats()  # also drops the previous step's latencies
        failed0 = publisher.failed
        nodes0 = [children_cpu(pid) for pid in pids]
        cpu_c0 = client.cpu_seconds()
        cpu_p0, t0 = cpu_seconds(os.getpid()), time.monotonic()
        await publisher.run(rate, seconds)
        after = await client.stats()
        dt = time.monotonic() - t0
        nodes = [children_cpu(pid) - cpu0 for pid, cpu0 in zip(pids, nodes0, strict=True)]
        received = after.received - before.received
        deliveries = received / dt
        steps.append(
            {
                "rate": rate,
                "deliveries_per_s": round(deliveries),
                "server_cpu": round(sum(nodes) / dt, 2),
                # Server CPU seconds per 1,000,000 deliveries, all nodes together and per node
                # (node 1 takes the publications): the figure to compare on a loaded machine.
                "server_cpu_s_per_1m": cpu_per_million(sum(nodes), received),
                "node_cpu_s_per_1m": [cpu_per_million(c, received) for c in nodes],
                "client_cpu": round((client.cpu_seconds() - cpu_c0) / dt, 2),
                "publisher_cpu": round((cpu_seconds(os.getpid()) - cpu_p0) / dt, 2),
                "p50_ms": _pct(after.latencies_ns, 50),
                "p99_ms": _pct(after.latencies_ns, 99),
                "publish_errors": publisher.failed - failed0,
                # by the server during the step: a slow-client disconnect would show here
                "connections_closed": after.closed - before.closed,
            }
        )
        if deliveries < best * 1.05:
            break
        best = max(best, deliveries)
    return steps


async def measure(
    stack: Stack,
    n: int,
    rates: list[float],
    load_for: LoadFor,
    seconds: float = STEP_SECONDS,
    profile_to: Path | None = None,
    topology: Topology = ONE_NODE,
) -> dict[str, Any]:
    """A fresh server (or cluster), n clients as `load_for` says, then the rising-rate ramp.
    With `profile_to`, one more step at the last rate with py-spy attached to the server (a
    step of its own, so that sampling never weighs on the figures of the measured ones)."""
    env = {**capacity_env(n), **topology.env}
    async with serving_nodes(stack, env, topology.nodes) as (ports, procs, ctx):
        load = load_for(stack, ctx, n)
        client = await start_clients(stack, ports, n, load, SAMPLE_EVERY, topology.connect_batch)
        try:
            await asyncio.sleep(1.0)  # let the server finish the setup work before timing
            publisher = Publisher(
                ports[0], stack.publish_path, stack.headers(ctx), load.body, topology.publishers
            )
            try:
                pids = [proc.pid for proc in procs]
                steps = await ramp(pids, client, publisher, rates, seconds)
                if profile_to is not None:
                    found, _ = await asyncio.gather(
                        profile.record(pids[0], PROFILE_SECONDS, profile_to),
                        publisher.run(steps[-1]["rate"], PROFILE_SECONDS + 1),
                    )
                    profile_to.with_suffix(".md").write_text(found.markdown())
            finally:
                publisher.close()
        finally:
            await client.close()
    peak = max(steps, key=lambda s: s["deliveries_per_s"])
    return {
        "stack": stack.name,
        "n": n,
        **load.info,
        "max_deliveries_per_s": peak["deliveries_per_s"],
        "server_cpu_at_max": peak["server_cpu"],
        "client_cpu_at_max": peak["client_cpu"],
        "publisher_cpu_at_max": peak["publisher_cpu"],
        "steps": steps,
    }


async def find_max(
    stack: Stack, n: int, load_for: LoadFor, topology: Topology = ONE_NODE
) -> dict[str, Any]:
    """The ramp, then latency at 70% of the maximum deliveries/s, on a fresh server with fresh
    clients so that the backlog of the saturated steps does not count against it.

    The 70% rate comes from the deliveries, not from the rate of the best step: the ramp
    doubles, so the best step can be up to twice past saturation, and 70% of its rate would
    still be overload (latency measured in a growing queue)."""
    found = await measure(stack, n, RATES, load_for, topology=topology)
    target = 0.7 * found["max_deliveries_per_s"]
    rate = round(target / found["deliveries_per_publication"], 2)
    at70 = (await measure(stack, n, [rate], load_for, topology=topology))["steps"][0]
    found["at_70pct"] = {"target_deliveries_per_s": round(target), **at70}
    return found


async def at_latency_rate(
    stack: Stack,
    n: int,
    found: dict[str, Any],
    out: Path,
    profiled: bool,
    topology: Topology = ONE_NODE,
) -> None:
    """Latency at the fixed rate of the latency targets (targets.LATENCY_RATE deliveries/s):
    a fresh server, one longer step. With `profiled`, Xshathra's server is then profiled at
    that rate (see bench.profile). A stack whose maximum is below the rate is left out: it
    would measure a growing queue."""
    if found["max_deliveries_per_s"] < targets.LATENCY_RATE:
        found["at_latency_rate"] = {"skipped": "maximum below the rate"}
        return
    profiled = profiled and stack.name == "xshathra"
    profile_to = out / f"profile-{stack.name}.txt" if profiled else None
    result = await measure(
        stack, n, [targets.LATENCY_RATE / n], fanout_load, LATENCY_SECONDS, profile_to, topology
    )
    step = result["steps"][0]
    found["at_latency_rate"] = {"target_deliveries_per_s": targets.LATENCY_RATE, **step}


async def fanout(
    stacks: list[Stack], sizes: list[int], out: Path, profiled: bool
) -> dict[str, dict[int, Any]]:
    results: dict[str, dict[int, Any]] = {}
    for stack in stacks:
        for n in sizes:
            found = await find_max(stack, n, fanout_load)
            if n == targets.N:
                await at_latency_rate(stack, n, found, out, profiled)
            results.setdefault(stack.name, {})[n] = found
            progress(found)
    return results


async def cluster(
    stack: Stack, n: int, brokers: list[str], publishers: int = PUBLISHERS
) -> dict[str, Any]:
    """Fan-out on two nodes sharing a broker (publisher on node 1, clients half on each),
    against one node on the memory broker measured in the same run: the maximum, and the
    latency at one rate for all (the targets' 100,000 deliveries/s, or half the one node's
    maximum where that is lower, as on a loaded machine), and their ratios. All with the
    same number of publisher connections."""
    one = Topology(publishers=publishers)
    base = await find_max(stack, n, fanout_load, one)
    rate = min(targets.LATENCY_RATE, 0.5 * base["max_deliveries_per_s"]) / n
    base["at_latency_rate"] = await latency_at(stack, n, rate, one)
    base["publishers"] = publishers
    results: dict[str, Any] = {"one_node_memory": progress({"topology": "1 node, memory", **base})}
    for kind in brokers:
        name = f"2 nodes, {kind}"
        try:
            async with broker_env(kind) as env:
                topology = Topology(2, env, CLUSTER_CONNECT_BATCH, publishers)
                found = await find_max(stack, n, fanout_load, topology)
                found["at_latency_rate"] = await latency_at(stack, n, rate, topology)
        except (ConnectionError, TimeoutError) as e:
            # One broker's failure (clients never taken on, a node down) is a result too,
            # and must not lose the other broker's figures.
            results[f"two_nodes_{kind}"] = progress({"topology": name, "failed": str(e)})
            continue
        found["topology"] = name
        found["vs_one_node"] = cluster_ratios(found, base)
        results[f"two_nodes_{kind}"] = progress(found)
    return results


async def latency_at(stack: Stack, n: int, rate: float, topology: Topology) -> dict[str, Any]:
    """A fixed-rate step on a fresh server (or cluster), after one at the same rate whose
    figures are dropped: a server's first seconds with n new clients cost CPU of their own
    (the first step's CPU per delivery came out 2-4x the later ones'), which would blur the
    CPU per delivery compared here. Its figures, with the rate asked in deliveries/s."""
    steps = (await measure(stack, n, [rate, rate], fanout_load, LATENCY_SECONDS, None, topology))[
        "steps"
    ]
    return {"target_deliveries_per_s": round(rate * n), **steps[-1]}


async def many(stacks: list[Stack], n: int) -> dict[str, Any]:
    return {s.name: progress(await find_max(s, n, many_load)) for s in stacks}


async def idle_memory(stack: Stack, n: int) -> dict[str, Any]:
    """Server memory per idle connection: RSS with n clients connected (and, for Xshathra,
    subscribed) minus RSS before, over n."""
    async with serving(stack, capacity_env(n)) as (port, proc, ctx):
        await asyncio.sleep(1.0)
        before = rss_bytes(proc.pid)
        client = await start_client(
            stack, port, n, [stack.hello(ctx)], stack.ready_marker, batch=IDLE_BATCH
        )
        try:
            await asyncio.sleep(2.0)  # allocator settled after the setup
            after = rss_bytes(proc.pid)
        finally:
            await client.close()
    return {
        "stack": stack.name,
        "n": n,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_connection": round((after - before) / n),
        "connect_batch": IDLE_BATCH,
    }


async def idle(stacks: list[Stack], n: int) -> dict[str, Any]:
    return {s.name: progress(await idle_memory(s, n)) for s in stacks}


def progress(result: dict[str, Any]) -> dict[str, Any]:
    """Each result goes to stderr as it comes: a long run shows where it is."""
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def note(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fanout at N=1,000 only")
    parser.add_argument("--stacks", default=",".join(STACKS))
    parser.add_argument(
        "--scenarios",
        help=f"comma-separated, of {','.join(SCENARIOS)}; default all (fanout with --quick)",
    )
    parser.add_argument("--fanout-n", default="100,1000,5000", help="comma-separated sizes")
    parser.add_argument("--many-n", type=int, default=10_000)
    parser.add_argument("--idle-n", type=int, default=10_000)
    parser.add_argument("--recovery-n", type=int, default=1_000)
    parser.add_argument("--cluster-n", type=int, default=1_000)
    parser.add_argument(
        "--cluster-brokers",
        default=",".join(BROKERS),
        help=f"comma-separated, of {','.join(BROKERS)}: the brokers the cluster scenario runs on",
    )
    parser.add_argument(
        "--cluster-publishers",
        type=int,
        default=PUBLISHERS,
        help="the cluster scenario's publisher connections (each one request in flight), for "
        "one node and the clusters alike",
    )
    parser.add_argument(
        "--storm-n", default="1000,10000", help="comma-separated sizes of the reconnect storm"
    )
    parser.add_argument(
        "--idle",
        type=int,
        default=0,
        metavar="N",
        help="also run the idle scenario, with N clients (same as adding it to --scenarios "
        "with --idle-n N)",
    )
    args = parser.parse_args()
    if args.scenarios is None:
        args.scenarios = "fanout" if args.quick else ",".join(DEFAULT_SCENARIOS)
    args.scenarios = args.scenarios.split(",")
    if args.idle:
        args.idle_n = args.idle
        if "idle" not in args.scenarios:
            args.scenarios.append("idle")
    args.cluster_brokers = args.cluster_brokers.split(",")
    unknown = (
        (set(args.scenarios) - set(SCENARIOS))
        | (set(args.stacks.split(",")) - set(STACKS))
        | (set(args.cluster_brokers) - set(BROKERS))
    )
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))}")
    args.sizes = [1000] if args.quick else [int(n) for n in args.fanout_n.split(",")]
    return args


def runnable(names: list[str]) -> list[Stack]:
    stacks = []
    for name in names:
        why = missing(STACKS[name])
        if why:
            note(f"skipping {name}: {why}")
        else:
            stacks.append(STACKS[name])
    return stacks


def raise_fd_limit() -> None:
    """Thousands of client sockets here, as many in the server (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def main() -> None:
    args = parse_args()
    try:
        loadclient.build()  # before any server starts: without a C compiler, stop at once
    except RuntimeError as e:
        sys.exit(f"bench: {e}")
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    raise_fd_limit()
    stacks = runnable(args.stacks.split(","))
    with_channels = [s for s in stacks if s.channels]
    for scenario in CHANNEL_ONLY:
        if scenario in args.scenarios:
            skipped = [s.name for s in stacks if not s.channels]
            if skipped:
                note(f"{scenario}: Xshathra only, skipping {', '.join(skipped)} (no channels)")
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    sections: dict[str, str] = {}
    fanout_results: dict[str, dict[int, Any]] = {}
    many_results: dict[str, Any] = {}
    recovery_results: dict[str, Any] = {}
    profiled = out / "profile-xshathra.md"
    if "fanout" in args.scenarios:
        profiled.unlink(missing_ok=True)  # only this run's profile goes in this run's report
        # Not with --quick, which must stay under two minutes.
        fanout_results = await fanout(stacks, args.sizes, out, profiled=not args.quick)
        (out / "fanout.json").write_text(json.dumps(fanout_results, indent=2))
        sections["fanout"] = report.fanout_table(fanout_results)
        (out / "fanout.md").write_text(sections["fanout"])
        chart_fanout(fanout_results, out)
    if "many" in args.scenarios and with_channels:
        many_results = await many(with_channels, args.many_n)
        (out / "many.json").write_text(json.dumps(many_results, indent=2))
        sections["many"] = report.many_table(many_results)
    idle_results: dict[str, Any] = {}
    if "idle" in args.scenarios:
        idle_results = await idle(stacks, args.idle_n)
        (out / "idle.json").write_text(json.dumps(idle_results, indent=2))
        sections["idle"] = report.idle_table(idle_results)
    if "recovery" in args.scenarios and with_channels:
        recovery_results = {
            s.name: progress(await recovery(s, args.recovery_n)) for s in with_channels
        }
        (out / "recovery.json").write_text(json.dumps(recovery_results, indent=2))
        sections["recovery"] = report.recovery_table(recovery_results)
    xshathra = STACKS["xshathra"]
    cluster_results: dict[str, Any] = {}
    storm_results: dict[str, Any] = {}
    if "cluster" in args.scenarios:
        cluster_results = await cluster(
            xshathra, args.cluster_n, args.cluster_brokers, args.cluster_publishers
        )
        (out / "cluster.json").write_text(json.dumps(cluster_results, indent=2))
        sections["cluster"] = report.cluster_table(cluster_results)
    if "storm" in args.scenarios:
        sizes = [int(n) for n in args.storm_n.split(",")]
        storm_results = await storm(xshathra, sizes, progress)
        (out / "storm.json").write_text(json.dumps(storm_results, indent=2))
        sections["storm"] = report.storm_table(storm_results)
    sections = {"targets": targets.table(targets.check(fanout_results, idle_results)), **sections}
    if profiled.exists():
        sections["profile"] = profiled.read_text()
    (out / "report.md").write_text(report.document(sections))
    print(
        json.dumps(
            report.summary(
                fanout_results, many_results, recovery_results, cluster_results, storm_results
            )
        )
    )


def chart_fanout(results: dict[str, dict[int, Any]], out: Path) -> None:
    """The PNG needs matplotlib (the `bench` extra); without it the numbers still land."""
    try:
        from bench.chart import draw_fanout
    except ImportError as e:
        note(f"no chart: {e}")
        return
    draw_fanout(results, out / "fanout.png")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
