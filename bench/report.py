"""Markdown tables for results/report.md and the one-line JSON summary run.py prints last."""

from __future__ import annotations

from typing import Any

SUMMARY_N = 1000  # the fan-out size the summary line and the ratios are taken at
RATIO_PEERS = ("raw", "node_ws", "python_socketio", "node_socketio")
TITLES = {
    "targets": "Targets (bench/README.md), judged on this run",
    "profile": "Where Xshathra's server spends its time at 100,000 deliveries/s, N=1,000 (py-spy)",
    "fanout": "Fan-out: N clients on one channel",
    "many": "Many channels: own channel each plus one shared (Xshathra only)",
    "idle": "Idle memory per connection",
    "recovery": "Recovery: reconnect after missed publications (Xshathra only)",
    "cluster": "Cluster: 2 nodes on a shared broker against 1 node on the memory broker",
    "storm": "Reconnect storm: all clients reconnect at once and recover (Xshathra only)",
}


def _rows(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _ramp_row(name: str, r: dict[str, Any]) -> list[Any]:
    at70 = r["at_70pct"]
    return [
        name,
        f"{r['n']:,}",
        f"{r['max_deliveries_per_s']:,}",
        r["server_cpu_at_max"],
        r["client_cpu_at_max"],
        r["publisher_cpu_at_max"],
        at70["p50_ms"],
        at70["p99_ms"],
        *_at_latency_rate(r),
    ]


def _at_latency_rate(r: dict[str, Any]) -> list[Any]:
    """p50/p99 at the latency targets' fixed rate, where this row measured it."""
    step = r.get("at_latency_rate")
    if step is None:
        return ["", ""]
    if "skipped" in step:
        return ["n/a", "n/a"]
    return [step["p50_ms"], step["p99_ms"]]


RAMP_HEADER = [
    "stack",
    "N",
    "max deliveries/s",
    "server CPU",
    "client CPU",
    "publisher CPU",
    "p50 ms @70%",
    "p99 ms @70%",
    "p50 ms @100k/s",
    "p99 ms @100k/s",
]


def fanout_table(results: dict[str, dict[int, Any]]) -> str:
    rows = [_ramp_row(name, r) for name, by_n in results.items() for _, r in sorted(by_n.items())]
    return _rows(RAMP_HEADER, rows)


def many_table(results: dict[str, Any]) -> str:
    return _rows(RAMP_HEADER, [_ramp_row(name, r) for name, r in results.items()])


def idle_table(results: dict[str, Any]) -> str:
    rows = [
        [name, f"{r['n']:,}", f"{r['bytes_per_connection']:,}", f"{r['rss_after']:,}"]
        for name, r in results.items()
    ]
    return _rows(["stack", "N", "bytes/connection", "server RSS after"], rows)


def recovery_table(results: dict[str, Any]) -> str:
    rows = [
        [
            name,
            f"{r['n']:,}",
            r["messages"],
            r["total_s"],
            r["p50_ms"],
            r["p99_ms"],
            f"{r['recovered']:,}",
            f"{r['failed']:,}",
            r["server_cpu"],
        ]
        for name, r in results.items()
    ]
    header = [
        "stack",
        "clients",
        "missed pubs",
        "total s",
        "p50 ms",
        "p99 ms",
        "recovered",
        "failed",
        "server CPU",
    ]
    return _rows(header, rows)


def cluster_table(results: dict[str, Any]) -> str:
    """One ramp row per topology, then the ratios against one node (targets: deliveries
    >= 0.8x, p50 at 100,000/s at most 1 ms above)."""
    measured = [r for r in results.values() if "failed" not in r]
    table = _rows(RAMP_HEADER, [_ramp_row(r["topology"], r) for r in measured])
    table += "".join(
        f"\n{r['topology']}: failed: {r['failed']}\n" for r in results.values() if "failed" in r
    )
    rows = [
        [
            r["topology"],
            f"{r['at_latency_rate']['target_deliveries_per_s']:,}",
            _cpu_per_million(r["at_latency_rate"]),
            r.get("vs_one_node", {}).get("cpu_per_delivery_ratio", ""),
            r.get("vs_one_node", {}).get("deliveries_ratio", ""),
            r.get("vs_one_node", {}).get("p50_ms_above", ""),
            r.get("vs_one_node", {}).get("p99_ms_above", ""),
            _publish_errors(r),
        ]
        for r in measured
        if "at_latency_rate" in r
    ]
    # The latency and CPU columns are at this rate (the targets' 100,000/s, or half the one
    # node's maximum where that is lower), not always at 100,000/s. CPU per delivery is the
    # figure that holds on a loaded machine: deliveries/s depend on what else took the core.
    header = [
        "topology",
        "latency at deliveries/s",
        "server CPU s / 1M deliveries (per node)",
        "CPU / delivery vs 1 node",
        "max deliveries / 1 node",
        "p50 ms above 1 node",
        "p99 ms above 1 node",
        "failed publishes",
    ]
    return table + "\n" + _rows(header, rows)


def _cpu_per_million(step: dict[str, Any]) -> str:
    """All nodes' CPU seconds per 1M deliveries in a step, with each node's where several."""
    total = step.get("server_cpu_s_per_1m")
    if total is None:
        return "n/a"
    nodes = step.get("node_cpu_s_per_1m", [])
    return f"{total} ({' + '.join(map(str, nodes))})" if len(nodes) > 1 else str(total)


def _publish_errors(r: dict[str, Any]) -> int:
    """Publications the server refused or failed in every step of a topology's runs."""
    steps = [*r["steps"], r["at_70pct"], r.get("at_latency_rate", {})]
    return sum(int(step.get("publish_errors", 0)) for step in steps)


def storm_table(results: dict[str, Any]) -> str:
    rows = [
        [
            f"{r['n']:,}",
            r["total_s"],
            r["ms_per_client"],
            r["per_client_vs_smallest"],
            r["p50_ms"],
            r["p99_ms"],
            f"{r['recovered']:,}",
            f"{r['failed']:,}",
            r["wrong_offset"],
            r["server_cpu"],
            r["client_cpu"],
        ]
        for r in results["sizes"]
    ]
    header = [
        "clients",
        "total s",
        "ms/client",
        "per client vs smallest N",
        "p50 ms",
        "p99 ms",
        "recovered",
        "failed",
        "wrong offsets",
        "server CPU",
        "client CPU",
    ]
    return _rows(header, rows)


def document(sections: dict[str, str]) -> str:
    """report.md: one section per scenario this run measured (see bench/README.md)."""
    parts = ["# Benchmark results\n"]
    parts += [f"## {TITLES[name]}\n\n{table}" for name, table in sections.items()]
    return "\n".join(parts)


def _latency_rate_summary(r: dict[str, Any]) -> dict[str, Any]:
    step = r.get("at_latency_rate")
    if step is None or "skipped" in step:
        return {}
    return {"p50_ms_at_100k": step["p50_ms"], "p99_ms_at_100k": step["p99_ms"]}


def summary(
    fanout: dict[str, dict[int, Any]],
    many: dict[str, Any],
    recovery: dict[str, Any],
    cluster: dict[str, Any] | None = None,
    storm: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Each stack's fan-out figures at N=1,000 (or the largest N run): the maximum, p99 at 70%
    of it and, where measured, p50/p99 at 100,000 deliveries/s; Xshathra's ratios to the
    peers; the many-channels and recovery headlines when those ran."""
    sizes = {n for by_n in fanout.values() for n in by_n}
    n = SUMMARY_N if SUMMARY_N in sizes or not sizes else max(sizes)
    out: dict[str, Any] = {
        name: {
            "deliveries_per_s": r[n]["max_deliveries_per_s"],
            "p99_ms": r[n]["at_70pct"]["p99_ms"],
            **_latency_rate_summary(r[n]),
            "server_cpu": r[n]["server_cpu_at_max"],
            "client_cpu": r[n]["client_cpu_at_max"],
            "publisher_cpu": r[n]["publisher_cpu_at_max"],
        }
        for name, r in fanout.items()
        if n in r
    }
    xs = out.get("xshathra", {}).get("deliveries_per_s")
    for peer in RATIO_PEERS:
        if xs and peer in out and out[peer]["deliveries_per_s"]:
            out[f"xshathra/{peer}"] = round(xs / out[peer]["deliveries_per_s"], 2)
    if "xshathra" in many:
        r = many["xshathra"]
        out["many"] = {
            "n": r["n"],
            "deliveries_per_s": r["max_deliveries_per_s"],
            "p99_ms": r["at_70pct"]["p99_ms"],
        }
    if "xshathra" in recovery:
        r = recovery["xshathra"]
        out["recovery"] = {k: r[k] for k in ("n", "total_s", "p99_ms", "failed")}
    if cluster:
        out["cluster"] = {k: r["vs_one_node"] for k, r in cluster.items() if "vs_one_node" in r}
    if storm:
        out["storm"] = [
            {k: r[k] for k in ("n", "total_s", "ms_per_client", "per_client_vs_smallest", "failed")}
            for r in storm["sizes"]
        ]
    return out


def cpu_per_million(cpu_seconds: float, deliveries: int) -> float | None:
    """CPU seconds per 1,000,000 deliveries: what a delivery costs, which (unlike deliveries/s)
    does not depend on how much of the core other processes on the machine took."""
    return round(cpu_seconds / deliveries * 1e6, 2) if deliveries > 0 else None


def cluster_ratios(found: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The cluster's figures against one node's: deliveries/s as a ratio (target >= 0.8),
    p50/p99 at the latency rate as milliseconds above (target: p50 at most 1 ms above)."""
    ratios: dict[str, Any] = {
        "deliveries_ratio": round(found["max_deliveries_per_s"] / base["max_deliveries_per_s"], 2)
    }
    mine, theirs = found.get("at_latency_rate", {}), base.get("at_latency_rate", {})
    for key in ("p50_ms", "p99_ms"):
        if mine.get(key) is not None and theirs.get(key) is not None:
            ratios[f"{key}_above"] = round(mine[key] - theirs[key], 2)
    # CPU per delivery at the same fixed rate, all nodes together: the broker path's cost,
    # which a loaded machine does not blur as it does deliveries/s.
    if mine.get("server_cpu_s_per_1m") and theirs.get("server_cpu_s_per_1m"):
        ratios["cpu_per_delivery_ratio"] = round(
            mine["server_cpu_s_per_1m"] / theirs["server_cpu_s_per_1m"], 2
        )
    return ratios
