"""In-process broker for a single node: delivery is a direct call, history is a bounded deque.

Publishing and appending happen in one synchronous step on the event loop, so they are atomic.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from xshathra.brokers import (
    BrokerEventHandler,
    BrokerPublication,
    ClientInfoData,
    HistoryOptions,
    HistoryResult,
    PublishOptions,
    StreamPosition,
)
from xshathra.engine.channels import ChannelRef

IDEMPOTENCY_TTL = 300.0


META_TTL = 30 * 86400.0  # as the Redis broker: the position outlives the publications


@dataclass(slots=True)
class _Stream:
    epoch: str
    offset: int = 0
    items_expire_at: float = 0.0  # publications go at this time (0: never)
    meta_expire_at: float = 0.0  # the epoch and offset go much later
    items: deque[BrokerPublication] = field(default_factory=deque)


def _new_epoch() -> str:
    return secrets.token_hex(4)


class MemoryBroker:
    """Broker for one node. A history stream expires `history_ttl` s after its last publish."""

    def __init__(self) -> None:
        self._handler: BrokerEventHandler | None = None
        self._streams: dict[ChannelRef, _Stream] = {}
        self._idempotency: dict[tuple[ChannelRef, str], tuple[float, StreamPosition]] = {}
        self._subscribed: set[ChannelRef] = set()
        self._counts: dict[ChannelRef, int] = {}

    async def start(self, handler: BrokerEventHandler) -> None:
        self._handler = handler

    async def close(self) -> None:
        self._handler = None

    async def ping(self) -> None:
        return None

    async def subscribe(self, ref: ChannelRef) -> None:
        self._subscribed.add(ref)

    async def unsubscribe(self, ref: ChannelRef) -> None:
        self._subscribed.discard(ref)

    def _stream(self, ref: ChannelRef, now: float) -> _Stream:
        """The channel's stream, its expired publications dropped; created when absent."""
        stream = self._streams.get(ref)
        if stream is not None and stream.meta_expire_at < now:
            stream = None
        if stream is None:
            stream = self._streams[ref] = _Stream(epoch=_new_epoch(), meta_expire_at=now + META_TTL)
        elif stream.items_expire_at and stream.items_expire_at < now:
            stream.items.clear()
        return stream

    async def publish(self, ref: ChannelRef, data: bytes, opts: PublishOptions) -> StreamPosition:
        now = time.monotonic()
        if opts.idempotency_key:
            key = (ref, opts.idempotency_key)
            seen = self._idempotency.get(key)
            if seen is not None and seen[0] > now:
                return seen[1]
            if len(self._idempotency) > 100_000:
                self._purge_idempotency(now)
        offset, epoch = 0, ""
        stream: _Stream | None = None
        if opts.history_size > 0:
            stream = self._stream(ref, now)
            stream.offset += 1
            stream.items_expire_at = now + opts.history_ttl if opts.history_ttl > 0 else 0.0
            stream.meta_expire_at = now + max(META_TTL, opts.history_ttl)
            offset, epoch = stream.offset, stream.epoch
        pub = BrokerPublication(
            data=data,
            offset=offset,
            epoch=epoch,
            tags=opts.tags,
            info=opts.info,
            time=int(time.time() * 1000),
        )
        if stream is not None:
            items = stream.items
            items.append(pub)
            while len(items) > opts.history_size:
                items.popleft()
        position = StreamPosition(offset, epoch)
        if opts.idempotency_key:
            self._idempotency[(ref, opts.idempotency_key)] = (now + IDEMPOTENCY_TTL, position)
        if self._handler is not None and ref in self._subscribed:
            self._handler.on_publication(ref, pub)
        return position

    def _purge_idempotency(self, now: float) -> None:
        for key in [k for k, (exp, _) in self._idempotency.items() if exp <= now]:
            del self._idempotency[key]

    async def publish_join(self, ref: ChannelRef, info: ClientInfoData) -> None:
        if self._handler is not None and ref in self._subscribed:
            self._handler.on_join(ref, info)

    async def publish_leave(self, ref: ChannelRef, info: ClientInfoData) -> None:
        if self._handler is not None and ref in self._subscribed:
            self._handler.on_leave(ref, info)

    async def publish_control(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.on_control(data)

    async def history(self, ref: ChannelRef, opts: HistoryOptions) -> HistoryResult:
        # An unknown channel gets a stream (and an epoch) now, so that a position a client
        # takes before any publication stays comparable later.
        stream = self._stream(ref, time.monotonic())
        position = StreamPosition(stream.offset, stream.epoch)
        if opts.limit == 0:
            return HistoryResult([], position)
        items: list[BrokerPublication] = list(stream.items)
        if opts.since is not None:
            if opts.since.epoch != stream.epoch:
                items = []  # caller compares epochs and reports unrecoverable
            elif opts.reverse:  # paging backwards: what came before `since`
                items = [p for p in items if p.offset < opts.since.offset]
            else:
                items = [p for p in items if p.offset > opts.since.offset]
        if opts.reverse:
            items.reverse()
        if opts.limit > 0:
            items = items[: opts.limit]
        return HistoryResult(items, position)

    async def remove_history(self, ref: ChannelRef) -> None:
        stream = self._streams.get(ref)
        if stream is not None:
            stream.items.clear()

    async def set_subscriber_count(self, ref: ChannelRef, count: int) -> tuple[int, int]:
        before = self._counts.get(ref, 0)
        if count:
            self._counts[ref] = count
        else:
            self._counts.pop(ref, None)
        return before, count

    async def subscriber_count(self, ref: ChannelRef) -> int:
        return self._counts.get(ref, 0)
