"""OpenTelemetry traces, on when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the OpenTelemetry SDK
reads it and the other `OTEL_*` variables itself): a span per HTTP API request, per broker
call, per proxy call to an app's backend and per webhook delivery attempt, exported over
OTLP/HTTP in batches off the event loop.

Nothing here is on a hot path when tracing is off: `setup_tracing` returns None and the
composition root wraps nothing. Span attributes are bounded (a route template, a method, a
status), never a key, a token or a message body.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xshathra import __version__
from xshathra.protocol.proxy import KINDS as PROXY_KINDS

# Every span here is started with record_exception=False, set_status_on_exception=False: an
# exception's message may carry a URL with its password or a token, so a span names the
# exception's type only (set by hand), never the exception itself.

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def setup_tracing(node_id: str) -> TracerProvider | None:
    """A tracer provider exporting over OTLP/HTTP, or None when no endpoint is configured."""
    if not any(os.environ.get(v) for v in ENDPOINT_VARIABLES):
        return None
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": os.environ.get("OTEL_SERVICE_NAME", "xshathra"),
                "service.version": __version__,
                "service.instance.id": node_id,
            }
        )
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class TracingMiddleware:
    """A span per HTTP request: `METHOD /route/template` (the raw path would be unbounded)."""

    def __init__(self, app: ASGIApp, provider: TracerProvider) -> None:
        self._app = app
        self._tracer = provider.get_tracer("xshathra.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        method = scope.get("method", "")
        with self._tracer.start_as_current_span(
            f"{method} {route_of(scope)}",
            kind=trace.SpanKind.SERVER,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await self._app(scope, receive, send_status)
            finally:
                span.update_name(f"{method} {route_of(scope)}")  # routed now: the template
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route_of(scope))
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(trace.StatusCode.ERROR)


def route_of(scope: Scope) -> str:
    """The matched route's template when known (after routing), else a bounded label."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return str(path)
    raw: str = scope.get("path", "")
    if raw.startswith("/realtime/api/"):
        return "/realtime/api/{method}"
    return "unmatched"


class TracedBroker:
    """The broker with a client span around each call (publish, history, counts...). Only
    awaited methods are wrapped; the rest passes through untouched."""

    def __init__(self, broker: Any, provider: TracerProvider) -> None:
        self._broker = broker
        self._tracer = provider.get_tracer("xshathra.broker")

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._broker, name)
        if name not in _TRACED_BROKER_CALLS:
            return target

        async def traced(*args: Any, **kwargs: Any) -> Any:
            with self._tracer.start_as_current_span(
                f"broker.{name}",
                kind=trace.SpanKind.CLIENT,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    return await target(*args, **kwargs)
                except Exception as exc:
                    span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                    raise

        return traced


_TRACED_BROKER_CALLS = frozenset(
    {
        "publish",
        "publish_join",
        "publish_leave",
        "history",
        "remove_history",
        "subscribe",
        "unsubscribe",
        "set_subscriber_count",
        "subscriber_count",
        "publish_control",
    }
)


class TracedProxyCaller:
    """The proxy caller with a client span around each call to an app's backend:
    `proxy.<kind>` (connect, refresh, subscribe, publish, sub_refresh, rpc, send), with the
    app and how it went: `ok`, `refused` (the backend answered with an error or a disconnect)
    or `unavailable` (no proxy reply: timeout, non-200, over the app's bound; an ERROR span).
    Called through the node's composition, so the span is a child of the HTTP request's (a
    server API `rpc`) or stands alone (a client's command on a WebSocket)."""

    def __init__(self, caller: Any, provider: TracerProvider) -> None:
        self._caller = caller
        self._tracer = provider.get_tracer("xshathra.proxy")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._caller, name)  # stats, close: untouched

    async def call(
        self,
        app: Any,
        target: Any,
        request: Any,
        reply_type: type[Any],
        client_headers: Any = None,
    ) -> Any:
        kind = PROXY_KINDS.get(type(request), "unknown")
        with self._tracer.start_as_current_span(
            f"proxy.{kind}",
            kind=trace.SpanKind.CLIENT,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            span.set_attribute("xshathra.proxy.kind", kind)
            span.set_attribute("xshathra.app_id", str(app.app_id))
            try:
                reply = await self._caller.call(app, target, request, reply_type, client_headers)
            except Exception as exc:
                span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                raise
            if reply is None:
                span.set_attribute("xshathra.proxy.outcome", "unavailable")
                span.set_status(trace.StatusCode.ERROR, "no proxy reply")
            elif getattr(reply, "error", None) or getattr(reply, "disconnect", None):
                span.set_attribute("xshathra.proxy.outcome", "refused")
            else:
                span.set_attribute("xshathra.proxy.outcome", "ok")
            return reply


def traced_call(
    provider: TracerProvider | None, name: str
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Wrap an async callable in a span named `name` (identity when tracing is off)."""

    def wrap(call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        if provider is None:
            return call
        tracer = provider.get_tracer("xshathra")

        async def traced(*args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(
                name,
                kind=trace.SpanKind.CLIENT,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    return await call(*args, **kwargs)
                except Exception as exc:
                    span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                    raise

        return traced

    return wrap
