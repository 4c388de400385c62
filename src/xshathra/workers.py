"""`xshathra serve --workers N`: one supervisor process and N worker processes on one port.

Each worker is a complete node (its own engine, node id, webhook dispatcher and analytics
recorder) listening on its own socket bound with SO_REUSEPORT, so the kernel spreads new
connections over the workers and a worker that dies takes only its own connections with it.
The workers share state the way several machines do: through the broker (Redis or NATS) and
the database, so the embedded memory broker is refused. The supervisor migrates the database
and settles the secrets once, keeps a bound (never listening) socket that reserves the port,
restarts a worker that exits (backing off when it keeps failing), and on SIGTERM/SIGINT
forwards SIGTERM to every worker, waits for them to drain, and exits 0.

It must not serve traffic itself, and never holds an event loop when it starts a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time

from xshathra.settings import Settings

log = logging.getLogger("xshathra.workers")

RESTART_MIN_DELAY = 0.5  # seconds before restarting a worker that exited
RESTART_MAX_DELAY = 10.0
STABLE_AFTER = 10.0  # a worker up this long resets its backoff
GIVE_UP_AFTER = 5  # this many quick failures of one worker in a row stop the supervisor
DRAIN_TIMEOUT = 30.0  # SIGTERM to SIGKILL: uvicorn's graceful shutdown (10 s) plus lifespan
ORPHAN_CHECK = 1.0  # seconds between a worker's checks that its supervisor is alive
# A worker's exit code when it never served (its startup failed), uvicorn's own code for it:
# such exits count as failures however long the start took (a busy machine's imports).
STARTUP_FAILED = 3


class WorkersRefused(SystemExit):
    """A configuration that several workers cannot serve correctly; a one-line message."""


def check_workers(settings: Settings, count: int) -> None:
    """Refuse what N processes would get wrong. The memory broker lives in one process: with
    it, each worker would have its own channels, history and presence."""
    scheme = settings.broker_url.split("://", 1)[0].lower()
    if count > 1 and scheme == "memory":
        raise WorkersRefused(
            f"--workers {count} needs a broker the workers share: set XSHATHRA_BROKER_URL to "
            "redis://host:6379/0 or nats://host:4222 (the embedded memory:// broker lives in "
            "one process)"
        )


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEPORT, not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


# --- the worker ---------------------------------------------------------------------------------


def run_worker(settings: Settings, index: int) -> None:
    """One worker: a node on its own SO_REUSEPORT socket, until SIGTERM (or its supervisor
    disappears). Only worker 0 prints the start banner."""
    from xshathra.server import create_server

    if not settings.node_name:
        settings = settings.model_copy(update={"node_name": f"{socket.gethostname()}-{index}"})
    sock = reuseport_socket(settings.host, settings.port)
    _exit_with_parent(os.getppid())
    server = create_server(settings, banner=index == 0)
    server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(STARTUP_FAILED)


def _exit_with_parent(parent: int) -> None:
    """SIGTERM this worker when its supervisor is gone (killed with -9): a worker left behind
    would hold the port and serve on alone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


# --- the supervisor -----------------------------------------------------------------------------


def supervise(settings: Settings, count: int) -> int:
    """Run `count` workers until SIGTERM/SIGINT; the process's exit code."""
    check_workers(settings, count)
    from xshathra.server import prepare_storage

    # Before any worker: migrations run once, and a generated admin key is printed once.
    secrets = asyncio.run(prepare_storage(settings))
    # Reserves the port (and resolves port 0) for the workers, which bind it too; it never
    # listens, so the kernel hands it no connection.
    holder = reuseport_socket(settings.host, settings.port)
    port = int(holder.getsockname()[1])
    print(
        f"Xshathra supervisor (pid {os.getpid()}): {count} workers on "
        f"{settings.host}:{port}, broker {settings.broker_url.split('://', 1)[0]}",
        flush=True,
    )
    if secrets.generated_admin_key:
        print(
            "  Admin API key (shown once, store it now; header X-ADMIN-API-KEY):\n"
            f"    {secrets.generated_admin_key}",
            flush=True,
        )
    try:
        return asyncio.run(Supervisor(settings, count, port).run())
    finally:
        holder.close()


class Supervisor:
    def __init__(self, settings: Settings, count: int, port: int) -> None:
        self._settings = settings
        self._count = count
        self._port = port
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._failed = False

    def _command(self, index: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "xshathra",
            "serve",
            "--host",
            self._settings.host,
            "--port",
            str(self._port),
            "--worker-index",
            str(index),
        ]

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        keepers = [asyncio.create_task(self._keep(i)) for i in range(self._count)]
        await self._stopping.wait()
        await self._drain()
        for task in keepers:
            task.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        return 1 if self._failed else 0

    async def _keep(self, index: int) -> None:
        """Worker `index`, restarted whenever it exits until the supervisor stops."""
        delay = RESTART_MIN_DELAY
        quick_failures = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                # The environment (XSHATHRA_*, .env) is the workers' configuration, as ours.
                proc = await asyncio.create_subprocess_exec(*self._command(index))
            except OSError as exc:  # out of processes or memory: a failed start like any other
                log.warning("worker %d could not be started: %s", index, exc)
                code: int | str = type(exc).__name__
            else:
                self._procs[index] = proc
                if self._stopping.is_set():  # stopped while it was starting
                    proc.send_signal(signal.SIGTERM)
                code = await proc.wait()
            if self._stopping.is_set():
                return
            if code != STARTUP_FAILED and time.monotonic() - started >= STABLE_AFTER:
                delay, quick_failures = RESTART_MIN_DELAY, 0
            else:
                quick_failures += 1
            if quick_failures >= GIVE_UP_AFTER:
                log.error(
                    "worker %d failed %d times in a row (it could not start, or exited within "
                    "%.0f s; last: %s): stopping",
                    index,
                    quick_failures,
                    STABLE_AFTER,
                    code,
                )
                self._failed = True
                self._stopping.set()
                return
            log.warning("worker %d exited (%s); restarting in %.1f s", index, code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(RESTART_MAX_DELAY, delay * 2)

    async def _drain(self) -> None:
        """SIGTERM every worker (each closes its clients and flushes, as one node does on
        SIGTERM), wait, and SIGKILL what is still there after DRAIN_TIMEOUT."""
        live = [p for p in self._procs.values() if p.returncode is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in live)), DRAIN_TIMEOUT)
        except TimeoutError:
            for proc in live:
                if proc.returncode is None:
                    log.warning("worker pid %d did not drain in time: killed", proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in live))
