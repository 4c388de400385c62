"""In-process broker for a single node: delivery is a direct call, history is a bounded deque.

Publishing and appending happen in one synchronous step on the event loop, so they are atomic.

History memory is bounded three ways, because every tenant shares this process:
- per channel by `history_size`;
- in time: a sweep frees publications once `history_ttl` has passed, and a channel's position
  (epoch, offset) `META_TTL` later. The sweep walks channels in expiry order, so it costs what
  expired, never a scan of every channel;
- in bytes: per app (`max_bytes_per_app`) and per node (`max_bytes`). Over budget, the least
  recently published channels of the app over its budget go first (of the biggest app when the
  node is over); the channel being published to loses only its oldest publications. A
  channel that went gets a new epoch, so a client coming back is told recovered=false, never
  handed a silent gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from xshathra.brokers import BrokerEventHandler, ClusterBroker
from xshathra.model import (
    AppId,
    BrokerPublication,
    ChannelRef,
    ClientInfoData,
    HistoryOptions,
    HistoryResult,
    PublishOptions,
    StreamPosition,
    SubscriberCounts,
    fit,
)

IDEMPOTENCY_TTL = 300.0

META_TTL = 30 * 86400.0  # as the Redis broker: the position outlives the publications

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_BYTES_PER_APP = 64 * 1024 * 1024
SWEEP_INTERVAL = 1.0  # seconds between expiry sweeps

# Measured with tracemalloc (CPython 3.12): a kept publication costs ~150 bytes besides its
# data, ~200 more with a tags dict; a channel's stream (ChannelRef, _Stream, an empty deque,
# its entries in the broker's dicts) ~1 KiB. Counting them keeps a flood of tiny publications
# or of empty channels inside the budget too.
PUB_OVERHEAD = 160
TAGS_OVERHEAD = 200
STREAM_OVERHEAD = 1024

_META = -1  # expiry bucket of streams that keep only their position


@dataclass(slots=True)
class _Stream:
    epoch: str
    offset: int = 0
    # When the publications go (in bucket `ttl`), or, in the _META bucket, the position itself.
    expire_at: float = 0.0
    bucket: int = _META
    size: int = STREAM_OVERHEAD  # bytes counted against the budgets
    items: deque[tuple[BrokerPublication, int]] = field(default_factory=deque)  # (pub, bytes)


def _new_epoch() -> str:
    return secrets.token_hex(4)


def _kept_size(pub: BrokerPublication) -> int:
    size = PUB_OVERHEAD + len(pub.data)
    if pub.tags:
        size += TAGS_OVERHEAD + sum(len(k) + len(v) for k, v in pub.tags.items())
    if pub.info is not None:
        info = pub.info
        size += len(info.user) + len(info.client) + len(info.conn_info) + len(info.chan_info)
    return size


class MemoryBroker(ClusterBroker):
    """Broker for one node. A history stream expires `history_ttl` s after its last publish."""

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_bytes_per_app: int = DEFAULT_MAX_BYTES_PER_APP,
        sweep_interval: float = SWEEP_INTERVAL,
    ) -> None:
        self._handler: BrokerEventHandler | None = None
        self._streams: dict[ChannelRef, _Stream] = {}
        self._idempotency: dict[tuple[ChannelRef, str], tuple[float, StreamPosition]] = {}
        self._subscribed: set[ChannelRef] = set()
        self._counts: dict[ChannelRef, int] = {}
        self._max_bytes = max_bytes
        self._max_bytes_per_app = min(max_bytes_per_app, max_bytes)
        self._sweep_interval = sweep_interval
        self._sweeper: asyncio.Task[None] | None = None
        # Streams by expiry bucket (a ttl in seconds, or _META), each in expiry order: within
        # a bucket, expire_at = last touch + the bucket's period, so moving a stream to the end
        # when touched keeps the order, and a sweep stops at the first live one.
        self._expiry: dict[int, OrderedDict[ChannelRef, None]] = {}
        # Per app, its streams from least to most recently published (eviction order).
        self._lru: dict[AppId, OrderedDict[ChannelRef, None]] = {}
        self._app_bytes: dict[AppId, int] = {}
        self._bytes = 0

    # --- observability -------------------------------------------------------------------------

    @property
    def history_bytes(self) -> int:
        """Bytes of history (publications and positions) held for every app."""
        return self._bytes

    def app_history_bytes(self, app_id: str) -> int:
        return self._app_bytes.get(AppId(app_id), 0)

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, handler: BrokerEventHandler) -> None:
        self._handler = handler
        if self._sweeper is None and self._sweep_interval > 0:
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep_loop(), name="xshathra-history-sweep"
            )

    async def close(self) -> None:
        self._handler = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def ping(self) -> None:
        return None

    async def subscribe(self, ref: ChannelRef) -> None:
        self._subscribed.add(ref)

    async def unsubscribe(self, ref: ChannelRef) -> None:
        self._subscribed.discard(ref)

    # --- accounting ----------------------------------------------------------------------------

    def _charge(self, ref: ChannelRef, stream: _Stream, delta: int) -> None:
        stream.size += delta
        self._bytes += delta
        app = ref.app_id
        self._app_bytes[app] = self._app_bytes.get(app, 0) + delta

    def _place(self, ref: ChannelRef, stream: _Stream, bucket: int, expire_at: float) -> None:
        """Move the stream to the end of its expiry bucket (it is now the latest to expire)."""
        if stream.bucket != bucket:
            old = self._expiry.get(stream.bucket)
            if old is not None:
                old.pop(ref, None)
                if not old:
                    del self._expiry[stream.bucket]
            stream.bucket = bucket
        self._expiry.setdefault(bucket, OrderedDict())[ref] = None
        self._expiry[bucket].move_to_end(ref)
        stream.expire_at = expire_at

    def _drop_items(self, ref: ChannelRef, stream: _Stream, now: float) -> None:
        """The publications went (expired): keep the position, for META_TTL from now."""
        stream.items.clear()
        self._charge(ref, stream, STREAM_OVERHEAD - stream.size)
        self._place(ref, stream, _META, now + META_TTL)

    def _free(self, ref: ChannelRef) -> None:
        """Forget the stream entirely: the next use starts a new epoch."""
        stream = self._streams.pop(ref)
        self._charge(ref, stream, -stream.size)
        bucket = self._expiry.get(stream.bucket)
        if bucket is not None:
            bucket.pop(ref, None)
            if not bucket:
                del self._expiry[stream.bucket]
        app = ref.app_id
        lru = self._lru.get(app)
        if lru is not None:
            lru.pop(ref, None)
            if not lru:
                del self._lru[app]
        if not self._app_bytes.get(app):
            self._app_bytes.pop(app, None)

    def _evict_one(self, app: AppId, keep: ChannelRef) -> bool:
        """Free the app's least recently published stream; from `keep` (the one being written)
        only its oldest publication. False if nothing is left to free."""
        lru = self._lru.get(app)
        if not lru:
            return False
        oldest = next(iter(lru))
        if oldest != keep:
            self._free(oldest)
            return True
        stream = self._streams[keep]
        if len(stream.items) <= 1:
            return False  # the newest publication stays: it was just acknowledged
        _, size = stream.items.popleft()
        self._charge(keep, stream, -size)
        return True

    def _enforce_budgets(self, ref: ChannelRef) -> None:
        app = ref.app_id
        while self._app_bytes.get(app, 0) > self._max_bytes_per_app:
            if not self._evict_one(app, ref):
                break
        while self._bytes > self._max_bytes:
            # The biggest app pays first (a tenant's flood evicts its own history).
            biggest = max(self._app_bytes, key=self._app_bytes.__getitem__)
            if not self._evict_one(biggest, ref):
                break

    # --- expiry --------------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            self.sweep()

    def sweep(self) -> int:
        """Free what expired, walking each bucket from its front; returns how many streams were
        touched. Costs O(expired + buckets)."""
        now = time.monotonic()
        touched = 0
        for bucket_id in list(self._expiry):
            bucket = self._expiry.get(bucket_id)
            while bucket:
                ref = next(iter(bucket))
                stream = self._streams[ref]
                if stream.expire_at > now:
                    break
                touched += 1
                if bucket_id == _META:
                    self._free(ref)
                else:
                    self._drop_items(ref, stream, now)
                bucket = self._expiry.get(bucket_id)
        return touched

    def _stream(self, ref: ChannelRef, now: float) -> _Stream:
        """The channel's stream, what expired of it dropped; created when absent."""
        stream = self._streams.get(ref)
        if stream is not None and stream.expire_at <= now:
            if stream.bucket == _META:
                self._free(ref)
                stream = None
            else:
                self._drop_items(ref, stream, now)
        if stream is None:
            stream = self._streams[ref] = _Stream(epoch=_new_epoch(), size=0)
            self._charge(ref, stream, STREAM_OVERHEAD)
            self._lru.setdefault(ref.app_id, OrderedDict())[ref] = None
            self._place(ref, stream, _META, now + META_TTL)
            self._enforce_budgets(ref)
        return stream

    # --- Broker --------------------------------------------------------------------------------

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
            offset, epoch = stream.offset, stream.epoch
        pub = BrokerPublication(
            data=data,
            offset=offset,
            epoch=epoch,
            tags=opts.tags,
            info=opts.info,
            time=int(time.time() * 1000),
            delta=opts.delta,
        )
        if stream is not None:
            if opts.history_ttl > 0:
                self._place(ref, stream, opts.history_ttl, now + opts.history_ttl)
            else:  # kept without expiry: only the position's long ttl, and the budgets
                self._place(ref, stream, _META, now + META_TTL)
            self._lru[ref.app_id].move_to_end(ref)
            items = stream.items
            size = _kept_size(pub)
            items.append((pub, size))
            added = size
            while len(items) > opts.history_size:
                added -= items.popleft()[1]
            self._charge(ref, stream, added)
            self._enforce_budgets(ref)
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
        items: list[BrokerPublication] = [p for p, _ in stream.items]
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
        items, truncated = fit(items, opts.max_bytes)
        return HistoryResult(items, position, truncated)

    async def remove_history(self, ref: ChannelRef) -> None:
        stream = self._streams.get(ref)
        if stream is not None:
            stream.items.clear()
            self._charge(ref, stream, STREAM_OVERHEAD - stream.size)

    async def set_subscriber_count(self, ref: ChannelRef, count: int) -> SubscriberCounts:
        before = self._counts.get(ref, 0)
        if count:
            self._counts[ref] = count
        else:
            self._counts.pop(ref, None)
        return SubscriberCounts(before, count)

    async def subscriber_count(self, ref: ChannelRef) -> int:
        return self._counts.get(ref, 0)
