"""Rate-limit counts shared over NATS JetStream, for nodes that share NATS and no Redis.

The sliding-window counter of `xshathra.ratelimit.memory`: one message per key and minute holds
that minute's count, updated compare-and-set (`natslink.append_after`), so concurrent requests
on several nodes never count once for two; the stream forgets counts after two minutes.
"""

from __future__ import annotations

import time

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
from xshathra.ratelimit import WINDOW, sliding_window_wait

MAX_ATTEMPTS = 50
# A request waits on its rate limit: an unreachable JetStream must not hold it up for long.
REQUEST_TIMEOUT = 1.0
ONCE_MAX_AGE = 1300  # seconds a `first_use` mark lives: past Pusher's 2 x 600 s window


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
        js = self._js
        base = f"{self._prefix}.rl.{text_token(chr(31).join(keys))}"
        now = time.time()
        minute = int(now // WINDOW)
        elapsed = now - minute * WINDOW
        previous = await self._previous(f"{base}.{minute - 1}")
        subject = f"{base}.{minute}"
        for _ in range(MAX_ATTEMPTS):
            seq, count = await self._read(subject)
            wait = sliding_window_wait(per_minute, count, previous, elapsed, cost)
            if wait is not None:
                return wait
            # All `cost` units in one compare-and-set: a request is counted whole or not at all.
            if await append_after(js, subject, str(count + cost).encode(), seq):
                return None
            # Another request counted first: count again.
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
        self._js = None
        await self._user.close()
        await self._once.close()
