"""Sliding-window counts in this process: the counter of a single node, and the one the API
uses for failed key attempts (which must cost a dict lookup, not a round trip)."""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict

from xshathra.ratelimit import WINDOW, sliding_window_wait

MAX_MARKS = 100_000  # once-only marks held (`first_use`)


class MemoryWindowCounter:
    """A sliding-window counter for one node: per key, this minute's count and the previous
    minute's, the previous weighted by how much of it still lies inside the last 60 seconds
    (as the NATS counter does). `limits`' own memory storage hands every hit to a worker
    thread to expire old entries, which costs more than the request it limits."""

    def __init__(self) -> None:
        # key -> (minute, count in it, count in the minute before)
        self._counts: dict[tuple[str, ...], tuple[int, int, int]] = {}
        self._swept = 0
        self._marks: OrderedDict[str, float] = OrderedDict()  # key -> until (unix seconds)

    async def hit(self, per_minute: int, *keys: str, cost: int = 1) -> int | None:
        return self.add(per_minute, *keys, cost=cost)

    def add(self, per_minute: int, *keys: str, cost: int = 1) -> int | None:
        """`hit` without the await: nothing here waits."""
        now = time.time()
        minute = int(now // WINDOW)
        if minute != self._swept:
            self._sweep(minute)
        at, count, previous = self._counts.get(keys, (minute, 0, 0))
        if at != minute:  # the key's last minute is over: it becomes the previous one
            at, count, previous = minute, 0, count if at == minute - 1 else 0
        wait = sliding_window_wait(per_minute, count, previous, now - minute * WINDOW, cost)
        self._counts[keys] = (at, count if wait is not None else count + cost, previous)
        return wait

    def peek(self, per_minute: int, *keys: str) -> int | None:
        """What `hit` would answer for one more unit, counting nothing."""
        now = time.time()
        minute = int(now // WINDOW)
        at, count, previous = self._counts.get(keys, (minute, 0, 0))
        if at != minute:
            count, previous = 0, count if at == minute - 1 else 0
        return sliding_window_wait(per_minute, count, previous, now - minute * WINDOW)

    def forget_oldest(self, n: int) -> None:
        """Forget the `n` keys counted first (dicts keep insertion order)."""
        for key in list(itertools.islice(self._counts, n)):
            del self._counts[key]

    def __len__(self) -> int:
        return len(self._counts)

    def _sweep(self, minute: int) -> None:
        """Once a minute: forget keys idle for two minutes, so memory follows live keys."""
        self._swept = minute
        for key in [k for k, (at, _, _) in self._counts.items() if at < minute - 1]:
            del self._counts[key]

    async def first_use(self, key: str, ttl: int) -> bool:
        now = time.time()
        marks = self._marks
        # Marks are kept in the order they were made, all with one `ttl` in practice: the
        # expired ones are the oldest; past the bound the oldest go first.
        while marks:
            oldest, until = next(iter(marks.items()))
            if until > now and len(marks) < MAX_MARKS:
                break
            del marks[oldest]
        if marks.get(key, 0.0) > now:
            return False
        marks.pop(key, None)  # expired (a shorter ttl than the oldest's): made anew, at the end
        marks[key] = now + ttl
        return True

    async def close(self) -> None:
        self._counts.clear()
        self._marks.clear()
