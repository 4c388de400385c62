"""Webhooks users can trust: signed as documented, filtered by event, retried until delivered
exactly once, durable across a killed node, one delivery with two nodes, private targets
refused, and an observable delivery log with replay."""

from __future__ import annotations

import hashlib
import hmac
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.receiver import Receiver
from tests.support.server import ServerProcess, free_port, running_server
from tests.support.services import postgres_database

FAST_RETRIES = {"XSHATHRA_WEBHOOK_RETRY_BASE": "0.05"}
Json = dict[str, Any]


def register(
    srv: ServerProcess, app: Json, url: str, events: list[str], secret: str = "whsec-test-secret"
) -> str:
    r = httpx.post(
        f"{srv.base_url}/api/webhooks",
        headers={"X-API-Key": str(app["api_key"])},
        json={"url": url, "secret": secret, "events": events},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["webhook"]["id"])


def broadcast(srv: ServerProcess, app: Json, room: str, event: str, data: Any) -> None:
    r = httpx.post(
        f"{srv.base_url}/api/broadcast",
        headers={"X-API-Key": str(app["api_key"])},
        json={"room": room, "event": event, "data": data},
    )
    assert r.status_code == 200, r.text


def deliveries(srv: ServerProcess, app: Json, hook: str) -> list[Json]:
    r = httpx.get(
        f"{srv.base_url}/api/webhooks/{hook}/deliveries", headers={"X-API-Key": str(app["api_key"])}
    )
    assert r.status_code == 200, r.text
    result: list[Json] = r.json()["deliveries"]
    return result


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, exactly as the README documents it."""
    timestamp = headers["X-Xshathra-Timestamp"]
    expected = (
        "sha256="
        + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    )
    return hmac.compare_digest(expected, headers["X-Xshathra-Signature"])


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with running_server(tmp_path_factory.mktemp("wh"), env=FAST_RETRIES) as proc:
        yield proc


def test_signed_body_as_documented(srv: ServerProcess) -> None:
    app = srv.create_app(name="sig")
    with Receiver().running() as rx:
        register(srv, app, rx.url, ["new-message"])
        broadcast(srv, app, "chat-room-1", "new-message", {"text": "hello"})
        [got] = rx.wait_for(1)
    assert verify("whsec-test-secret", got.headers, got.body)
    assert not verify("another-secret", got.headers, got.body)
    body = got.json()
    assert body["app_id"] == app["app_id"] and body["event"] == "new-message"
    assert body["room"] == "chat-room-1" and body["data"] == {"text": "hello"}
    assert body["id"].startswith("evt_") and isinstance(body["timestamp"], int)
    assert got.headers["Content-Type"] == "application/json"


def test_events_are_filtered_and_lifecycle_events_sent(srv: ServerProcess) -> None:
    import asyncio

    from tests.support.clients import Recorder, SubEvents, make_client, realtime_token

    app = srv.create_app(name="filter")
    with Receiver().running() as only, Receiver().running() as every:
        register(srv, app, only.url, ["wanted"])
        register(srv, app, every.url, ["*"])
        broadcast(srv, app, "r", "unwanted", 1)
        broadcast(srv, app, "r", "wanted", 2)
        assert [r.json()["data"] for r in only.wait_for(1)] == [2]

        async def visit() -> None:
            rec = Recorder()
            client = make_client(srv, rec, token=realtime_token(srv, app, "visitor"))
            await client.connect()
            sub = client.new_subscription("public:hall", SubEvents(rec))
            await sub.subscribe()
            await sub.ready(5)
            await client.disconnect()

        asyncio.run(visit())
        events = [r.json() for r in every.wait_for(8)]
    names = [e["event"] for e in events]
    assert names[:2] == ["unwanted", "wanted"]
    assert set(names[2:]) == {
        "user-joined",
        "room-occupied",
        "user-left",
        "room-vacated",
        "user-online",
        "user-offline",
    }
    joined = next(e for e in events if e["event"] == "user-joined")
    assert joined["user_id"] == "visitor" and joined["room"] == "public:hall"
    assert len(only.requests) == 1


def test_retries_until_delivered_once(srv: ServerProcess) -> None:
    app = srv.create_app(name="retry")
    with Receiver(statuses=[500, 503]).running() as rx:
        hook = register(srv, app, rx.url, ["*"])
        broadcast(srv, app, "r", "flaky", {"n": 1})
        requests = rx.wait_for(3)
        ids = {r.json()["id"] for r in requests}
        assert len(ids) == 1  # the same event each time, so a receiver can deduplicate
        log = deliveries(srv, app, hook)
        while log[0]["status"] == "pending":  # the outcome is written right after the answer
            log = deliveries(srv, app, hook)
    assert log[0]["status"] == "delivered" and log[0]["attempts"] == 3
    assert log[0]["last_status"] == 200 and len(rx.requests) == 3


def test_gone_disables_the_webhook_and_replay(srv: ServerProcess) -> None:
    app = srv.create_app(name="gone")
    with Receiver(statuses=[410]).running() as rx:
        hook = register(srv, app, rx.url, ["*"])
        broadcast(srv, app, "r", "e", 1)
        rx.wait_for(1)
        log = deliveries(srv, app, hook)
        while log[0]["status"] == "pending":
            log = deliveries(srv, app, hook)
        assert log[0]["status"] == "failed" and log[0]["last_status"] == 410
        listed = httpx.get(
            f"{srv.base_url}/api/webhooks", headers={"X-API-Key": str(app["api_key"])}
        ).json()["webhooks"]
        assert listed[0]["enabled"] is False


def test_replay_of_a_failed_delivery(srv: ServerProcess) -> None:
    app = srv.create_app(name="replay")
    with Receiver(default=200).running() as rx:
        hook = register(srv, app, rx.url, ["*"])
        broadcast(srv, app, "r", "e", "again")
        first = rx.wait_for(1)[0].json()
        log = deliveries(srv, app, hook)
        r = httpx.post(
            f"{srv.base_url}/api/webhooks/{hook}/deliveries/{log[0]['id']}/replay",
            headers={"X-API-Key": str(app["api_key"])},
        )
        assert r.status_code == 200
        second = rx.wait_for(2)[1].json()
    assert second["id"] == first["id"] and second["data"] == "again"
    other = srv.create_app(name="not-yours")
    r = httpx.get(
        f"{srv.base_url}/api/webhooks/{hook}/deliveries",
        headers={"X-API-Key": str(other["api_key"])},
    )
    assert r.status_code == 404


def test_a_killed_node_still_delivers_after_restart(tmp_path: Path) -> None:
    """Queued in the database before the publish is acknowledged: SIGKILL loses nothing (a
    delivery the killed node had not released yet falls due when its hold ends)."""
    port = free_port()
    db = f"sqlite:///{tmp_path / 'durable.db'}"
    # A kill during an attempt leaves the row leased for 2 x timeout + 5 s (9 s here), a kill
    # before the release leaves it held for 15 s: either way it falls due within the wait.
    env = {**FAST_RETRIES, "XSHATHRA_WEBHOOK_TIMEOUT": "2"}
    with running_server(tmp_path, database_url=db, env=env) as first:
        app = first.create_app(name="durable")
        register(first, app, f"http://127.0.0.1:{port}/hook", ["*"])
        broadcast(first, app, "r", "must-arrive", {"n": 42})  # receiver down: attempts fail
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    with (
        Receiver(port=port).running() as rx,
        running_server(tmp_path, database_url=db, env=env, admin_key=first.admin_key),
    ):
        [got] = rx.wait_for(1, timeout=45)
    assert got.json()["event"] == "must-arrive" and got.json()["data"] == {"n": 42}


def test_two_nodes_deliver_each_event_once(tmp_path: Path) -> None:
    with (
        postgres_database() as url,
        Receiver().running() as rx,
        running_server(tmp_path / "a", database_url=url, env=FAST_RETRIES) as a,
        running_server(
            tmp_path / "b", database_url=url, env=FAST_RETRIES, admin_key=a.admin_key
        ) as b,
    ):
        app = a.create_app(name="two-nodes")
        register(a, app, rx.url, ["*"])
        for i in range(20):
            broadcast(a if i % 2 else b, app, "r", "tick", i)
        got = rx.wait_for(20)
        ids = [r.json()["id"] for r in got]
    assert len(ids) == 20 and len(set(ids)) == 20
    assert sorted(r.json()["data"] for r in got) == list(range(20))


def test_private_targets_are_refused(tmp_path: Path) -> None:
    with running_server(tmp_path, env={"XSHATHRA_WEBHOOK_ALLOW_PRIVATE": "0"}) as srv:
        app = srv.create_app(name="ssrf")
        for url in (
            "http://127.0.0.1/h",
            "http://localhost/h",
            "http://10.1.2.3/h",
            "http://192.168.0.1/h",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/h",
            "http://metadata.google.internal/x",
        ):
            r = httpx.post(
                f"{srv.base_url}/api/webhooks",
                headers={"X-API-Key": str(app["api_key"])},
                json={"url": url, "events": ["*"]},
            )
            assert r.status_code == 400, url
            assert r.json()["success"] is False


def test_private_target_is_refused_again_at_delivery_time(tmp_path: Path) -> None:
    """A webhook stored while private targets were allowed is not called once they are not."""
    db = f"sqlite:///{tmp_path / 'ssrf.db'}"
    with Receiver().running() as rx:
        with running_server(tmp_path, database_url=db) as open_node:
            app = open_node.create_app(name="later-refused")
            hook = register(open_node, app, rx.url, ["*"])
        env = {**FAST_RETRIES, "XSHATHRA_WEBHOOK_ALLOW_PRIVATE": "0"}
        with running_server(
            tmp_path, database_url=db, env=env, admin_key=open_node.admin_key
        ) as strict:
            broadcast(strict, app, "r", "e", 1)
            log = deliveries(strict, app, hook)
            while not log or log[0]["last_error"] is None:
                log = deliveries(strict, app, hook)
    assert "private" in log[0]["last_error"] and rx.requests == []


def test_a_stalled_receiver_does_not_hold_up_others(tmp_path: Path) -> None:
    """A receiver that never answers times out; another app's receiver is served meanwhile."""
    import threading

    release = threading.Event()
    env = {**FAST_RETRIES, "XSHATHRA_WEBHOOK_TIMEOUT": "1"}
    with (
        running_server(tmp_path, env=env) as srv,
        Receiver(stall=release).running() as slow,
        Receiver().running() as fast,
    ):
        slow_app, fast_app = srv.create_app(name="slow"), srv.create_app(name="fast")
        slow_hook = register(srv, slow_app, slow.url, ["*"])
        register(srv, fast_app, fast.url, ["*"])
        for i in range(20):
            broadcast(srv, slow_app, "r", "e", i)
        broadcast(srv, fast_app, "r", "e", "fast")
        assert fast.wait_for(1, timeout=5)[0].json()["data"] == "fast"
        log = deliveries(srv, slow_app, slow_hook)
        while not any(d["last_error"] for d in log):
            log = deliveries(srv, slow_app, slow_hook)
        # httpx's read timeout or the attempt's total deadline, whichever fires first
        assert any(
            d["last_error"] == "ReadTimeout" or d["last_error"].startswith("DeadlineExceeded")
            for d in log
            if d["last_error"]
        )
        release.set()
