"""Rate-limit counts shared over NATS JetStream, for nodes that share NATS and no Redis.

The sliding-window counter of `xshathra.ratelimit.memory`: one message per key and minute holds
that minute's count, updated compare-and-set (`natslink.append_after`), so concurrent requests
on several nodes never count once for two; the stream forgets counts after two minutes.

Within a node, one update per key is under way at a time, and the hits that come meanwhile
are decided together in the next one (in arrival order, one compare-and-set for all): hits of
one node racing each other's compare-and-set cost a failed request and a re-read each, dozens
of JetStream requests per API call with 8 concurrent publishers on one app, before failing
past MAX_ATTEMPTS. The count this node last wrote is remembered, so an update that no other
node interleaved with needs no read first.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from xshathra.links.nats import (
    NatsLink,
    NatsUnavailable,
    StreamUser,
    append_after,
    stream_name,
    text_token,
)
from xshathra.links.waiters import fail_all, resolve_all
from xshathra.ratelimit import WINDOW, sliding_window_wait

MAX_ATTEMPTS = 50
# A request waits on its rate limit: an unreachable JetStream must not hold it up for long.
REQUEST_TIMEOUT = 1.0
ONCE_MAX_AGE = 1300  # seconds a `first_use` mark lives: past Pusher's 2 x 600 s window


@dataclass(frozen=True, slots=True)
class _Hit:
    per_minute: int
    cost: int
    verdict: asyncio.Future[int | None]


class NatsWindowCounter:
    def __init__(self, link: NatsLink, *, prefix: str = "xs") -> None:
        self._prefix = prefix
        self._stream = stream_name(prefix, "ratelimits")
        self._user = StreamUser(
            link,
            api.StreamConfig(
                name=self._stream,
                subjects=[f"{prefix}.rl.>"],
                storage=api.StorageType.MEMORY,
                max_msgs_per_subject=1,
                max_age=2 * WINDOW + 10,
                allow_direct=True,
            ),
        )
        self._once = StreamUser(
            link,
            api.StreamConfig(
                name=stream_name(prefix, "once"),
                subjects=[f"{prefix}.once.>"],
                storage=api.StorageType.MEMORY,
                max_msgs_per_subject=1,
                max_age=ONCE_MAX_AGE,
                allow_direct=True,
            ),
        )
        self._js: JetStreamContext | None = None
        # Finished minutes never change again: their counts are read once.
        self._finished: dict[str, int] = {}
        # Per key with an update under way: the hits waiting for the next one.
        self._queues: dict[str, deque[_Hit]] = {}
        # Per minute's subject: (sequence, count) of what this node last wrote there.
        self._written: dict[str, tuple[int, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def _read(self, subject: str) -> tuple[int, int]:
        """(sequence of the count's message or 0, count)."""
        assert self._js is not None
        try:
            msg = await self._js.get_last_msg(self._stream, subject, direct=True)
        except NotFoundError:
            return 0, 0
        return msg.seq or 0, int(msg.data or b"0")

    async def _previous(self, subject: str) -> int:
        count = self._finished.get(subject)
        if count is None:
            if len(self._finished) > 10_000:
                self._finished.clear()
            count = self._finished[subject] = (await self._read(subject))[1]
        return count

    async def hit(self, per_minute: int, *keys: str, cost: int = 1) -> int | None:
        if self._js is None:
            nc, _ = await self._user.ready()
            self._js = nc.jetstream(timeout=REQUEST_TIMEOUT)
        base = f"{self._prefix}.rl.{text_token(chr(31).join(keys))}"
        loop = asyncio.get_running_loop()
        verdict: asyncio.Future[int | None] = loop.create_future()
        queue = self._queues.get(base)
        if queue is None:
            queue = self._queues[base] = deque()
            # From the next loop iteration on: hits made in this one join the first update.
            task = loop.create_task(self._drain(base, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        queue.append(_Hit(per_minute, cost, verdict))
        return await verdict

    async def _drain(self, base: str, queue: deque[_Hit]) -> None:
        """Decide the key's queued hits, all those waiting at a time, until none is left."""
        while queue:
            hits = list(queue)
            queue.clear()
            try:
                verdicts = await self._count(base, hits)
            except BaseException as exc:
                fail_all((hit.verdict for hit in hits), exc, lambda: NatsUnavailable("closed"))
                if not isinstance(exc, Exception):
                    raise
                continue
            resolve_all((hit.verdict for hit in hits), verdicts)
        del self._queues[base]  # no await since the queue was seen empty

    async def _count(self, base: str, hits: list[_Hit]) -> list[int | None]:
        """Each hit's verdict, in order, and the allowed ones' units counted in one step."""
        js = self._js
        assert js is not None
        now = time.time()
        minute = int(now // WINDOW)
        elapsed = now - minute * WINDOW
        previous = await self._previous(f"{base}.{minute - 1}")
        subject = f"{base}.{minute}"
        known = self._written.get(subject)
        for _ in range(MAX_ATTEMPTS):
            seq, count = known if known is not None else await self._read(subject)
            known = None  # a failed compare-and-set means it is stale: read the next time
            verdicts: list[int | None] = []
            added = 0
            for hit in hits:
                wait = sliding_window_wait(
                    hit.per_minute, count + added, previous, elapsed, hit.cost
                )
                verdicts.append(wait)
                if wait is None:
                    added += hit.cost  # a hit's units counted whole or not at all
            if not added:
                return verdicts
            ack = await append_after(js, subject, str(count + added).encode(), seq)
            if ack is not None:
                if len(self._written) > 10_000:
                    self._written.clear()
                self._written[subject] = (ack.seq, count + added)
                return verdicts
            # Another node counted first: count again.
        raise NatsUnavailable("too many concurrent rate-limit updates")

    async def first_use(self, key: str, ttl: int) -> bool:
        """A mark is a message holding its expiry (unix seconds), appended compare-and-set:
        of concurrent first uses one append wins. The stream forgets marks after
        `ONCE_MAX_AGE`, which must cover `ttl`."""
        if ttl > ONCE_MAX_AGE:
            raise ValueError(f"first_use keeps marks for at most {ONCE_MAX_AGE} s")
        nc, _ = await self._once.ready()
        js = nc.jetstream(timeout=REQUEST_TIMEOUT)
        subject = f"{self._prefix}.once.{text_token(key)}"
        now = time.time()
        try:
            msg = await js.get_last_msg(self._once.config.name or "", subject, direct=True)
            seq, until = msg.seq or 0, float(msg.data or b"0")
        except NotFoundError:
            seq, until = 0, 0.0
        if until > now:
            return False
        return await append_after(js, subject, str(now + ttl).encode(), seq) is not None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for queue in self._queues.values():
            for hit in queue:
                if not hit.verdict.done():
                    hit.verdict.set_exception(NatsUnavailable("the counter was closed"))
        self._queues.clear()
        self._js = None
        await self._user.close()
        await self._once.close()
