"""The broker restarting under load: two nodes on PostgreSQL, subscribers (centrifuge-python)
on one, a publisher hammering the other's HTTP API while Redis or NATS goes away and comes
back. Nothing the API acknowledged may go missing without the client being told: either it
arrives exactly once and in order, or the subscription reports `recovered=False`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from centrifuge import Client

from tests.support.clients import Recorder, SubEvents, make_client, realtime_token
from tests.support.server import ServerProcess, running_server, wait_health
from tests.support.services import (
    NatsServer,
    RedisServer,
    postgres_database,
)

CHANNEL = "public:load"
SUBSCRIBERS = 3


class Publisher:
    """Publishes 0, 1, 2… through the engine API as fast as answers come, remembering which
    numbers were acknowledged (200) and which refused (the broker was away)."""

    def __init__(self, node: ServerProcess, app: dict[str, Any]) -> None:
        self._node = node
        self._key = str(app["api_key"])
        self.acked: list[int] = []
        self.refused = 0
        self.errors: list[str] = []  # requests that got no answer at all
        self.next = 0
        self._stop = asyncio.Event()
        self._progress = asyncio.Condition()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while not self._stop.is_set():
                n, self.next = self.next, self.next + 1
                try:
                    r = await http.post(
                        f"{self._node.base_url}/realtime/api/publish",
                        headers={"X-API-Key": self._key},
                        json={"channel": CHANNEL, "data": n},
                    )
                    refused = r.status_code != 200 or "error" in r.json()
                    if refused:
                        self.errors.append(f"{r.status_code} {r.text[:100]}")
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    refused = True
                async with self._progress:
                    if refused:
                        self.refused += 1
                    else:
                        self.acked.append(n)
                    self._progress.notify_all()
                if refused:
                    await asyncio.sleep(0.02)  # a refused publish is answered at once: pace it

    async def until(self, acked: int = 0, refused: int = 0, timeout: float = 30) -> None:
        try:
            async with asyncio.timeout(timeout), self._progress:
                await self._progress.wait_for(
                    lambda: len(self.acked) >= acked and self.refused >= refused
                )
        except TimeoutError:
            raise AssertionError(
                f"publisher stalled: {len(self.acked)} acked, {self.refused} refused, "
                f"last errors {self.errors[-3:]}"
            ) from None

    def stop(self) -> None:
        self._stop.set()


@contextlib.contextmanager
def two_nodes(tmp_path: Path, broker: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = {"XSHATHRA_BROKER_PREFIX": f"xs_it_{secrets.token_hex(4)}"}
    with (
        postgres_database() as url,
        running_server(tmp_path / "a", database_url=url, broker_url=broker, env=env) as a,
        running_server(
            tmp_path / "b", database_url=url, broker_url=broker, env=env, admin_key=a.admin_key
        ) as b,
    ):
        yield a, b


@contextlib.asynccontextmanager
async def subscribers(node: ServerProcess, app: dict[str, Any]) -> AsyncIterator[list[Recorder]]:
    recorders, clients = [Recorder() for _ in range(SUBSCRIBERS)], []
    try:
        for i, rec in enumerate(recorders):
            client: Client = make_client(node, rec, token=realtime_token(node, app, f"u{i}"))
            clients.append(client)
            sub = client.new_subscription(CHANNEL, SubEvents(rec))
            await client.connect()
            await sub.subscribe()
            assert (await rec.next("subscribed")).recoverable
        yield recorders
    finally:
        for client in clients:
            await client.disconnect()


@dataclass
class Outcome:
    acked: list[int]  # what the API acknowledged, in order
    resumed_from: int  # every subscriber was resubscribed before this number was published
    received: list[list[int]]  # per subscriber, every publication it was handed
    unrecovered: list[bool]  # per subscriber: was it told `recovered=False`?


def carries(data: Any, ctx: Any) -> bool:
    """Whether a publication event carries `data`."""
    return bool(ctx.pub.data == data)


async def _outage_under_load(
    tmp_path: Path, broker_url: str, stop: Callable[[], None], start: Callable[[], None]
) -> Outcome:
    with two_nodes(tmp_path, broker_url) as (a, b):
        app = a.create_app(name="outage-load", rate_limit=1_000_000)
        async with subscribers(a, app) as recorders:
            publisher = Publisher(b, app)
            task = asyncio.create_task(publisher.run())
            try:
                await publisher.until(acked=50)
                stop()
                try:
                    await wait_health(a, 503)
                    await wait_health(b, 503)
                    await publisher.until(refused=5)
                finally:
                    start()
                await wait_health(a, 200)
                await wait_health(b, 200)
                for rec in recorders:  # told to recover (2500), each resubscribes by itself
                    await rec.next("subscribed", lambda ctx: ctx.was_recovering, 20)
                resumed_from = publisher.next
                await publisher.until(acked=len(publisher.acked) + 50)
            finally:
                publisher.stop()
                await task
            last = publisher.acked[-1]
            for rec in recorders:
                await rec.next("publication", functools.partial(carries, last), 20)
            return Outcome(
                acked=publisher.acked,
                resumed_from=resumed_from,
                received=[
                    [ctx.pub.data for _, ctx in rec.kinds("publication")] for rec in recorders
                ],
                unrecovered=[
                    any(
                        not ctx.recovered
                        for _, ctx in rec.kinds("subscribed")
                        if ctx.was_recovering
                    )
                    for rec in recorders
                ],
            )


async def test_nats_restart_under_load_loses_nothing(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """NATS keeps history on disk: every subscriber recovers, and holds every acknowledged
    publication exactly once, in order."""
    outcome = await _outage_under_load(
        tmp_path, nats_server.url, nats_server.stop, nats_server.start
    )
    assert outcome.unrecovered == [False] * SUBSCRIBERS
    for received in outcome.received:
        assert received == sorted(set(received))  # once each, in order
        assert set(outcome.acked) <= set(received)


async def test_redis_restart_under_load_is_never_a_silent_gap(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis restarts empty (history gone): a subscriber that lost publications is told
    `recovered=False`; it never receives one twice or out of order; and everything published
    once it resubscribed reaches it."""
    outcome = await _outage_under_load(
        tmp_path, redis_server.url, redis_server.stop, redis_server.start
    )
    for received, unrecovered in zip(outcome.received, outcome.unrecovered, strict=True):
        assert received == sorted(set(received))
        later = {n for n in outcome.acked if n >= outcome.resumed_from}
        assert later <= set(received)
        before = {n for n in outcome.acked if n < outcome.resumed_from}
        assert unrecovered or before <= set(received)
