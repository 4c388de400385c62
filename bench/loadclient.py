"""The load client: bench/loadclient/loadclient.c, built here with the C compiler on first use
(and again whenever the source is newer than the binary), driven over its stdin and stdout.

A compiled client because the Python one was the limit: at a few hundred thousand deliveries
per second it used the whole client core, so the maximum measured was the client's, not the
server's. The C one keeps all connections on one epoll loop and does no per-message allocation.
It runs on the client core like everything else the benchmark starts from this process: the
affinity set in bench.run is inherited."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.stacks import BENCH, CONNECT_BATCH, cpu_seconds, sources_for

SOURCE = BENCH / "loadclient" / "loadclient.c"
BINARY = BENCH / ".build" / "loadclient"
LINE_LIMIT = 64 * 1024 * 1024  # a `stats` line holds every latency sample of a step


def build() -> Path:
    """The client binary, compiled if it is missing or older than its source."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError(
            "the benchmark's load client is C and no C compiler was found: install one "
            "(`apt-get install gcc`) so that `cc` is on the PATH"
        )
    BINARY.parent.mkdir(exist_ok=True)
    partial = BINARY.with_suffix(".partial")  # renamed once complete: never a half-written binary
    done = subprocess.run(
        [cc, "-O2", "-Wall", "-o", str(partial), str(SOURCE), "-lz"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"building {SOURCE} failed:\n{done.stderr}")
    partial.replace(BINARY)
    return BINARY


def hello_line(frames: list[bytes]) -> str:
    """One connection's hello frames as the client reads them: hex, space-separated (hex
    because a Centrifuge hello batches its commands with newlines)."""
    if any(not f for f in frames):
        raise ValueError("an empty hello frame cannot be written to the hello file")
    return " ".join(f.hex() for f in frames)


@dataclass
class ClientStats:
    received: int  # publications, all connections together, since the start
    errors: int  # connections refused or not upgraded, protocol errors
    closed: int  # connections the server closed during the run
    latencies_ns: list[int]  # send-to-receive times since the previous stats()


class LoadClient:
    """n WebSocket (or SSE) connections held by the C client. Use `await LoadClient.start(...)`,
    which returns once every connection is taken on (the client opens them `batch` at a time
    and fails if a batch is not ready within 120 s)."""

    def __init__(self, proc: asyncio.subprocess.Process, tmp: Path, n: int) -> None:
        self.proc, self.tmp, self.n = proc, tmp, n

    @classmethod
    async def start(
        cls,
        port: int,
        path: str,
        n: int,
        hellos: list[list[bytes]],
        marker: bytes,
        ping: tuple[bytes, bytes] | None = None,
        ready_marker: bytes = b"",
        sample_every: int = 0,
        batch: int = CONNECT_BATCH,
        sse: bool = False,
        deflate: bool = False,
        protobuf: bool = False,
    ) -> LoadClient:
        """`hellos[i % len(hellos)]` are the frames connection i sends after the upgrade;
        `marker` occurs once per publication received; `ping` is the server's application
        ping payload and the answer; `ready_marker` arriving means the connection is taken on
        (empty: the upgrade is enough); one connection in `sample_every` times publications
        (0: none); `deflate` offers permessage-deflate and inflates what comes compressed;
        `protobuf`: the server speaks the protobuf format (binary hellos, protobuf
        pings answered by the client itself); `sse`: Server-Sent Event streams, each GET's
        query being its hello."""
        binary = build()
        tmp = Path(tempfile.mkdtemp(prefix="bench-client-"))
        hello_file = tmp / "hellos"
        hello_file.write_text("".join(hello_line(h) + "\n" for h in hellos))
        ping_payload, answer = ping or (b"", b"")
        proc = await asyncio.create_subprocess_exec(
            binary,
            "127.0.0.1",
            str(port),
            path,
            str(n),
            str(sample_every),
            hello_file,
            marker,
            ping_payload,
            answer,
            ready_marker,
            str(batch),
            *(["sse"] if sse else []),
            env={
                **os.environ,
                "LOADCLIENT_DEFLATE": "1" if deflate else "0",
                "LOADCLIENT_PROTOBUF": "1" if protobuf else "0",
                # Past ~28,000 connections one source address runs out of ports.
                "LOADCLIENT_SOURCES": str(sources_for(n)),
            },
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT,
        )
        client = cls(proc, tmp, n)
        try:
            line = await client._line()
            if line != f"ready {n}":
                raise ConnectionError(f"load client: expected 'ready {n}', got {line!r}")
        except BaseException:
            await client.close()
            raise
        return client

    async def _line(self) -> str:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            code = await self.proc.wait()
            raise ConnectionError(f"load client exited ({code}), see its stderr above")
        return line.decode().strip()

    async def stats(self) -> ClientStats:
        """The counters, and the latencies since the previous call (the client forgets them)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        got = json.loads(await self._line())
        return ClientStats(got["received"], got["errors"], got["closed"], got["latencies_ns"])

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"quit\n")
            try:
                await self.proc.stdin.drain()
                await asyncio.wait_for(self.proc.wait(), 10)
            except (ConnectionError, TimeoutError):
                self.proc.kill()
                await self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


class ClientGroup:
    """Several load clients read as one (the cluster scenario's: one per node, each holding
    its share of the connections): counters and latencies summed, CPU summed."""

    def __init__(self, clients: list[LoadClient]) -> None:
        self.clients = clients

    async def stats(self) -> ClientStats:
        parts = [await c.stats() for c in self.clients]
        return ClientStats(
            sum(p.received for p in parts),
            sum(p.errors for p in parts),
            sum(p.closed for p in parts),
            [ns for p in parts for ns in p.latencies_ns],
        )

    def cpu_seconds(self) -> float:
        return sum(c.cpu_seconds() for c in self.clients)

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
