"""OpenTelemetry traces over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set: spans for HTTP
API requests, broker calls, proxy calls to an app's backend and webhook deliveries reach a
real OTLP receiver."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.integration.test_proxies import command, configure, connect_proxy, raw_connect
from tests.integration.test_webhooks import register
from tests.support.proxy_backend import ok, proxy_backend
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


def spans(collector: Receiver) -> list[Any]:
    found: list[Any] = []
    for request in list(collector.requests):
        export = ExportTraceServiceRequest()
        export.ParseFromString(request.body)
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                found.extend(scope.spans)
    return found


def attributes(span: Any) -> dict[str, str]:
    return {a.key: a.value.string_value for a in span.attributes}


async def test_proxy_calls_get_spans(tmp_path: Path) -> None:
    """Every proxy call to an app's backend is a `proxy.<kind>` client span (connect,
    refresh, subscribe, publish, rpc) naming the app and how it went; a refusal by the
    backend is `refused`, a backend that answers 500 is `unavailable` with an ERROR status."""
    with Receiver().running() as collector:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        with running_server(tmp_path, env=env) as srv:
            app = srv.create_app(name="traced-proxies")
            async with proxy_backend() as backend:
                refreshed = iter([ok({"expire_at": int(time.time()) + 600})])
                proxies = {
                    "proxies": [
                        {"name": "sub", "endpoint": backend.on("/subscribe", lambda b: ok({}))},
                        {"name": "pub", "endpoint": backend.on("/publish", lambda b: ok({}))},
                        {
                            "name": "calc",
                            "endpoint": backend.on(
                                "/calc",
                                lambda b: (200, {"error": {"code": 1500, "message": "no"}}, 0.0),
                            ),
                        },
                        {"name": "down", "endpoint": backend.on("/down", lambda b: (500, {}, 0))},
                    ],
                    "rpc": {
                        "namespaces": [
                            {"name": "calc", "proxy_enabled": True, "proxy_name": "calc"},
                            {"name": "down", "proxy_enabled": True, "proxy_name": "down"},
                        ]
                    },
                    **connect_proxy(
                        backend.on(
                            "/connect",
                            lambda b: ok({"user": "t", "expire_at": int(time.time()) + 1}),
                        )
                    ),
                }
                proxies["client"]["proxy"]["refresh"] = {
                    "enabled": True,
                    "endpoint": backend.on("/refresh", lambda b: next(refreshed)),
                }
                room = {
                    "subscribe_proxy_enabled": True,
                    "subscribe_proxy_name": "sub",
                    "publish_proxy_enabled": True,
                    "publish_proxy_name": "pub",
                }
                r = configure(srv, app, proxies=proxies, namespaces={"room": room})
                assert r.status_code == 200, r.text
                ws, reply = await raw_connect(srv, app)
                assert "connect" in reply, reply
                assert "subscribe" in await command(ws, 2, "subscribe", {"channel": "room:a"})
                published = await command(ws, 3, "publish", {"channel": "room:a", "data": 1})
                assert "publish" in published, published
                refused = await command(ws, 4, "rpc", {"method": "calc:x"})
                assert refused["error"]["code"] == 1500
                unavailable = await command(ws, 5, "rpc", {"method": "down:x"})
                assert unavailable["error"]["code"] == 100
                await backend.wait_for("/refresh")  # the connection expired after a second
                await ws.close()
            wanted = {"proxy.connect", "proxy.refresh", "proxy.subscribe", "proxy.publish"}
            deadline = time.monotonic() + 15
            while True:
                found = [s for s in spans(collector) if s.name.startswith("proxy.")]
                names = {s.name for s in found}
                rpcs = [attributes(s) for s in found if s.name == "proxy.rpc"]
                if wanted <= names and len(rpcs) == 2:
                    break
                assert time.monotonic() < deadline, names
                await asyncio.sleep(0.1)  # batches go out every 100 ms
    for span in found:
        assert attributes(span)["xshathra.app_id"] == app["app_id"], span
        assert span.kind == span.SPAN_KIND_CLIENT
    outcomes = {
        s.name: attributes(s)["xshathra.proxy.outcome"] for s in found if s.name != "proxy.rpc"
    }
    assert set(outcomes.values()) == {"ok"}, outcomes
    assert sorted(a["xshathra.proxy.outcome"] for a in rpcs) == ["refused", "unavailable"]
    (failed,) = [s for s in found if attributes(s)["xshathra.proxy.outcome"] == "unavailable"]
    assert failed.status.code == failed.status.STATUS_CODE_ERROR
