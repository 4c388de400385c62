"""Rate-limit counts shared over NATS JetStream, for nodes that share NATS and no Redis.

A sliding-window counter: one message per key and minute holds that minute's count, updated
compare-and-set (`Nats-Expected-Last-Subject-Sequence`), so concurrent requests on several
nodes never count once for two. The estimate weights the previous minute's count by how much
of it still lies inside the last 60 seconds, as Cloudflare's and `limits`' sliding window
counters do; the stream forgets counts after two minutes.
"""

from __future__ import annotations

import math
import time

from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from xshathra.brokers.natslink import (
    NatsLink,
    NatsUnavailable,
    StreamUser,
    stream_name,
    text_token,
)

WINDOW = 60
WRONG_LAST_SEQUENCE = 10071
MAX_ATTEMPTS = 50
# A request waits on its rate limit: an unreachable JetStream must not hold it up for long.
REQUEST_TIMEOUT = 1.0


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

    async def hit(self, per_minute: int, *keys: str) -> int | None:
        if self._js is None:
            nc, _ = await self._user.ready()
            self._js = nc.jetstream(timeout=REQUEST_TIMEOUT)
        js = self._js
        base = f"{self._prefix}.rl.{text_token(chr(31).join(keys))}"
        now = time.time()
        minute = int(now // WINDOW)
        elapsed = now - minute * WINDOW
        previous = await self._previous(f"{base}.{minute - 1}")
        weight = (WINDOW - elapsed) / WINDOW
        subject = f"{base}.{minute}"
        for _ in range(MAX_ATTEMPTS):
            seq, count = await self._read(subject)
            if previous * weight + count + 1 > per_minute:
                if count + 1 > per_minute or previous == 0:
                    return max(1, math.ceil(WINDOW - elapsed))
                # Until enough of the previous minute has slid out of the window.
                wait = WINDOW - elapsed - (per_minute - count - 1) * WINDOW / previous
                return max(1, math.ceil(wait))
            try:
                await js.publish(
                    subject,
                    str(count + 1).encode(),
                    headers={"Nats-Expected-Last-Subject-Sequence": str(seq)},
                )
            except APIError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    raise
                continue  # another request counted first: count again
            return None
        raise NatsUnavailable("too many concurrent rate-limit updates")

    async def close(self) -> None:
        self._js = None
        await self._user.close()
