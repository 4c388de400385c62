"""The outbox row is written before the publication goes out: when it cannot be written, the
publish answers an error with nothing published, so the client's retry is not a duplicate."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from tests.integration.test_webhooks import FAST_RETRIES, register
from tests.support.receiver import Receiver
from tests.support.server import ServerProcess, running_server


def _api(srv: ServerProcess, key: str, method: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(
        f"{srv.base_url}/realtime/api/{method}", headers={"X-API-Key": key}, json=body
    )


def test_a_failed_outbox_write_publishes_nothing(tmp_path: Path) -> None:
    db_file = tmp_path / "outbox.db"
    with (
        running_server(tmp_path, database_url=f"sqlite:///{db_file}", env=FAST_RETRIES) as srv,
        Receiver().running() as rx,
    ):
        app = srv.create_app(name="outbox")
        key = str(app["api_key"])
        register(srv, app, rx.url, ["*"])
        with sqlite3.connect(db_file) as conn:  # the outbox becomes unwritable
            conn.execute(
                "CREATE TRIGGER outbox_down BEFORE INSERT ON webhook_deliveries "
                "BEGIN SELECT RAISE(ABORT, 'outbox unavailable'); END"
            )
        failed = _api(srv, key, "publish", {"channel": "public:outbox", "data": {"n": 1}})
        assert failed.status_code >= 500 and "outbox unavailable" not in failed.text
        history = _api(srv, key, "history", {"channel": "public:outbox", "limit": -1})
        assert history.json()["result"].get("publications", []) == []  # nothing went out

        with sqlite3.connect(db_file) as conn:
            conn.execute("DROP TRIGGER outbox_down")
        retried = _api(srv, key, "publish", {"channel": "public:outbox", "data": {"n": 1}})
        assert retried.status_code == 200, retried.text
        history = _api(srv, key, "history", {"channel": "public:outbox", "limit": -1})
        assert len(history.json()["result"]["publications"]) == 1  # the retry is no duplicate
        [got] = rx.wait_for(1)
        assert got.json()["data"] == {"n": 1}
