"""The benchmark's pure helpers that its storm, large-N and cluster figures rest on: frame
splitting with close frames, source addresses past one address's ports, and the cluster
table's CPU per delivery. (bench.run is left out: it reaches the chart module, whose
matplotlib is the `bench` extra's, not the dev one's.)"""

from __future__ import annotations

import struct

from bench.stacks import PER_SOURCE, source_address, sources_for
from bench.wsclient import CLOSE, split_frames


def test_split_frames_keeps_opcodes_and_the_incomplete_rest() -> None:
    text = bytes((0x81, 2)) + b"{}"
    close = bytes((0x88, 4)) + struct.pack("!H", 3502) + b"no"
    frames, rest = split_frames(text + close + b"\x81\x05ab")
    assert frames == [(0x1, b"{}"), (CLOSE, struct.pack("!H", 3502) + b"no")]
    assert rest == b"\x81\x05ab"


def test_source_addresses_only_past_one_address_worth_of_ports() -> None:
    assert sources_for(PER_SOURCE) == 1
    assert source_address(7, PER_SOURCE) is None
    assert sources_for(100_000) == 4
    assert [source_address(i, 100_000) for i in range(5)] == [
        ("127.0.0.1", 0),
        ("127.0.0.2", 0),
        ("127.0.0.3", 0),
        ("127.0.0.4", 0),
        ("127.0.0.1", 0),
    ]


def test_cluster_table_reports_cpu_per_delivery_per_node() -> None:
    """The cluster scenario's CPU per 1M deliveries at the latency rate, each node's beside the
    total, and its ratio to one node's: the figure that holds on a loaded machine."""
    from bench.report import cluster_ratios, cluster_table, cpu_per_million

    assert cpu_per_million(2.5, 1_000_000) == 2.5
    assert cpu_per_million(1.0, 0) is None  # nothing delivered: no figure, not a division error

    def step(total: float, nodes: list[float], p50: float) -> dict[str, object]:
        return {
            "rate": 100.0,
            "target_deliveries_per_s": 100_000,
            "deliveries_per_s": 100_000,
            "server_cpu": 0.5,
            "client_cpu": 0.1,
            "publisher_cpu": 0.0,
            "server_cpu_s_per_1m": total,
            "node_cpu_s_per_1m": nodes,
            "p50_ms": p50,
            "p99_ms": 2 * p50,
            "publish_errors": 0,
        }

    def result(topology: str, peak: int, latency: dict[str, object]) -> dict[str, object]:
        return {
            "topology": topology,
            "n": 1000,
            "max_deliveries_per_s": peak,
            "server_cpu_at_max": 0.9,
            "client_cpu_at_max": 0.2,
            "publisher_cpu_at_max": 0.0,
            "steps": [latency],
            "at_70pct": latency,
            "at_latency_rate": latency,
        }

    base = result("1 node, memory", 400_000, step(2.0, [2.0], 1.0))
    redis = result("2 nodes, redis", 340_000, step(3.0, [1.75, 1.25], 1.5))
    redis["vs_one_node"] = cluster_ratios(redis, base)
    assert redis["vs_one_node"] == {
        "deliveries_ratio": 0.85,
        "p50_ms_above": 0.5,
        "p99_ms_above": 1.0,
        "cpu_per_delivery_ratio": 1.5,
    }
    table = cluster_table({"one_node_memory": base, "two_nodes_redis": redis})
    assert "| 1 node, memory | 100,000 | 2.0 |" in table
    assert "| 2 nodes, redis | 100,000 | 3.0 (1.75 + 1.25) | 1.5 | 0.85 | 0.5 | 1.0 | 0 |" in table
