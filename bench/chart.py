"""results/fanout.png from the fan-out results: deliveries/s against N and p99 latency (at 70%
of each stack's best rate) against N, one line per stack. `python -m bench.chart` redraws it
from results/fanout.json."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a benchmark machine

import matplotlib.pyplot as plt  # after use(): the backend must be chosen first
from matplotlib.ticker import StrMethodFormatter

RESULTS = Path(__file__).resolve().parent / "results"


def _series(
    by_n: dict[Any, Any], value: Callable[[dict[str, Any]], float | None]
) -> tuple[list[int], list[float]]:
    """(N, value) points in N order, leaving out the Ns where the value is missing (a p99
    needs ten latency samples)."""
    points = []
    for n, r in by_n.items():
        y = value(r)
        if y is not None:
            points.append((int(n), float(y)))  # JSON gives N as a string key
    points.sort()
    return [p[0] for p in points], [p[1] for p in points]


def draw_fanout(results: dict[str, dict[Any, Any]], path: Path) -> None:
    fig, (deliveries, p99) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, by_n in results.items():
        # Markers as well as lines: a --quick run has a single N, and a line needs two.
        deliveries.plot(*_series(by_n, lambda r: r["max_deliveries_per_s"]), marker="o", label=name)
        p99.plot(*_series(by_n, lambda r: r["at_70pct"]["p99_ms"]), marker="o", label=name)
    sizes = sorted({int(n) for by_n in results.values() for n in by_n})
    for ax, title, unit in (
        (deliveries, "Max sustained deliveries/s", "deliveries/s"),
        (p99, "p99 publish-to-receive at 70% of max", "ms"),
    ):
        ax.set_title(title)
        ax.set_xlabel("N (subscribers on one channel)")
        ax.set_ylabel(unit)
        if len(sizes) > 1:
            ax.set_xscale("log")  # N spans 100 to 5,000
            ax.minorticks_off()  # only the measured Ns are labelled
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
        ax.set_ylim(bottom=0)  # from zero, so heights compare as ratios
        ax.grid(True, alpha=0.3)
        ax.legend()
    deliveries.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    results = json.loads((RESULTS / "fanout.json").read_text())
    draw_fanout(results, RESULTS / "fanout.png")
    print(RESULTS / "fanout.png")


if __name__ == "__main__":
    main()
