"""OpenTelemetry traces over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set: spans for HTTP
API requests, broker calls and webhook deliveries reach a real OTLP receiver."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.integration.test_webhooks import register
from tests.support.receiver import Receiver
from tests.support.server import running_server


def span_names(collector: Receiver) -> set[str]:
    names: set[str] = set()
    for request in list(collector.requests):
        export = ExportTraceServiceRequest()
        export.ParseFromString(request.body)
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                names.update(span.name for span in scope.spans)
    return names


def test_spans_reach_the_otlp_endpoint(tmp_path: Path) -> None:
    with Receiver().running() as collector, Receiver().running() as hooks:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        with running_server(tmp_path, env=env) as srv:
            app = srv.create_app(name="traced")
            register(srv, app, hooks.url, ["news"])
            r = httpx.post(
                f"{srv.base_url}/realtime/api/publish",
                json={"channel": "public:t", "data": 1, "tags": {"event": "news"}},
                headers={"X-API-Key": str(app["api_key"])},
            )
            assert "result" in r.json(), r.text
            hooks.wait_for(1)
            wanted = {
                "POST /realtime/api/{method}",
                "POST /api/applications",
                "broker.publish",
                "webhook.delivery",
            }
            # Batches go out every 100 ms: each new export request is awaited in turn.
            deadline = time.monotonic() + 15
            while not wanted <= span_names(collector):
                left = deadline - time.monotonic()
                assert left > 0, span_names(collector)
                collector.wait_for(len(collector.requests) + 1, timeout=left)
