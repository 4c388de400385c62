"""NATS broker: publications, join/leave and control messages cross nodes over core NATS
subjects; history lives in a JetStream stream that republishes every stored message to the
channel's subject, so a publication is delivered if and only if it was appended, in the
order of the channel's offsets.

Offsets are consecutive per channel because each append names the sequence it expects to
follow (`Nats-Expected-Last-Subject-Sequence`): two nodes publishing at once cannot both
take the same offset, the loser re-reads the channel's top and tries again. Within a node,
a channel has one append in flight at a time, and the publications that arrive meanwhile go
together as one batch message (consecutive offsets) in the next append: one JetStream round
trip, one stored message and one message per receiving node for all of them. Idempotency keys
are JetStream message ids, deduplicated by the server within IDEMPOTENCY_TTL.

Per channel subject, the newest message is also the channel's position (offset, epoch, and
the history size and expiry in force). A channel that has none yet gets a marker message, so
the epoch a client saw before the first publication stays valid; `remove_history` writes a
marker too, keeping offset and epoch as centrifuge does.

Subscriber counts across nodes are a per-channel message updated compare-and-set, and nodes
announce themselves in a stream whose entries expire: counts of a node that stopped
announcing are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js import api
from nats.js.errors import APIError, NotFoundError

from xshathra.brokers import BrokerEventHandler, ClusterBroker
from xshathra.brokers.events import ChannelEvent, Joined, Left, deliver
from xshathra.links.nats import (
    NatsLink,
    NatsUnavailable,
    append_after,
    channel_token,
    stream_name,
)
from xshathra.links.nats import text_token as _text_token
from xshathra.links.packing import Info, decode_info, encode_info, pack_info, unpack_info
from xshathra.links.waiters import fail_all, resolve_all
from xshathra.model import (
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

log = logging.getLogger("xshathra.nats")

META_TTL = 30 * 86400  # as the Redis broker: a channel's position outlives its publications
IDEMPOTENCY_TTL = 300
NODE_TTL = 30
CONFIRM_TIMEOUT = 5
MAX_ATTEMPTS = 50
MSG_ID = "Nats-Msg-Id"
TOPS_CACHED = 10_000


class _Envelope(msgspec.Struct, array_like=True, omit_defaults=True):
    """A publication or position marker on the wire and in the stream (msgpack)."""

    data: bytes = b""
    offset: int = 0
    epoch: str = ""
    tags: dict[str, str] | None = None
    info: Info | None = None
    time: int = 0
    size: int = 0  # history size in force when written (0: nothing of it is history)
    expires: int = 0  # unix ms when the channel's history expires (0: never)
    delta: bool = False  # last: envelopes of older nodes decode unchanged


_encode = msgspec.msgpack.Encoder().encode
_envelope = msgspec.msgpack.Decoder(_Envelope)
_counts = msgspec.msgpack.Decoder(dict[str, int])

_batch = msgspec.msgpack.Decoder(list[_Envelope])

PUBLICATION, BATCH, MARKER, JOIN, LEAVE = b"p", b"b", b"m", b"j", b"l"
# A batch holds at most this many publications and about this many bytes of data (NATS's
# default max_payload is 1 MiB, and one publication may be 64 KiB).
BATCH_MAX = 64
BATCH_MAX_BYTES = 256 * 1024


def _publication(env: _Envelope) -> BrokerPublication:
    return BrokerPublication(
        data=env.data,
        offset=env.offset,
        epoch=env.epoch,
        tags=env.tags,
        info=unpack_info(env.info),
        time=env.time,
        delta=env.delta,
    )


def parse_channel_message(data: bytes) -> ChannelEvent | None:
    """One message of a channel subject as an event; None for a kind this node does not act
    on (a position marker, or a kind a newer node sends). Raises ValueError (msgspec's errors
    are ValueErrors) when the message is malformed."""
    kind = data[:1]
    if kind == PUBLICATION:
        return _publication(_envelope.decode(data[1:]))
    if kind == JOIN:
        return Joined(unpack_info(decode_info(data[1:])))
    if kind == LEAVE:
        return Left(unpack_info(decode_info(data[1:])))
    return None


def parse_channel_events(data: bytes) -> list[ChannelEvent]:
    """One message of a channel subject as its events: a batch's publications in offset
    order, or what `parse_channel_message` finds (none for a kind this node does not act on).
    Raises ValueError when the message is malformed."""
    if data[:1] == BATCH:
        return [_publication(env) for env in _batch.decode(data[1:])]
    event = parse_channel_message(data)
    return [] if event is None else [event]


def _newest(data: bytes) -> _Envelope:
    """The newest envelope of a history message: a batch's last, or the message's own."""
    return _batch.decode(data[1:])[-1] if data[:1] == BATCH else _envelope.decode(data[1:])


async def _back_off(attempt: int) -> None:
    """After losing a compare-and-set: retry at once a few times, then spread the nodes out."""
    if attempt > 2:
        await asyncio.sleep(random.random() * 0.002 * attempt)


@dataclass(frozen=True, slots=True)
class _Queued:
    """A publication waiting for its channel's turn to be appended on this node."""

    data: bytes
    opts: PublishOptions
    done: asyncio.Future[StreamPosition]


