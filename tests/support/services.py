"""Local backing services for tests: reach them, start them if they are down, or skip with a
reason that says so. Each test that needs PostgreSQL gets a database of its own."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
NATS_HOST, NATS_PORT = "127.0.0.1", 4222

_START_WAIT_S = 20.0  # a daemon that has not opened its port by then is not coming up


@dataclass(frozen=True)
class _Service:
    title: str
    host: str
    port: int
    start: str


_SERVICES = {
    "postgres": _Service(
        "PostgreSQL",
        PG_HOST,
        PG_PORT,
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    ),
    "redis": _Service(
        "Redis",
        REDIS_HOST,
        REDIS_PORT,
        'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
        "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log",
    ),
    "nats": _Service(
        "NATS",
        NATS_HOST,
        NATS_PORT,
        "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- "
        "-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log",
    ),
}

# Outcome of the first attempt per service, so a missing service costs one start attempt per
# test session rather than one per test: None = up, a string = why it could not be started.
_outcome: dict[tuple[str, str, int], str | None] = {}
_outcome_lock = threading.Lock()


def _reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _try_start(service: _Service, host: str, port: int) -> str | None:
    """Run the start command and wait (bounded) for the port; None on success, else why not."""
    try:
        done = subprocess.run(
            service.start, shell=True, capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        return "the start command did not finish within 60 s"
    deadline = time.monotonic() + _START_WAIT_S
    while time.monotonic() < deadline:
        if _reachable(host, port):
            return None
        # Polling a daemon we do not own for its port: there is no event to await.
        time.sleep(0.1)
    output = (done.stderr or done.stdout).strip().splitlines()
    said = output[-1] if output else "no output"
    return f"`{service.start}` exited with {done.returncode} ({said})"


def ensure_service(name: str, host: str | None = None, port: int | None = None) -> None:
    """Return when the service (`postgres`, `redis` or `nats`) answers; try to start it once;
    else skip the calling test with the reason."""
    service = _SERVICES[name]
    host, port = host or service.host, port or service.port
    if _reachable(host, port):
        return
    key = (name, host, port)
    with _outcome_lock:
        if key not in _outcome or _outcome[key] is None:
            _outcome[key] = _try_start(service, host, port)
        reason = _outcome[key]
    if reason is not None:
        pytest.skip(
            f"{service.title} at {host}:{port} is not reachable and could not be started: {reason}"
        )


def ensure_postgres() -> None:
    ensure_service("postgres")


def ensure_redis() -> None:
    ensure_service("redis")


def ensure_nats() -> None:
    ensure_service("nats")


def postgres_admin_url(database: str = "postgres") -> str:
    """A URL of the local PostgreSQL as superuser `postgres` (trust auth), service ensured."""
    ensure_postgres()
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{database}"


def redis_url(db: int = 0) -> str:
    ensure_redis()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


def nats_url() -> str:
    ensure_nats()
    return f"nats://{NATS_HOST}:{NATS_PORT}"


async def _admin(sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user="postgres", database="postgres", timeout=10
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


_T = TypeVar("_T")


def _run_in_thread(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion from sync code, even inside a running event loop
    (sync context managers are used from async tests and from fixtures alike)."""
    result: list[_T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="postgres-admin")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _new_database_name() -> str:
    return f"xshathra_test_{secrets.token_hex(6)}"


def _drop_sql(name: str) -> str:
    # FORCE: a test that failed mid-way may leave a pooled connection open on the database.
    return f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database; dropped afterwards. Yields its URL."""
    ensure_postgres()
    name = _new_database_name()
    _run_in_thread(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_admin_url(name)
    finally:
        _run_in_thread(_admin(_drop_sql(name)))


@contextlib.asynccontextmanager
async def async_postgres_database() -> AsyncIterator[str]:
    """`postgres_database` for async code: the same database lifecycle, awaited in the loop."""
    ensure_postgres()
    name = _new_database_name()
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_admin_url(name)
    finally:
        await _admin(_drop_sql(name))


async def drop_postgres_database(url: str) -> None:
    """Drop the database a URL from `postgres_database` names, ending its open sessions."""
    name = url.rsplit("/", 1)[1]
    await _admin(_drop_sql(name))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _PrivateServer:
    """A server process of a test's own on a free port, which the test may stop and start
    again (the shared one must stay up for everyone else)."""

    BINARY = ""
    NAME = ""

    def __init__(self) -> None:
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self._proc = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + _START_WAIT_S
        while not _reachable("127.0.0.1", self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.NAME} did not start on port {self.port}")
            time.sleep(0.05)  # a process we just started: its port is the only signal


class NatsServer(_PrivateServer):
    """A private nats-server with JetStream on a free port and a store of its own."""

    BINARY = "/usr/sbin/nats-server"
    NAME = "nats-server"

    def __init__(self, store_dir: str, *, jetstream: bool = True) -> None:
        super().__init__()
        self.jetstream = jetstream
        self.url = f"nats://127.0.0.1:{self.port}"
        self._store = store_dir

    def _command(self) -> list[str]:
        return [self.BINARY, "-a", "127.0.0.1", "-p", str(self.port)] + (
            ["-js", "-sd", self._store] if self.jetstream else []
        )

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=20)
            self._proc = None


@contextlib.contextmanager
def private_nats(store_dir: str, *, jetstream: bool = True) -> Iterator[NatsServer]:
    """A started NatsServer, stopped afterwards; the test is skipped without the binary."""
    import os

    if not os.access(NatsServer.BINARY, os.X_OK):
        pytest.skip(f"{NatsServer.BINARY} is not installed: cannot run a private NATS server")
    server = NatsServer(store_dir, jetstream=jetstream)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RedisServer(_PrivateServer):
    """A private redis-server on a free port, keeping nothing on disk: shutting down the
    shared one on 6379 broke every test using it at the same time on the other xdist worker."""

    BINARY = "/usr/bin/redis-server"
    NAME = "redis-server"

    def __init__(self) -> None:
        super().__init__()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        return [self.BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]

    def stop(self) -> None:
        """Gone at once, forgetting everything (as a Redis restarted without persistence)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=20)
            self._proc = None


@contextlib.contextmanager
def private_redis() -> Iterator[RedisServer]:
    """A started RedisServer, stopped afterwards; the test is skipped without the binary."""
    import os

    if not os.access(RedisServer.BINARY, os.X_OK):
        pytest.skip(f"{RedisServer.BINARY} is not installed: cannot run a private Redis server")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
