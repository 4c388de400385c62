"""The analytics charts, drawn as SVG on the server.

Hand-drawn rather than with a chart library on purpose: a chart here is one line over at most
a few hundred points (60 minutes, 24 or 168 hours, 30 days), with no axes to negotiate and no
interaction. Its geometry is ~30 lines of Python, the page needs no build step and no 200 KB
of third-party script, the chart is there without JavaScript, and the live update only swaps
two SVG attributes with what the JSON endpoint computed here (one drawing code, not two).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from xshathra.analytics import AnalyticsSnapshot

WIDTH, HEIGHT = 600, 140
PAD = 4  # the line's stroke stays inside the box at 0 and at the maximum

# (key, label, index of the value in a series point) for the charts that have a series.
CHARTS = (("connections", "Connections"), ("publications", "Publications"), ("users", "Users"))
STEP_LABEL = {"1h": "per minute", "24h": "per hour", "7d": "per hour", "30d": "per day"}


def _geometry(values: list[int]) -> dict[str, Any]:
    top = max(values, default=0)
    count = len(values)
    points = []
    for i, value in enumerate(values):
        x = WIDTH * i / (count - 1) if count > 1 else WIDTH / 2
        y = HEIGHT - PAD - (HEIGHT - 2 * PAD) * (value / top if top else 0)
        points.append(f"{x:.1f},{y:.1f}")
    line = " ".join(points)
    area = f"M0,{HEIGHT} L{line.replace(' ', ' L')} L{WIDTH},{HEIGHT} Z" if points else ""
    return {"line": line, "area": area, "max": top}


def _moment(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def chart_data(period: str, snap: AnalyticsSnapshot) -> dict[str, Any]:
    """What the page draws and the JSON endpoint returns: totals and each chart's geometry."""
    series = snap.series
    return {
        "period": period,
        "step": STEP_LABEL.get(period, ""),
        # Users are kept per hour: their line is per hour even over the last hour.
        "steps": {
            "connections": STEP_LABEL.get(period, ""),
            "publications": STEP_LABEL.get(period, ""),
            "users": "per hour" if period == "1h" else STEP_LABEL.get(period, ""),
        },
        "totals": {
            "connections": snap.connections_total,
            "publications": snap.events_total,
            "broadcasts": snap.events_broadcasts,
            "users": snap.users_total,
        },
        "now": {"connections": snap.connections_current, "users": snap.users_online},
        "charts": {
            "connections": _geometry([p.connections for p in series]),
            "publications": _geometry([p.events for p in series]),
            "users": _geometry([p.users for p in series]),
        },
        "from": _moment(series[0].timestamp) if series else "",
        "to": _moment(series[-1].timestamp) if series else "",
    }
