"""Rate-limit counters: the `WindowCounter` protocol every backend implements, and the
sliding-window arithmetic the memory and NATS counters share. Implementations: `memory`
(one node), `redis` (the `limits` library, on a shared Redis), `nats` (JetStream). The policy
that decides what is counted (per app, per IP, failed keys) is the HTTP API's
(`xshathra.api.ratelimit`); nothing here knows of HTTP or applications."""

from __future__ import annotations

import math
from typing import Protocol


class WindowCounter(Protocol):
    async def hit(self, per_minute: int, *keys: str, cost: int = 1) -> int | None:
        """Count `cost` units against `per_minute` under `keys`, all or none: None when
        allowed (all counted), else the whole seconds until they would be (none counted)."""

    async def first_use(self, key: str, ttl: int) -> bool:
        """True the first time `key` is seen by any node sharing this store within `ttl`
        seconds, False after (a once-only mark, such as a signed request's replay guard)."""

    async def close(self) -> None: ...


WINDOW = 60  # seconds: limits are per minute


def sliding_window_wait(
    per_minute: int, count: int, previous: int, elapsed: float, cost: int = 1
) -> int | None:
    """The sliding-window counter's verdict on `cost` more units: None when allowed, else
    whole seconds to wait. `count` is this minute's units so far, `previous` the last
    minute's, weighted by how much of that minute still lies in the last 60 seconds
    (`elapsed`: seconds into this minute), as Cloudflare's and `limits`' counters do."""
    if previous * (WINDOW - elapsed) / WINDOW + count + cost <= per_minute:
        return None
    if count + cost > per_minute or previous == 0:
        return max(1, math.ceil(WINDOW - elapsed))  # only the next minute helps
    # Until enough of the previous minute has slid out of the window.
    return max(1, math.ceil(WINDOW - elapsed - (per_minute - count - cost) * WINDOW / previous))
