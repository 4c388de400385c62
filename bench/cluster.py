"""Where the cluster scenario's nodes meet: the machine's Redis or NATS (JetStream), under a
key/subject prefix of the run's own (`XSHATHRA_BROKER_PREFIX`), so that a benchmark never
reads or deletes what the tests or another run put there; that prefix's keys and streams are
deleted afterwards. The nodes share one SQLite file (WAL mode, see bench.stacks.serving_nodes):
the database holds the application and is read once per node, not on the delivery path."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")
BROKERS = {"redis": REDIS_URL, "nats": NATS_URL}


@contextlib.asynccontextmanager
async def broker_env(kind: str) -> AsyncIterator[dict[str, str]]:
    """The nodes' environment for one measurement on `kind` (redis or nats); what it left
    in the broker is deleted on the way out."""
    prefix = f"xsbench_{secrets.token_hex(4)}"
    try:
        yield {"XSHATHRA_BROKER_URL": BROKERS[kind], "XSHATHRA_BROKER_PREFIX": prefix}
    finally:
        await (_drop_redis(prefix) if kind == "redis" else _drop_nats(prefix))


async def _drop_redis(prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()


async def _drop_nats(prefix: str) -> None:
    import nats

    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        names: list[str] = []  # STREAM.LIST is paged (256 a page): read them all, then delete
        while page := await js.streams_info(offset=len(names)):
            names.extend(info.config.name or "" for info in page)
        for name in names:
            if name.startswith(f"{prefix}_"):
                await js.delete_stream(name)
    finally:
        await nc.close()
