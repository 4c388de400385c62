"""Scenario "recovery" (Xshathra only): n clients on one channel note their stream position,
all disconnect, `messages` publications go out while they are away, then all n reconnect at
once asking to recover from that position. Measured: the wall time until every client has
its subscribe reply with `recovered: true` and all the missed publications, and each client's
time from starting its connection to that point.

Scenario "storm" is the same reconnect at several sizes (`storm`): the time until all have
recovered, per client, against the smallest size's, which should stay near 1 (linear growth)."""

from __future__ import annotations

import asyncio
import collections
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.stacks import (
    XS_PATH,
    Stack,
    children_cpu,
    close_all,
    cpu_seconds,
    open_clients,
    serving,
    source_address,
    xs_hello,
)
from bench.wsclient import RecoveryClient

CHANNEL = "bench:recovery"
WARMUP = 10  # publications before the disconnect, so each client holds a non-zero offset
MESSAGES = 100  # missed while away: the namespace keeps 100 (stacks.NAMESPACE)
TIMEOUT = 120.0


def _ms(values: list[float], pct: int) -> float | None:
    if len(values) < 2:
        return round(values[0] * 1000, 1) if values else None
    return round(statistics.quantiles(values, n=100)[pct - 1] * 1000, 1)


async def publish(api: httpx.AsyncClient, count: int) -> None:
    """`count` publications, one at a time: each acknowledged before the next, so the history
    holds them all by the time the clients come back."""
    for i in range(count):
        r = await api.post("/realtime/api/publish", json={"channel": CHANNEL, "data": {"i": i}})
        r.raise_for_status()


async def wait_until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def subscribe_and_leave(
    port: int, ctx: dict[str, Any], api: httpx.AsyncClient, n: int
) -> list[tuple[str, int]]:
    """Each client's (epoch, last offset) after WARMUP publications, then every client gone."""
    clients: list[RecoveryClient] = []

    def first(i: int, done: asyncio.Future[Any]) -> RecoveryClient:
        client = RecoveryClient(
            "127.0.0.1", XS_PATH, xs_hello(ctx, {"channel": CHANNEL}), CHANNEL, done
        )
        clients.append(client)
        return client

    transports = await open_clients(port, n, first)
    await publish(api, WARMUP)
    await wait_until(
        lambda: all(c.got >= WARMUP for c in clients), "warm-up publications not all delivered"
    )
    positions = [(c.epoch, c.offset) for c in clients]
    close_all(transports)
    # The server must have dropped them all before the publications they are to miss (or
    # some would be delivered live to closing sockets instead of recovered), and before the
    # storm (or it would still be closing the old ones while taking on the new).
    await wait_channel_empty(api)
    return positions


async def subscribers(api: httpx.AsyncClient) -> int:
    """The channel's subscriber count on the server (the `channels` server API command)."""
    r = await api.post("/realtime/api/channels", json={"pattern": CHANNEL})
    r.raise_for_status()
    channels: dict[str, Any] = r.json()["result"]["channels"]
    return int(channels.get(CHANNEL, {}).get("num_clients", 0))


async def wait_channel_empty(api: httpx.AsyncClient, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while (left := await subscribers(api)) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{left} subscribers still on {CHANNEL} after the disconnect")
        await asyncio.sleep(0.1)  # polled: the server says nothing when its last one goes


async def come_back(
    port: int,
    ctx: dict[str, Any],
    position: tuple[str, int],
    start: float,
    clients: list[RecoveryClient],
    local_addr: tuple[str, int] | None = None,
) -> tuple[float, list[int]]:
    """One client reconnecting with a recovering subscribe: its seconds from `start` to
    recovered, and the offsets of the publications it got (a list that grows should more
    arrive). It joins `clients` so that all close together once all are done: closing each
    as it finishes would load the server while the others still recover."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    epoch, offset = position
    hello = xs_hello(ctx, {"channel": CHANNEL, "recover": True, "offset": offset, "epoch": epoch})
    client = RecoveryClient(
        "127.0.0.1", XS_PATH, hello, CHANNEL, done, expect=MESSAGES, need_recovered=True
    )
    clients.append(client)
    await loop.create_connection(lambda: client, "127.0.0.1", port, local_addr=local_addr)
    return await asyncio.wait_for(done, TIMEOUT) - start, client.offsets


async def storm(
    stack: Stack, sizes: list[int], progress: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """The reconnect of `recovery` at each size (a fresh server each), with the time per
    client and its ratio to the smallest size's: near 1 means the storm grows linearly."""
    runs = [progress(await recovery(stack, n)) for n in sorted(sizes)]
    base = runs[0]["total_s"] / runs[0]["n"]
    for r in runs:
        per_client = r["total_s"] / r["n"]
        r["ms_per_client"] = round(per_client * 1000, 3)
        r["per_client_vs_smallest"] = round(per_client / base, 2)
    return {"stack": stack.name, "sizes": runs}


async def recovery(stack: Stack, n: int) -> dict[str, Any]:
    env = {"XSHATHRA_MAX_CONNECTIONS_PER_APP": str(max(10_000, 2 * n))}
    async with serving(stack, env) as (port, proc, ctx):
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": ctx["api_key"]}
        ) as api:
            positions = await subscribe_and_leave(port, ctx, api, n)
            await publish(api, MESSAGES)
        cpu_s0, cpu_c0 = children_cpu(proc.pid), cpu_seconds(os.getpid())
        clients: list[RecoveryClient] = []
        start = time.monotonic()
        outcomes = await asyncio.gather(
            *(
                come_back(port, ctx, p, start, clients, source_address(i, n))
                for i, p in enumerate(positions)
            ),
            return_exceptions=True,
        )
        total = time.monotonic() - start
        server_cpu = (children_cpu(proc.pid) - cpu_s0) / total
        client_cpu = (cpu_seconds(os.getpid()) - cpu_c0) / total
        await asyncio.sleep(0.5)  # duplicates, were there any, would arrive now
        result = _result(n, positions, outcomes, total, server_cpu, client_cpu)
        for client in clients:
            client.close()
        return result


def _result(
    n: int,
    positions: list[tuple[str, int]],
    outcomes: list[tuple[float, list[int]] | BaseException],
    total: float,
    server_cpu: float,
    client_cpu: float,
) -> dict[str, Any]:
    times: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    gaps = 0
    for (_, before), outcome in zip(positions, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            errors[str(outcome) or type(outcome).__name__] += 1
            continue
        seconds, offsets = outcome
        times.append(seconds)
        # Recovered means exactly the missed ones, in order, none twice.
        gaps += offsets != list(range(before + 1, before + MESSAGES + 1))
    return {
        "stack": "xshathra",
        "n": n,
        "messages": MESSAGES,
        "total_s": round(total, 3),
        "p50_ms": _ms(times, 50),
        "p99_ms": _ms(times, 99),
        "recovered": len(times),
        "failed": n - len(times),
        "wrong_offset": gaps,
        "errors": dict(errors.most_common(5)),
        "server_cpu": round(server_cpu, 2),
        "client_cpu": round(client_cpu, 2),
    }