def _take(queue: deque[_Queued]) -> list[_Queued]:
    """The next append's publications: the oldest one and those after it that fit one batch.
    An idempotent publication goes alone (its key is the whole message's JetStream id), and a
    batch keeps one history size and ttl (the envelopes of its last one are the channel's)."""
    first = queue.popleft()
    taken = [first]
    if first.opts.idempotency_key:
        return taken
    size = len(first.data)
    keep = (first.opts.history_size, first.opts.history_ttl)
    while queue and len(taken) < BATCH_MAX:
        nxt = queue[0]
        if (
            nxt.opts.idempotency_key
            or (nxt.opts.history_size, nxt.opts.history_ttl) != keep
            or size + len(nxt.data) > BATCH_MAX_BYTES
        ):
            break
        size += len(nxt.data)
        taken.append(queue.popleft())
    return taken


@dataclass(frozen=True, slots=True)
class _Top:
    """The newest message of a channel's history subject."""

    seq: int  # its stream sequence: the next append must expect it
    env: _Envelope


class NatsBroker(ClusterBroker):
    """Broker shared by every node that uses the same NATS (with JetStream) and `prefix`."""

    def __init__(self, link: NatsLink, *, prefix: str = "xs", node_id: str) -> None:
        if not node_id:
            raise ValueError("node_id must not be empty")
        self._link = link
        self._prefix = prefix
        self._node = _text_token(node_id)
        self._history_stream = stream_name(prefix, "history")
        self._once_stream = stream_name(prefix, "once")
        self._counts_stream = stream_name(prefix, "subscribers")
        self._nodes_stream = stream_name(prefix, "nodes")
        self._control = f"{prefix}.control"
        self._handler: BrokerEventHandler | None = None
        self._subs: dict[ChannelRef, Subscription] = {}
        self._control_sub: Subscription | None = None
        self._tops: dict[ChannelRef, _Top] = {}  # what this node last appended, per channel
        # Per channel with an append under way: the publications waiting for the next one.
        self._appends: dict[ChannelRef, deque[_Queued]] = {}
        self._alive: set[str] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._started = False

    # --- naming: the only place a ChannelRef becomes subjects ---------------------------------

    def _channel(self, ref: ChannelRef) -> str:
        return f"{self._prefix}.ch.{channel_token(ref)}"

    def _history(self, ref: ChannelRef) -> str:
        return f"{self._prefix}.h.{channel_token(ref)}"

    def _count_subject(self, ref: ChannelRef) -> str:
        return f"{self._prefix}.sc.{channel_token(ref)}"

    def _node_subject(self, node: str) -> str:
        return f"{self._prefix}.node.{node}"

    def _streams(self) -> list[api.StreamConfig]:
        p = self._prefix
        return [
            api.StreamConfig(
                name=self._history_stream,
                subjects=[f"{p}.h.>"],
                storage=api.StorageType.FILE,
                max_age=META_TTL,
                duplicate_window=IDEMPOTENCY_TTL,
                allow_direct=True,
                # Stored means delivered: the stream itself republishes to the channel.
                republish=api.RePublish(src=f"{p}.h.>", dest=f"{p}.ch.>"),
            ),
            api.StreamConfig(
                # Idempotent publications without history: kept only to deduplicate.
                name=self._once_stream,
                subjects=[f"{p}.o.>"],
                storage=api.StorageType.MEMORY,
                max_age=IDEMPOTENCY_TTL,
                max_msgs_per_subject=1,
                duplicate_window=IDEMPOTENCY_TTL,
                republish=api.RePublish(src=f"{p}.o.>", dest=f"{p}.ch.>"),
            ),
            api.StreamConfig(
                name=self._counts_stream,
                subjects=[f"{p}.sc.>"],
                storage=api.StorageType.FILE,
                max_age=META_TTL,
                max_msgs_per_subject=1,
                allow_direct=True,
            ),
            api.StreamConfig(
                name=self._nodes_stream,
                subjects=[f"{p}.node.>"],
                storage=api.StorageType.MEMORY,
                max_age=NODE_TTL,
                max_msgs_per_subject=1,
            ),
        ]

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._started and self._link.connected

    async def start(self, handler: BrokerEventHandler) -> None:
        self._handler = handler
        nc, _ = await self._link.acquire()
        self._started = True
        try:
            for config in self._streams():
                await self._link.ensure_stream(config)
            self._link.reconnect_hooks.append(self._on_reconnect)
            self._control_sub = await nc.subscribe(self._control, cb=self._on_control)
            await self._announce()
            await self._refresh_alive()
            await nc.flush(timeout=CONFIRM_TIMEOUT)
        except BaseException:
            await self.close()
            raise
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._beat(), name="xshathra-nats-heartbeat"
        )

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        tasks = [t for t in (self._heartbeat, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._heartbeat = None
        for queue in self._appends.values():
            for queued in queue:
                if not queued.done.done():
                    queued.done.set_exception(NatsUnavailable("the broker was closed"))
        self._appends.clear()
        with contextlib.suppress(ValueError):
            self._link.reconnect_hooks.remove(self._on_reconnect)
        if self._link.connected:
            with contextlib.suppress(NatsError, APIError, TimeoutError):
                _, js = await self._link.client()
                await js.purge_stream(self._nodes_stream, subject=self._node_subject(self._node))
        self._subs.clear()
        self._control_sub = None
        self._handler = None
        await self._link.release()

    async def ping(self) -> None:
        if not self.healthy:
            raise NatsUnavailable("the NATS connection is down")
        nc, _ = await self._link.client()
        try:
            await nc.flush(timeout=2)
        except (TimeoutError, NatsError):
            raise NatsUnavailable("NATS does not answer") from None

    def _on_reconnect(self) -> None:
        self._tops.clear()  # NATS may have lost streams: re-read every channel's top
        self._spawn(self._announce())
        if self._handler is not None:
            self._handler.on_reconnect()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._link.quietly(coro))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(NODE_TTL / 3)
            with contextlib.suppress(NatsError, APIError, TimeoutError, NatsUnavailable):
                await self._announce()
                await self._refresh_alive()

    async def _announce(self) -> None:
        _, js = await self._link.client()
        await js.publish(self._node_subject(self._node), b"1")

    async def _refresh_alive(self) -> None:
        msgs = await self._link.snapshot(
            self._nodes_stream, self._node_subject("*"), last_per_subject=True
        )
        self._alive = {m.subject.rsplit(".", 1)[-1] for m in msgs} | {self._node}

    # --- receiving ----------------------------------------------------------------------------

    async def _on_control(self, msg: Msg) -> None:
        if self._handler is not None:
            try:
                self._handler.on_control(msg.data)
            except Exception:
                log.exception("broker event handler failed")

    def _receiver(self, ref: ChannelRef) -> Callable[[Msg], Coroutine[Any, Any, None]]:
        async def receive(msg: Msg) -> None:
            handler = self._handler
            if handler is None or self._subs.get(ref) is None:
                return
            try:
                events = parse_channel_events(msg.data)
            except ValueError:
                log.warning("ignoring a malformed message on a channel subject")
                return
            for event in events:
                try:
                    deliver(handler, ref, event)
                except Exception:
                    log.exception("broker event handler failed")

        return receive

    async def subscribe(self, ref: ChannelRef) -> None:
        """Return once NATS has the subscription: what is published after this arrives."""
        nc, _ = await self._link.client()
        if ref not in self._subs:
            self._subs[ref] = await nc.subscribe(self._channel(ref), cb=self._receiver(ref))
        try:
            await nc.flush(timeout=CONFIRM_TIMEOUT)
        except (TimeoutError, NatsError):
            raise NatsUnavailable("NATS did not confirm the subscription") from None

    async def unsubscribe(self, ref: ChannelRef) -> None:
        sub = self._subs.pop(ref, None)
        if sub is not None:
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()

    # --- publishing ---------------------------------------------------------------------------

    async def _connected(self) -> Any:
        nc, js = await self._link.client()
        if not nc.is_connected:
            # nats-py would buffer a core publish while reconnecting; callers must hear it.
            raise NatsUnavailable("the NATS connection is down")
        return nc, js

    async def publish(self, ref: ChannelRef, data: bytes, opts: PublishOptions) -> StreamPosition:
        if opts.history_size > 0:
            return await self._append(ref, data, opts)
        nc, js = await self._connected()
        payload = PUBLICATION + _encode(
            _Envelope(
                data=data,
                tags=opts.tags,
                info=pack_info(opts.info),
                time=int(time.time() * 1000),
                delta=opts.delta,
            )
        )
        if opts.idempotency_key:
            token = channel_token(ref)
            await js.publish(
                f"{self._prefix}.o.{token}",
                payload,
                headers={MSG_ID: f"{token}:{opts.idempotency_key}"},
            )
        else:
            await nc.publish(self._channel(ref), payload)
        return StreamPosition(0, "")

    async def _append(self, ref: ChannelRef, data: bytes, opts: PublishOptions) -> StreamPosition:
        """Queue the publication for the channel's next append on this node. Appends of one
        node racing each other would all expect the same top and all but one lose the
        compare-and-set (each loser paying a failed request, a re-read and another try: with
        8 concurrent publishers on a channel, dozens of requests per publication, and past 50
        attempts a failed publish). One append at a time per channel instead, carrying
        everything that queued up meanwhile."""
        await self._connected()  # a publish while NATS is away fails now, not once queued
        done: asyncio.Future[StreamPosition] = asyncio.get_running_loop().create_future()
        queue = self._appends.get(ref)
        if queue is None:
            queue = self._appends[ref] = deque()
            # A task, not this caller: it runs from the next loop iteration, so publications
            # made in this one join the first append, and no caller waits for others' turns.
            task = asyncio.get_running_loop().create_task(self._drain(ref, queue))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        queue.append(_Queued(data, opts, done))
        return await done

    async def _drain(self, ref: ChannelRef, queue: deque[_Queued]) -> None:
        """Append the channel's queued publications, a batch at a time, until none is left."""
        while queue:
            batch = _take(queue)
            try:
                positions = await self._append_batch(ref, batch)
            except BaseException as exc:
                fail_all((q.done for q in batch), exc, lambda: NatsUnavailable("closed"))
                if not isinstance(exc, Exception):
                    raise  # cancelled by close(), which fails the ones still queued
                continue
            resolve_all((q.done for q in batch), positions)
        # No await since the queue was seen empty: a publication from now on starts a new one.
        del self._appends[ref]

    async def _append_batch(self, ref: ChannelRef, batch: list[_Queued]) -> list[StreamPosition]:
        _, js = await self._connected()
        subject = self._history(ref)
        opts = batch[-1].opts  # one history size and ttl for all of them (see _take)
        now = int(time.time() * 1000)
        for attempt in range(MAX_ATTEMPTS):
            top = self._tops.get(ref) or await self._read_top(ref)
            first = top.env.offset + 1 if top else 1
            epoch = top.env.epoch if top else secrets.token_hex(4)
            envs = [
                _Envelope(
                    data=queued.data,
                    offset=first + i,
                    epoch=epoch,
                    tags=queued.opts.tags,
                    info=pack_info(queued.opts.info),
                    time=now,
                    size=opts.history_size,
                    expires=now + opts.history_ttl * 1000 if opts.history_ttl > 0 else 0,
                    delta=queued.opts.delta,
                )
                for i, queued in enumerate(batch)
            ]
            payload = PUBLICATION + _encode(envs[0]) if len(envs) == 1 else BATCH + _encode(envs)
            headers = {}
            if opts.idempotency_key:  # then alone in its batch
                headers[MSG_ID] = f"{channel_token(ref)}:{opts.idempotency_key}"
            after = top.seq if top else 0
            ack = await append_after(js, subject, payload, after, headers)
            if ack is None:
                self._tops.pop(ref, None)  # another node appended first: read its top
                await _back_off(attempt)
                continue
            if ack.duplicate:
                return [await self._first_answer(ref, ack.seq)]
            last = envs[-1]
            self._remember(ref, _Top(ack.seq, last))
            if last.offset // opts.history_size != (first - 1) // opts.history_size:
                # Past a multiple of the size: trim in the background (reads never show more
                # than `size` anyway, and `size` messages hold at least `size` publications).
                self._spawn(
                    js.purge_stream(self._history_stream, subject=subject, keep=opts.history_size)
                )
            return [StreamPosition(env.offset, env.epoch) for env in envs]
        raise NatsUnavailable("too many concurrent appends to one channel")

    def _remember(self, ref: ChannelRef, top: _Top) -> None:
        if len(self._tops) >= TOPS_CACHED and ref not in self._tops:
            self._tops.clear()
        self._tops[ref] = top

    async def _first_answer(self, ref: ChannelRef, seq: int) -> StreamPosition:
        """The position the first publish with this idempotency key answered."""
        _, js = await self._link.client()
        try:
            first = await js.get_msg(self._history_stream, seq=seq, direct=True)
        except NotFoundError:  # trimmed since: the channel's position is the best answer
            top = await self._read_top(ref)
            return StreamPosition(top.env.offset, top.env.epoch) if top else StreamPosition(0, "")
        env = _newest(first.data or b"")
        return StreamPosition(env.offset, env.epoch)

    async def _read_top(self, ref: ChannelRef) -> _Top | None:
        _, js = await self._link.client()
        try:
            msg = await js.get_last_msg(self._history_stream, self._history(ref), direct=True)
        except NotFoundError:
            return None
        assert msg.seq is not None
        return _Top(msg.seq, _newest(msg.data or b""))

    async def _mark(self, ref: ChannelRef, after: _Top | None) -> _Top | None:
        """Append a position marker after `after` (None: the channel has nothing yet): keeps
        the position with nothing of history visible. None if another append came first."""
        _, js = await self._link.client()
        env = (
            _Envelope(offset=after.env.offset, epoch=after.env.epoch)
            if after
            else _Envelope(epoch=secrets.token_hex(4))
        )
        ack = await append_after(
            js, self._history(ref), MARKER + _encode(env), after.seq if after else 0
        )
        return None if ack is None else _Top(ack.seq, env)

    async def publish_join(self, ref: ChannelRef, info: ClientInfoData) -> None:
        nc, _ = await self._connected()
        await nc.publish(self._channel(ref), JOIN + encode_info(pack_info(info)))

    async def publish_leave(self, ref: ChannelRef, info: ClientInfoData) -> None:
        nc, _ = await self._connected()
        await nc.publish(self._channel(ref), LEAVE + encode_info(pack_info(info)))

    async def publish_control(self, data: bytes) -> None:
        nc, _ = await self._connected()
        await nc.publish(self._control, data)

    # --- history ------------------------------------------------------------------------------

    async def history(self, ref: ChannelRef, opts: HistoryOptions) -> HistoryResult:
        top = await self._read_top(ref)
        while top is None:
            # An unused channel: fix its epoch now so a position taken before the first
            # publication stays comparable; if another node did so first, read theirs.
            top = await self._mark(ref, None) or await self._read_top(ref)
        head = top.env
        position = StreamPosition(head.offset, head.epoch)
        since = opts.since
        empty = HistoryResult([], position)
        if opts.limit == 0 or head.size == 0 or (since is not None and since.epoch != head.epoch):
            return empty
        if head.expires and head.expires <= time.time() * 1000:
            return empty
        low, high = max(1, head.offset - head.size + 1), head.offset
        if since is not None:
            if opts.reverse:
                high = min(high, since.offset - 1)
            else:
                low = max(low, since.offset + 1)
        if low > high:
            return empty
        msgs = await self._link.snapshot(self._history_stream, self._history(ref))
        pubs: list[BrokerPublication] = []
        for msg in msgs:
            kind = msg.data[:1]
            if kind == PUBLICATION:
                envs = [_envelope.decode(msg.data[1:])]
            elif kind == BATCH:
                envs = _batch.decode(msg.data[1:])
            else:
                continue
            pubs.extend(
                _publication(env)
                for env in envs
                if env.epoch == head.epoch and low <= env.offset <= high
            )
        pubs.sort(key=lambda p: p.offset, reverse=opts.reverse)
        if opts.limit > 0:
            pubs = pubs[: opts.limit]
        pubs, truncated = fit(pubs, opts.max_bytes)
        return HistoryResult(pubs, position, truncated)

    async def remove_history(self, ref: ChannelRef) -> None:
        _, js = await self._link.client()
        for _ in range(MAX_ATTEMPTS):
            top = await self._read_top(ref)
            if top is None or top.env.size == 0:
                return  # nothing of history is visible already
            marker = await self._mark(ref, top)
            if marker is not None:
                self._tops.pop(ref, None)
                # Only the marker is needed now (or a publication that came right after it).
                await js.purge_stream(self._history_stream, subject=self._history(ref), keep=1)
                return
        raise NatsUnavailable("too many concurrent appends to one channel")

    # --- subscriber counts --------------------------------------------------------------------

    async def _counts(self, ref: ChannelRef) -> tuple[int, dict[str, int]]:
        _, js = await self._link.client()
        try:
            msg = await js.get_last_msg(self._counts_stream, self._count_subject(ref), direct=True)
        except NotFoundError:
            return 0, {}
        assert msg.seq is not None
        return msg.seq, _counts.decode(msg.data or b"\x80")

    async def _live_total(self, counts: dict[str, int]) -> int:
        if not counts.keys() <= self._alive:
            await self._refresh_alive()  # a node that started since we last looked
        return sum(n for node, n in counts.items() if node in self._alive)

    async def set_subscriber_count(self, ref: ChannelRef, count: int) -> SubscriberCounts:
        _, js = await self._connected()
        for attempt in range(MAX_ATTEMPTS):
            seq, counts = await self._counts(ref)
            before = await self._live_total(counts)
            # Dead nodes' entries are dropped on the way, so the message stays small.
            after_counts = {n: c for n, c in counts.items() if n in self._alive}
            if count:
                after_counts[self._node] = count
            else:
                after_counts.pop(self._node, None)
            if await append_after(js, self._count_subject(ref), _encode(after_counts), seq):
                return SubscriberCounts(before, sum(after_counts.values()))
            await _back_off(attempt)
        raise NatsUnavailable("too many concurrent subscriber count updates")

    async def subscriber_count(self, ref: ChannelRef) -> int:
        _, counts = await self._counts(ref)
        return await self._live_total(counts)
