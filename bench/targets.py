"""The targets the benchmark exists to check (bench/README.md), each judged on one run's
figures: what was measured, what is required, whether it is met and by how much. A target
whose figures this run did not measure (a stack or scenario left out) says so instead."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

N = 1000  # the fan-out size the throughput and latency targets are stated at
LATENCY_RATE = 100_000  # deliveries/s at which the latency targets hold
IDLE_LIMIT = 4096  # bytes per idle connection


@dataclass
class Check:
    target: str
    measured: str
    met: bool | None  # None: not measured in this run
    margin: str  # how far above (or below) the requirement, in its own terms


def _ratio(fanout: dict[str, dict[int, Any]], peer: str) -> float | None:
    xs, other = fanout.get("xshathra", {}).get(N), fanout.get(peer, {}).get(N)
    if not xs or not other or not other["max_deliveries_per_s"]:
        return None
    return float(xs["max_deliveries_per_s"]) / float(other["max_deliveries_per_s"])


def _at_least(target: str, ratio: float | None, need: float, peer: str) -> Check:
    if ratio is None:
        return Check(target, f"not measured (needs xshathra and {peer} at N={N:,})", None, "")
    return Check(target, f"{ratio:.2f}x", ratio >= need, f"{ratio / need:.2f}x the requirement")


def _latency(fanout: dict[str, dict[int, Any]]) -> list[Check]:
    step = fanout.get("xshathra", {}).get(N, {}).get("at_latency_rate")
    checks = []
    for pct, limit in (("p50", 5.0), ("p99", 15.0)):
        target = f"{pct} <= {limit:g} ms at {LATENCY_RATE:,} deliveries/s, N={N:,}"
        value = step.get(f"{pct}_ms") if step else None
        if value is None:
            checks.append(Check(target, "not measured", None, ""))
        else:
            met = value <= limit
            margin = f"{limit - value:.1f} ms under" if met else f"{value - limit:.1f} ms over"
            checks.append(Check(target, f"{value} ms", met, margin))
    return checks


def check(fanout: dict[str, dict[int, Any]], idle: dict[str, Any]) -> list[Check]:
    checks = [
        _at_least(f"fan-out N={N:,}: >= 0.9x raw", _ratio(fanout, "raw"), 0.9, "raw"),
        _at_least(f"fan-out N={N:,}: >= 1.5x Node ws", _ratio(fanout, "node_ws"), 1.5, "node_ws"),
        _at_least(
            f"fan-out N={N:,}: >= 20x python-socketio",
            _ratio(fanout, "python_socketio"),
            20.0,
            "python_socketio",
        ),
        # raw writes one frame per message per socket; Xshathra's maximum is reached by
        # batching a tick's publications into one frame per connection.
        _at_least(
            "batching: >= 2x the raw one-frame-per-message bound", _ratio(fanout, "raw"), 2.0, "raw"
        ),
        *_latency(fanout),
    ]
    per_conn = idle.get("xshathra", {}).get("bytes_per_connection")
    target = f"idle: <= {IDLE_LIMIT:,} B per connection"
    if per_conn is None:
        checks.append(Check(target, "not measured", None, ""))
    else:
        met = per_conn <= IDLE_LIMIT
        margin = f"{abs(IDLE_LIMIT - per_conn):,} B {'under' if met else 'over'}"
        checks.append(Check(target, f"{per_conn:,} B", met, margin))
    return checks


def table(checks: list[Check]) -> str:
    verdict = {True: "yes", False: "**no**", None: "not measured"}
    lines = ["| target | measured | met | margin |", "| --- | --- | --- | --- |"]
    lines += [f"| {c.target} | {c.measured} | {verdict[c.met]} | {c.margin} |" for c in checks]
    return "\n".join(lines) + "\n"
