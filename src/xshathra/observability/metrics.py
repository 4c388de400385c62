"""Prometheus metrics at `/metrics`, read at scrape time from the counters the engine, the
webhook dispatcher and the HTTP layer keep as plain integers (the hot path never touches
prometheus-client). Labels are bounded: no per-app or per-channel series."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from xshathra.engine.node import Node
    from xshathra.proxies.caller import ProxyStats
    from xshathra.webhooks.dispatcher import WebhookDispatcher

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HttpStats:
    """Requests by route template, method and status; updated by `HttpMetricsMiddleware`."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}

    def add(self, route: str, method: str, status: int) -> None:
        key = (route, method, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp, stats: HttpStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = scope.get("route")
            # The route's template (e.g. /api/webhooks/{webhook_id}) keeps cardinality bounded.
            path = getattr(route, "path", None) or "unmatched"
            self.stats.add(path, scope.get("method", ""), status)


class XshathraCollector(Collector):
    def __init__(
        self,
        node: Node,
        dispatcher: WebhookDispatcher,
        http: HttpStats,
        proxies: ProxyStats | None = None,
    ) -> None:
        self.node = node
        self.dispatcher = dispatcher
        self.http = http
        self.proxies = proxies

    def collect(
        self,
    ) -> Iterator[GaugeMetricFamily | CounterMetricFamily | SummaryMetricFamily]:
        node, stats = self.node, self.node.stats
        yield GaugeMetricFamily(
            "xshathra_connections",
            "Open client connections on this node",
            value=node.connection_total(),
        )
        yield GaugeMetricFamily(
            "xshathra_subscriptions",
            "Live subscriptions on this node",
            value=node.subscription_total(),
        )
        # For a soak: both must stay flat under steady load (a leak of tasks shows here first).
        yield GaugeMetricFamily(
            "xshathra_asyncio_tasks",
            "Tasks alive on this node's event loop",
            value=len(asyncio.all_tasks()),
        )
        yield GaugeMetricFamily(
            "xshathra_webhook_attempts_in_flight",
            "Webhook delivery attempts running on this node",
            value=self.dispatcher.in_flight,
        )
        held = node.history_bytes()
        if held is not None:  # only a broker that keeps history in this process has it
            yield GaugeMetricFamily(
                "xshathra_history_bytes",
                "Bytes of channel history held in this process (memory broker)",
                value=held,
            )
        pubs = CounterMetricFamily(
            "xshathra_publications",
            "Publications by origin and namespace kind (public, default, custom)",
            labels=["origin", "namespace_kind"],
        )
        for (origin, kind), count in stats.publications.items():
            pubs.add_metric([origin, kind], count)
        yield pubs
        refusals = CounterMetricFamily(
            "xshathra_refusals",
            "Clients refused over a quota or an access rule, by reason",
            labels=["reason"],
        )
        for reason, count in stats.refusals.items():
            refusals.add_metric([reason], count)
        yield refusals
        yield CounterMetricFamily(
            "xshathra_messages_delivered",
            "Publications queued to subscribers on this node",
            value=stats.delivered,
        )
        hooks = CounterMetricFamily(
            "xshathra_webhook_deliveries",
            "Webhook delivery attempts by outcome",
            labels=["outcome"],
        )
        for outcome, count in self.dispatcher.outcomes.items():
            hooks.add_metric([outcome], count)
        yield hooks
        requests = CounterMetricFamily(
            "xshathra_http_requests", "HTTP API requests", labels=["route", "method", "status"]
        )
        for (route, method, status), count in self.http.requests.items():
            requests.add_metric([route, method, status], count)
        yield requests
        if self.proxies is not None:
            yield from _proxy_metrics(self.proxies)


def _proxy_metrics(stats: ProxyStats) -> Iterator[CounterMetricFamily | SummaryMetricFamily]:
    """Backend proxy calls by kind (connect, refresh, subscribe, publish, sub_refresh, rpc,
    send): seven label values at most, never an app or an endpoint."""
    calls = CounterMetricFamily("xshathra_proxy_calls", "Backend proxy calls", labels=["kind"])
    errors = CounterMetricFamily(
        "xshathra_proxy_errors",
        "Backend proxy calls without a reply (timeout, non-200, bad body, over the app's bound)",
        labels=["kind"],
    )
    rejected = CounterMetricFamily(
        "xshathra_proxy_rejected",
        "Backend proxy calls refused at once: the app had too many in flight",
        labels=["kind"],
    )
    latency = SummaryMetricFamily(
        "xshathra_proxy_latency_seconds", "Backend proxy call latency", labels=["kind"]
    )
    for kind, count in stats.calls.items():
        calls.add_metric([kind], count)
        errors.add_metric([kind], stats.errors.get(kind, 0))
        rejected.add_metric([kind], stats.rejected.get(kind, 0))
        latency.add_metric(
            [kind],
            count_value=stats.latency_count.get(kind, 0),
            sum_value=stats.latency_sum.get(kind, 0.0),
        )
    yield calls
    yield errors
    yield rejected
    yield latency


def build_registry(
    node: Node,
    dispatcher: WebhookDispatcher,
    http: HttpStats,
    proxies: ProxyStats | None = None,
) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(XshathraCollector(node, dispatcher, http, proxies))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
