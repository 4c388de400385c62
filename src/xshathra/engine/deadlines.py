"""Connection expiry deadlines, kept in one heap and swept by one task, instead of one event
loop timer per connection: a loop timer costs about 600 bytes (handle and libuv timer), a
heap entry under 100, and with tens of thousands of idle connections that difference is most
of what a connection costs.

Entries are never removed early: a connection that closed or got a new deadline leaves a
stale entry, which the owner recognises and ignores when it comes due. The heap is compacted
when stale entries could outnumber live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from typing import Protocol

SWEEP_INTERVAL = 0.25  # seconds: how late an expiry may be noticed


class HasDeadline(Protocol):
    @property
    def expiry_deadline(self) -> float | None:
        """The wall-clock time this owner currently expires at; None when it never does."""

    def deadline_reached(self) -> None: ...


class Deadlines:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, HasDeadline]] = []
        self._order = itertools.count()  # ties never compare owners
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, owner: HasDeadline, at: float) -> None:
        """Call `owner.deadline_reached()` once wall-clock time passes `at`, if its
        `expiry_deadline` is still `at` then."""
        heapq.heappush(self._heap, (at, next(self._order), owner))
        if len(self._heap) > 4096 and len(self._heap) % 4096 == 0:
            self._compact()

    def _compact(self) -> None:
        live = [entry for entry in self._heap if entry[2].expiry_deadline == entry[0]]
        if len(live) * 2 < len(self._heap):
            heapq.heapify(live)
            self._heap = live

    def due(self, now: float) -> list[HasDeadline]:
        """Pop every owner whose deadline passed and is still current."""
        heap, owners = self._heap, []
        while heap and heap[0][0] <= now:
            at, _, owner = heapq.heappop(heap)
            if owner.expiry_deadline == at:
                owners.append(owner)
        return owners

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = loop.create_task(self._sweep(), name="xshathra-deadlines")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            for owner in self.due(time.time()):
                owner.deadline_reached()
