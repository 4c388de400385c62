"""One tenant's webhooks cannot hurt another's: fair claiming and a per-app cap on attempts in
flight, caps on webhooks and on pending deliveries per app (the excess is visible), pruning."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from tests.integration.test_webhooks import FAST_RETRIES, broadcast, deliveries, register
from tests.support.receiver import Receiver
from tests.support.server import running_server


def test_a_hanging_receiver_does_not_delay_another_apps_deliveries(tmp_path: Path) -> None:
    """The probe: app A's receiver hangs (the default 10 s per attempt) with more deliveries
    queued than the whole pool; app B's delivery must still arrive at once."""
    release = threading.Event()
    with (
        running_server(tmp_path) as srv,
        Receiver(stall=release).running() as hanging,
        Receiver().running() as fast,
    ):
        try:
            slow_app, fast_app = srv.create_app(name="hangs"), srv.create_app(name="innocent")
            register(srv, slow_app, hanging.url, ["*"])
            register(srv, fast_app, fast.url, ["*"])
            for i in range(40):
                broadcast(srv, slow_app, "r", "e", i)
            started = time.monotonic()
            broadcast(srv, fast_app, "r", "e", "fast")
            assert fast.wait_for(1, timeout=3)[0].json()["data"] == "fast"
            assert time.monotonic() - started < 3
        finally:
            release.set()


def test_webhooks_per_app_are_capped(tmp_path: Path) -> None:
    with running_server(tmp_path, env={"XSHATHRA_WEBHOOK_MAX_PER_APP": "3"}) as srv:
        app = srv.create_app(name="many-hooks")
        for i in range(3):
            register(srv, app, f"http://127.0.0.1:9/h{i}", ["*"])
        r = httpx.post(
            f"{srv.base_url}/api/webhooks",
            headers={"X-API-Key": str(app["api_key"])},
            json={"url": "http://127.0.0.1:9/h4", "events": ["*"]},
        )
        assert r.status_code == 400
        assert r.json() == {"success": False, "error": "an app can have at most 3 webhooks"}


def test_pending_deliveries_over_the_cap_are_recorded_as_dropped(tmp_path: Path) -> None:
    release = threading.Event()
    env = {**FAST_RETRIES, "XSHATHRA_WEBHOOK_MAX_PENDING_PER_APP": "5"}
    with running_server(tmp_path, env=env) as srv, Receiver(stall=release).running() as rx:
        try:
            app = srv.create_app(name="backlog")
            hook = register(srv, app, rx.url, ["*"])
            for i in range(8):
                broadcast(srv, app, "r", "e", i)
            log = deliveries(srv, app, hook)
            dropped = [d for d in log if d["status"] == "failed"]
            assert len(log) == 8 and len(dropped) == 3
            assert all("dropped" in d["last_error"] for d in dropped)
            metrics = httpx.get(f"{srv.base_url}/metrics").text
            assert 'xshathra_webhook_deliveries_total{outcome="dropped"} 3.0' in metrics
        finally:
            release.set()
