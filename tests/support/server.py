"""Start real `xshathra serve` processes for integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

STARTUP_DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    base_url: str
    port: int
    admin_key: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime/connection/websocket"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin_headers(self) -> dict[str, str]:
        return {"X-ADMIN-API-KEY": self.admin_key}

    def create_app(self, **body: object) -> dict[str, object]:
        """Create an application through the admin API; returns the `application` object."""
        body.setdefault("name", "test app")
        r = httpx.post(f"{self.base_url}/api/applications", json=body, headers=self.admin_headers())
        assert r.status_code == 201, r.text
        app: dict[str, object] = r.json()["application"]
        return app


class PortTaken(RuntimeError):
    """The port chosen for a server was taken by another process before the server bound it."""


def _wait_healthy(
    proc: subprocess.Popen[bytes],
    base_url: str,
    log_path: Path,
    admin_key: str | None,
    within: float = STARTUP_DEADLINE,
) -> None:
    """Until the server answers, and is ours: between `free_port()` and the server's bind
    another test's server may take the port, and its health answer would pass for this one's
    (ours exits on the bind error a moment later). Only ours knows this admin key (None: a
    test let the server generate its key, and only the process check applies)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = log_path.read_text()
            if "address already in use" in log:
                raise PortTaken(log)
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/realtime/health", timeout=1.0).status_code == 200:
                if admin_key is None:
                    return
                mine = httpx.get(
                    f"{base_url}/api/applications",
                    headers={"X-ADMIN-API-KEY": admin_key},
                    timeout=5.0,
                )
                if mine.status_code == 200:
                    return
        time.sleep(0.05)  # polling the health endpoint is how a process start is observed
    raise RuntimeError(f"server did not become healthy:\n{log_path.read_text()}")


@contextlib.contextmanager
def running_server(
    tmp_path: Path,
    *,
    database_url: str | None = None,
    broker_url: str = "memory://",
    env: dict[str, str] | None = None,
    port: int | None = None,
    admin_key: str | None = None,
    args: tuple[str, ...] = (),
    stop_timeout: float = 10,
    start_timeout: float = STARTUP_DEADLINE,
) -> Iterator[ServerProcess]:
    """Run one node (or, with `args=("--workers", "2")`, a supervisor and its workers) until
    the block ends; SIGTERM then SIGKILL on exit."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    admin_key = admin_key or "adm_" + secrets.token_urlsafe(32)  # 32+ bytes: weak keys stop a start
    full_env = {
        **os.environ,
        "XSHATHRA_ADMIN_API_KEY": admin_key,
        "XSHATHRA_DATABASE_URL": database_url or f"sqlite:///{tmp_path / 'xshathra.db'}",
        "XSHATHRA_BROKER_URL": broker_url,
        "XSHATHRA_WEBHOOK_ALLOW_PRIVATE": "1",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    chosen = port
    for attempt in range(3):
        port = chosen or free_port()
        log_path = tmp_path / f"server-{port}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "xshathra", "serve"),
                    *("--host", "127.0.0.1", "--port", str(port), *args),
                ],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        base_url = f"http://127.0.0.1:{port}"
        try:
            identity = full_env.get("XSHATHRA_ADMIN_API_KEY") or None
            _wait_healthy(proc, base_url, log_path, identity, start_timeout)
            break
        except PortTaken:
            if chosen is not None or attempt == 2:
                raise
            # Another process took the free port first: start again on another one.
        except BaseException:
            _stop(proc, stop_timeout)
            raise
    try:
        yield ServerProcess(base_url, port, admin_key, proc, log_path, full_env)
    finally:
        _stop(proc, stop_timeout)


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def peak_rss(server: ServerProcess) -> int:
    """The server process's peak resident set size (VmHWM), in bytes."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


async def wait_health(node: ServerProcess, status: int, timeout: float = 20) -> None:
    """Until the node's /realtime/health answers `status` (a broker outage noticed, or over)."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient() as http:
        while (await http.get(f"{node.base_url}/realtime/health")).status_code != status:
            assert asyncio.get_running_loop().time() < deadline, f"health never became {status}"
            await asyncio.sleep(0.1)  # the node notices the outage on its own schedule


@contextlib.contextmanager
def cluster_nodes(
    tmp_path_factory: pytest.TempPathFactory,
    broker_url: str,
    env: dict[str, str],
    count: int = 2,
) -> Iterator[list[ServerProcess]]:
    """`count` nodes on one new PostgreSQL database and one broker, sharing the first node's
    admin key: the cluster every multi-node test starts."""
    from tests.support.services import postgres_database  # services imports nothing of this

    with ExitStack() as stack:
        url = stack.enter_context(postgres_database())
        first = stack.enter_context(
            running_server(
                tmp_path_factory.mktemp("n1"), database_url=url, broker_url=broker_url, env=env
            )
        )
        nodes = [first] + [
            stack.enter_context(
                running_server(
                    tmp_path_factory.mktemp(f"n{i}"),
                    database_url=url,
                    broker_url=broker_url,
                    env=env,
                    admin_key=first.admin_key,
                )
            )
            for i in range(2, count + 1)
        ]
        yield nodes
