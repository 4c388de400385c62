"""`TracedProxyCaller`: each proxy call to an app's backend is a `proxy.<kind>` client span,
read back with the OpenTelemetry SDK's in-memory exporter: the app, the kind and the outcome
(`ok`, `refused`, `unavailable` with an ERROR status); an exception marks the span and goes on."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from xshathra.observability.tracing import TracedProxyCaller
from xshathra.protocol import proxy as p
from xshathra.tenancy.apps import generate_app


class Backend:
    """A proxy caller that answers what it is told (the HTTP side is tested elsewhere)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.stats = "the caller's own stats"

    async def call(self, app: Any, target: Any, request: Any, reply_type: Any, headers: Any) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def traced(answer: Any) -> tuple[TracedProxyCaller, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return TracedProxyCaller(Backend(answer), provider), exporter


CONNECT = p.ConnectRequest(
    app_id="a", client="c", transport="websocket", protocol="json", encoding="json"
)
RPC = p.RPCRequest(app_id="a", method="calc:sum")


@pytest.mark.parametrize(
    ("request_", "answer", "name", "outcome"),
    [
        (CONNECT, p.ConnectReply(result=p.ConnectResult(user="u")), "proxy.connect", "ok"),
        (RPC, p.RPCReply(error=p.Error(code=1500)), "proxy.rpc", "refused"),
        (CONNECT, None, "proxy.connect", "unavailable"),
    ],
)
async def test_a_span_per_call(request_: Any, answer: Any, name: str, outcome: str) -> None:
    caller, exporter = traced(answer)
    app, _ = generate_app(name="traced")
    assert await caller.call(app, None, request_, object) is answer
    (span,) = exporter.get_finished_spans()
    assert span.name == name and span.kind is SpanKind.CLIENT
    assert span.attributes is not None
    assert span.attributes["xshathra.app_id"] == app.app_id
    assert span.attributes["xshathra.proxy.kind"] == name.removeprefix("proxy.")
    assert span.attributes["xshathra.proxy.outcome"] == outcome
    failed = outcome == "unavailable"
    assert (span.status.status_code is StatusCode.ERROR) is failed
    assert caller.stats == "the caller's own stats"  # the rest passes through


async def test_an_exception_marks_the_span_and_propagates() -> None:
    caller, exporter = traced(RuntimeError("backend code bug"))
    app, _ = generate_app(name="traced")
    with pytest.raises(RuntimeError):
        await caller.call(app, None, RPC, object)
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "RuntimeError"  # the name, never the message
