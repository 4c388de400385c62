"""Local backing services for tests: reach them, start them if they are down, or skip with a
reason that says so. Each test that needs PostgreSQL gets a database of its own."""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
NATS_HOST, NATS_PORT = "127.0.0.1", 4222

_START = {
    "postgres": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "redis": (
        'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
        "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
    ),
    "nats": (
        "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- "
        "-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
    ),
}


def _reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def ensure_service(name: str, host: str, port: int) -> None:
    """Return when the service answers; try to start it once; else skip the test."""
    if _reachable(host, port):
        return
    subprocess.run(_START[name], shell=True, capture_output=True, timeout=30, check=False)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _reachable(host, port):
            return
        time.sleep(0.2)  # waiting for a daemon to open its port: nothing to await
    pytest.skip(f"{name} at {host}:{port} is not reachable and could not be started")


def _psql(sql: str, db: str = "postgres") -> None:
    subprocess.run(
        ["psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", "postgres", "-d", db, "-q", "-c", sql],
        check=True,
        capture_output=True,
        timeout=30,
    )


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database; dropped afterwards. Yields its URL."""
    ensure_service("postgres", PG_HOST, PG_PORT)
    name = f"xshathra_test_{secrets.token_hex(6)}"
    _psql(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
