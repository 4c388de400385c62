"""Redis broker: publications, join/leave and control messages cross nodes over PUB/SUB, and
history lives in Redis streams written by the same Lua script that publishes, so publish and
append are one atomic step and a client can recover on whichever node it reconnects to.

Only this module turns a `ChannelRef` into Redis key and topic names. It must never let a lost
subscription pass unnoticed: the reader reconnects with backoff, resubscribes by itself and
then tells the handler (`on_reconnect`), because messages sent meanwhile are gone.

Publications of one channel made in one loop iteration (concurrent API calls read together)
go to Redis together: one script call appends them all and sends one PUB/SUB message that
carries them, so a burst costs one round trip, and each receiving node one message, which it
hands on as that many publications in one loop iteration (merged into one write per client).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import secrets
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

import msgspec
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from xshathra.brokers import BrokerEventHandler, ClusterBroker
from xshathra.brokers.events import ChannelEvent, Joined, Left, deliver
from xshathra.links.keys import channel_ident
from xshathra.links.packing import Info, decode_info, encode_info, pack_info, unpack_info
from xshathra.links.redis import redis_client
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

log = logging.getLogger("xshathra.redis")

# Centrifuge's default HistoryMetaTTL: the epoch and top offset outlive the stream by far, so
# a client returning after its channel's history expired still holds a comparable position;
# the meta of channels nobody uses any more goes eventually instead of leaking forever.
META_TTL = 30 * 86400
IDEMPOTENCY_TTL = 300  # seconds a publish's idempotency key is remembered, as in centrifuge
NODE_TTL = 30  # seconds a node's subscriber counts are trusted without a heartbeat
CONFIRM_TIMEOUT = 5.0  # longest wait for Redis to confirm a SUBSCRIBE
IDLE_PING = 5.0  # a silent subscription is PINGed after this long; no answer in as long: lost
RECONNECT_MIN_DELAY = 0.05
RECONNECT_MAX_DELAY = 5.0


class _Envelope(msgspec.Struct, array_like=True, omit_defaults=True):
    """A publication on the wire and in the stream (msgpack); `data` travels untouched. Offset
    and epoch are not inside: the script prefixes them to the PUB/SUB message, and in the
    stream the entry id is the offset and the meta hash holds the epoch."""

    data: bytes
    tags: dict[str, str] | None = None
    info: Info | None = None
    time: int = 0
    delta: bool = False  # last: envelopes of older nodes decode unchanged


_encode = msgspec.msgpack.Encoder().encode
_envelope = msgspec.msgpack.Decoder(_Envelope)
_items = msgspec.msgpack.Decoder(list[bytes])


# A channel topic carries `p<offset>:<epoch>:<envelope>` (written by publish.lua),
# `b<first offset>:<epoch>:<msgpack array of envelopes>` (publish_batch.lua), `j<info>` and
# `l<info>` (written by publish_join/publish_leave).
PUBLICATION, BATCH, JOIN, LEAVE = b"p", b"b", b"j", b"l"
# A batch holds at most this many publications and about this many bytes of them.
BATCH_MAX = 64
BATCH_MAX_BYTES = 256 * 1024


def _publication(env: _Envelope, offset: int, epoch: str) -> BrokerPublication:
    return BrokerPublication(
        data=env.data,
        offset=offset,
        epoch=epoch,
        tags=env.tags,
        info=unpack_info(env.info),
        time=env.time,
        delta=env.delta,
    )


def parse_channel_message(data: bytes) -> ChannelEvent | None:
    """One message of a channel topic as an event; None for a kind this node does not know
    (a newer node may send more). Raises ValueError (msgspec's errors are ValueErrors) when
    the message is malformed."""
    kind = data[:1]
    if kind == PUBLICATION:
        offset, epoch, payload = data[1:].split(b":", 2)
        return _publication(_envelope.decode(payload), int(offset), epoch.decode())
    if kind == JOIN:
        return Joined(unpack_info(decode_info(data[1:])))
    if kind == LEAVE:
        return Left(unpack_info(decode_info(data[1:])))
    return None


def parse_channel_events(data: bytes) -> list[ChannelEvent]:
    """One message of a channel topic as its events: a batch's publications in offset order
    (offset 0 for all without history), or what `parse_channel_message` finds. Raises
    ValueError when the message is malformed."""
    if data[:1] == BATCH:
        offset, raw_epoch, payload = data[1:].split(b":", 2)
        first, epoch = int(offset), raw_epoch.decode()
        return [
            _publication(_envelope.decode(item), first + i if first else 0, epoch)
            for i, item in enumerate(_items.decode(payload))
        ]
    event = parse_channel_message(data)
    return [] if event is None else [event]


@dataclass(frozen=True, slots=True)
class _Queued:
    """A publication waiting for the end of its loop iteration to go with the others."""

    payload: bytes  # the encoded envelope
    opts: PublishOptions
    done: asyncio.Future[StreamPosition]


def _groups(queued: list[_Queued]) -> list[list[_Queued]]:
    """Consecutive publications that can go in one script call: one history size and ttl,
    at most BATCH_MAX of them and about BATCH_MAX_BYTES."""
    groups: list[list[_Queued]] = []
    size = 0
    for item in queued:
        last = groups[-1] if groups else None
        if (
            last is None
            or len(last) >= BATCH_MAX
            or size + len(item.payload) > BATCH_MAX_BYTES
            or (last[0].opts.history_size, last[0].opts.history_ttl)
            != (item.opts.history_size, item.opts.history_ttl)
        ):
            groups.append([item])
            size = len(item.payload)
        else:
            last.append(item)
            size += len(item.payload)
    return groups


def _script(name: str) -> str:
    return resources.files("xshathra.brokers.lua").joinpath(name).read_text(encoding="utf-8")


def _resolve(waiters: Iterable[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():  # a subscribe() that timed out has cancelled its own
            waiter.set_result(None)


class RedisBroker(ClusterBroker):
    """Broker shared by every node that uses the same Redis and `prefix`.

    One PUB/SUB connection per node carries every channel this node subscribed plus the
    node-wide control topic; a reader task dispatches what arrives to the handler.
    """

    def __init__(self, url: str, *, prefix: str = "xs", node_id: str) -> None:
        if not node_id:
            raise ValueError("node_id must not be empty")
        self._prefix = prefix
        self._node_id = node_id
        self._redis: Redis = redis_client(url)
        # The subscription is one bare connection, not redis-py's PubSub: PubSub reconnects
        # and resubscribes silently on an error (even with retries off), and messages
        # published meanwhile would be lost unnoticed. Named, so operators (and tests) can
        # tell it apart in CLIENT LIST.
        self._sub_pool = ConnectionPool.from_url(
            url,
            retry=Retry(NoBackoff(), 0),
            client_name=re.sub(r"[^A-Za-z0-9_.:-]", "_", f"{prefix}.sub.{node_id}"),
        )
        self._publish = self._redis.register_script(_script("publish.lua"))
        self._publish_batch = self._redis.register_script(_script("publish_batch.lua"))
        # Per channel: the publications of this loop iteration, sent by one task after it.
        self._queued: dict[ChannelRef, list[_Queued]] = {}
        self._senders: set[asyncio.Task[None]] = set()
        self._history = self._redis.register_script(_script("history.lua"))
        self._subscribers = self._redis.register_script(_script("subscribers.lua"))
        self._control = f"{prefix}.control".encode()
        self._handler: BrokerEventHandler | None = None
        # Only the reader task reads from it; other tasks only write SUBSCRIBE/UNSUBSCRIBE.
        self._conn: AbstractConnection | None = None
        # Topics this node wants, whether or not Redis has confirmed them yet: a (re)connect
        # subscribes exactly these.
        self._topics: dict[bytes, ChannelRef] = {}
        # Per topic, one entry per SUBSCRIBE sent on the current connection, oldest first, each
        # holding the subscribe() calls waiting on it. Redis confirms in the order it was asked
        # on one connection, so a confirmation resolves exactly the oldest entry, even across
        # subscribe/unsubscribe/subscribe of one topic.
        self._pending: dict[bytes, deque[list[asyncio.Future[None]]]] = {}
        # Serialises SUBSCRIBE/UNSUBSCRIBE with (re)connecting, so no topic added while a
        # connection is being opened can miss both that connection's snapshot and its own send.
        self._sub_lock = asyncio.Lock()
        self._ready = asyncio.Event()  # set while the subscription is live and confirmed
        self._lost = False  # the subscription dropped: on_reconnect is owed once it is back
        self._delay = RECONNECT_MIN_DELAY
        self._reader: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._closed = False

    # --- naming: the only place a ChannelRef becomes Redis names -------------------------------

    def _topic(self, ref: ChannelRef) -> bytes:
        return f"{self._prefix}.ch.{channel_ident(ref)}".encode()

    def _stream(self, ref: ChannelRef) -> str:
        return f"{self._prefix}.st.{channel_ident(ref)}"

    def _meta(self, ref: ChannelRef) -> str:
        return f"{self._prefix}.mt.{channel_ident(ref)}"

    def _idempotency(self, ref: ChannelRef, key: str) -> str:
        return f"{self._prefix}.id.{len(key)}:{key}:{channel_ident(ref)}"

    def _counts(self, ref: ChannelRef) -> str:
        return f"{self._prefix}.sc.{channel_ident(ref)}"

    def _alive(self, node_id: str) -> str:
        return f"{self._prefix}.node.{node_id}"

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True while the subscription is live: events published now reach this node."""
        return self._ready.is_set()

    async def start(self, handler: BrokerEventHandler) -> None:
        """Subscribe the control topic and return once Redis confirmed it."""
        self._handler = handler
        await self._redis.ping()  # fail fast, with the driver's error, when Redis is down
        await self._redis.set(self._alive(self._node_id), b"1", ex=NODE_TTL)
        conn = await self._connect()
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._run(conn), name="xshathra-redis-reader")
        self._heartbeat = loop.create_task(self._beat(), name="xshathra-redis-heartbeat")
        try:
            await asyncio.wait_for(self._ready.wait(), CONFIRM_TIMEOUT)
        except TimeoutError:
            await self.close()
            raise RedisConnectionError("redis did not confirm the subscription") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._reader, self._heartbeat, *self._senders):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reader = self._heartbeat = None
        for queued in self._queued.values():
            for item in queued:
                if not item.done.done():
                    item.done.set_exception(RedisConnectionError("the broker was closed"))
        self._queued.clear()
        self._ready.clear()
        for queue in self._pending.values():
            for entry in queue:
                for waiter in entry:
                    waiter.cancel()
        self._pending.clear()
        await self._drop_connection()
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self._alive(self._node_id))
        await self._redis.aclose()
        await self._sub_pool.aclose()
        self._handler = None

    async def ping(self) -> None:
        if not self._ready.is_set():
            raise RedisConnectionError("redis subscription is down")
        await self._redis.ping()

    async def _beat(self) -> None:
        """Keep this node's liveness key; subscriber counts of nodes without one are ignored."""
        while True:
            await asyncio.sleep(NODE_TTL / 3)
            with contextlib.suppress(RedisError, OSError):
                await self._redis.set(self._alive(self._node_id), b"1", ex=NODE_TTL)

    # --- the subscription connection --------------------------------------------------------------

    async def _connect(self) -> AbstractConnection:
        """Open a fresh subscription with every wanted topic. The control topic goes last: Redis
        confirms in order, so its confirmation means every channel before it is live."""
        async with self._sub_lock:
            await self._drop_connection_locked()
            # Confirmations owed by the old connection will never come: the one SUBSCRIBE
            # below answers them all, one entry per wanted topic.
            pending, self._pending = self._pending, {}
            for topic in self._topics:
                entries = pending.pop(topic, ())
                self._pending[topic] = deque([[w for entry in entries for w in entry]])
            for entries in pending.values():  # unsubscribed meanwhile: nothing to wait for
                _resolve(w for entry in entries for w in entry)
            # The pool is only a factory here (URL parsing, TLS, auth): it never lends this one.
            conn: AbstractConnection = self._sub_pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                await conn.send_command(
                    "SUBSCRIBE", *self._topics, self._control, check_health=False
                )
            except BaseException:
                await conn.disconnect(nowait=True)
                raise
            self._conn = conn
            return conn

    async def _drop_connection(self) -> None:
        async with self._sub_lock:
            await self._drop_connection_locked()

    async def _drop_connection_locked(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(RedisError, OSError):
                await conn.disconnect(nowait=True)

    @staticmethod
    async def _send(conn: AbstractConnection, *args: str | bytes) -> None:
        """Write a command on the subscription from any task; replies reach the reader.

        A closed connection is left closed (send_command would reconnect it, and a second task
        reading the handshake would collide with the reader): the reader owns reconnecting.
        A failed write is the connection's loss, which the reader sees too and answers by
        resubscribing every wanted topic."""
        if conn.is_connected:
            with contextlib.suppress(RedisError, OSError):
                await conn.send_command(*args, check_health=False)

    async def _run(self, conn: AbstractConnection) -> None:
        """The reader, for the broker's lifetime: listen; on loss, reconnect and resubscribe."""
        while True:
            try:
                await self._listen(conn)
            except (RedisError, OSError) as exc:
                self._ready.clear()
                self._lost = True
                log.warning("redis subscription lost (%s); reconnecting", type(exc).__name__)
                # Dropped at once, so a concurrent subscribe() leaves its topic to the next
                # connection instead of writing to this dead one.
                await self._drop_connection()
            while True:
                # Jitter: nodes that lost Redis together should not all come back in lockstep.
                await asyncio.sleep(self._delay * (0.5 + random.random()))
                self._delay = min(RECONNECT_MAX_DELAY, self._delay * 2)
                try:
                    conn = await self._connect()
                    break
                except (RedisError, OSError):
                    continue
            # Redis may have restarted empty: re-assert this node's liveness at once.
            with contextlib.suppress(RedisError, OSError):
                await self._redis.set(self._alive(self._node_id), b"1", ex=NODE_TTL)

    async def _listen(self, conn: AbstractConnection) -> None:
        awaiting_pong = False
        while True:
            if not conn.is_connected:
                raise RedisConnectionError("the subscription connection was closed")
            reply = await conn.read_response(timeout=IDLE_PING, push_request=True)
            if reply is None:
                # Silence: a half-open TCP connection would stay silent forever, so probe it.
                if awaiting_pong:
                    raise RedisTimeoutError("no answer to PING on the subscription")
                await self._send(conn, "PING")
                awaiting_pong = True
                continue
            awaiting_pong = False
            if not isinstance(reply, list) or len(reply) < 2:
                continue
            kind = reply[0]
            try:
                if kind == b"message" and len(reply) == 3:
                    self._dispatch(reply[1], reply[2])
                elif kind == b"subscribe":
                    self._confirmed(reply[1])
            except Exception:
                # A failing handler must not take the reader down: every channel of this
                # node would go silent. Log it and keep delivering.
                log.exception("broker event handler failed")

    def _confirmed(self, topic: bytes) -> None:
        if topic == self._control and not self._ready.is_set():
            self._ready.set()
            self._delay = RECONNECT_MIN_DELAY
            if self._lost:
                self._lost = False
                log.info("redis subscription restored (%d channels)", len(self._topics))
                if self._handler is not None:
                    # Events may have been missed meanwhile: the engine tells clients to recover.
                    self._handler.on_reconnect()
        queue = self._pending.get(topic)
        if queue:
            _resolve(queue.popleft())
            if not queue:
                del self._pending[topic]

    def _dispatch(self, topic: bytes, data: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        if topic == self._control:
            handler.on_control(data)
            return
        ref = self._topics.get(topic)
        if ref is None:
            return  # unsubscribed meanwhile
        try:
            events = parse_channel_events(data)
        except ValueError:
            log.warning("ignoring a malformed message on a channel topic")
            return
        for event in events:
            try:
                deliver(handler, ref, event)
            except Exception:  # the batch's other publications are still delivered
                log.exception("broker event handler failed")

    # --- Broker -----------------------------------------------------------------------------------

    async def subscribe(self, ref: ChannelRef) -> None:
        """Return once Redis confirmed the subscription: a publication made after this returns
        reaches the handler (the engine reads the stream position right after)."""
        topic = self._topic(ref)
        self._topics[topic] = ref  # first: a reconnect from here on includes the topic
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        async with self._sub_lock:
            if topic not in self._topics:
                return  # unsubscribed before its turn: nothing left to wait for
            self._pending.setdefault(topic, deque()).append([waiter])
            # No connection: the reader is reconnecting, and its SUBSCRIBE will answer us.
            if self._conn is not None:
                await self._send(self._conn, "SUBSCRIBE", topic)
        try:
            await asyncio.wait_for(waiter, CONFIRM_TIMEOUT)
        except TimeoutError:
            raise RedisConnectionError("redis did not confirm the subscription") from None

    async def unsubscribe(self, ref: ChannelRef) -> None:
        topic = self._topic(ref)
        if self._topics.pop(topic, None) is None:
            return
        async with self._sub_lock:
            # Re-check under the lock: a subscribe() that came meanwhile wants the topic again.
            if self._conn is not None and topic not in self._topics:
                await self._send(self._conn, "UNSUBSCRIBE", topic)

    async def publish(self, ref: ChannelRef, data: bytes, opts: PublishOptions) -> StreamPosition:
        payload = _encode(
            _Envelope(
                data=data,
                tags=opts.tags,
                info=pack_info(opts.info),
                time=int(time.time() * 1000),
                delta=opts.delta,
            )
        )
        if opts.idempotency_key:
            return await self._publish_one(ref, payload, opts)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[StreamPosition] = loop.create_future()
        queued = self._queued.get(ref)
        if queued is None:
            queued = self._queued[ref] = []
            # A task's first step runs in the next loop iteration: the publications made in
            # this one (concurrent API calls read together) go with this one.
            task = loop.create_task(self._send_queued(ref))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)
        queued.append(_Queued(payload, opts, done))
        return await done

    async def _send_queued(self, ref: ChannelRef) -> None:
        """Publish the channel's queued publications, a script call per group, all at once."""
        groups = _groups(self._queued.pop(ref, []))
        await asyncio.gather(*(self._send_group(ref, group) for group in groups))

    async def _send_group(self, ref: ChannelRef, group: list[_Queued]) -> None:
        try:
            if len(group) == 1:
                positions = [await self._publish_one(ref, group[0].payload, group[0].opts)]
            else:
                positions = await self._publish_many(ref, group)
        except BaseException as exc:
            fail_all((item.done for item in group), exc, lambda: RedisConnectionError("closed"))
            if not isinstance(exc, Exception):
                raise
            return
        resolve_all((item.done for item in group), positions)

    async def _publish_many(self, ref: ChannelRef, group: list[_Queued]) -> list[StreamPosition]:
        opts = group[0].opts
        result = await self._publish_batch(
            keys=[self._stream(ref), self._meta(ref)],
            args=[
                _encode([item.payload for item in group]),
                max(0, opts.history_size),
                max(0, opts.history_ttl),
                self._topic(ref),
                secrets.token_hex(4),
                META_TTL,
                *(item.payload for item in group),
            ],
        )
        offset, _, raw_epoch = bytes(result).partition(b":")
        first, epoch = int(offset), raw_epoch.decode()
        return [StreamPosition(first + i if first else 0, epoch) for i in range(len(group))]

    async def _publish_one(
        self, ref: ChannelRef, payload: bytes, opts: PublishOptions
    ) -> StreamPosition:
        idem = self._idempotency(ref, opts.idempotency_key) if opts.idempotency_key else ""
        result = await self._publish(
            keys=[self._stream(ref), self._meta(ref), idem],
            args=[
                payload,
                max(0, opts.history_size),
                max(0, opts.history_ttl),
                self._topic(ref),
                secrets.token_hex(4),
                META_TTL,
                IDEMPOTENCY_TTL,
            ],
        )
        offset, _, epoch = bytes(result).partition(b":")
        return StreamPosition(int(offset), epoch.decode())

    async def publish_join(self, ref: ChannelRef, info: ClientInfoData) -> None:
        await self._redis.publish(self._topic(ref), JOIN + encode_info(pack_info(info)))

    async def publish_leave(self, ref: ChannelRef, info: ClientInfoData) -> None:
        await self._redis.publish(self._topic(ref), LEAVE + encode_info(pack_info(info)))

    async def publish_control(self, data: bytes) -> None:
        await self._redis.publish(self._control, data)

    async def history(self, ref: ChannelRef, opts: HistoryOptions) -> HistoryResult:
        since = opts.since
        # Where the range starts. Oldest first: after `since`. Newest first: before `since`
        # (paging backwards, as centrifuge does); offset 0 matches no entry, ids start at 1.
        start: str | int
        if since is None:
            start = "+" if opts.reverse else "-"
        else:
            start = max(0, since.offset - 1) if opts.reverse else since.offset + 1
        raw = await self._history(
            keys=[self._stream(ref), self._meta(ref)],
            args=[
                secrets.token_hex(4),
                META_TTL,
                opts.limit,
                "1" if opts.reverse else "0",
                start,
                since.epoch if since is not None else "",
            ],
        )
        epoch = bytes(raw[1]).decode()
        position = StreamPosition(int(raw[0]), epoch)
        pubs: list[BrokerPublication] = []
        for i in range(2, len(raw), 2):
            env = _envelope.decode(raw[i + 1])
            pubs.append(
                BrokerPublication(
                    data=env.data,
                    offset=int(bytes(raw[i]).partition(b"-")[0]),  # entry id "<offset>-0"
                    epoch=epoch,
                    tags=env.tags,
                    info=unpack_info(env.info),
                    time=env.time,
                    delta=env.delta,
                )
            )
        pubs, truncated = fit(pubs, opts.max_bytes)
        return HistoryResult(pubs, position, truncated)

    async def remove_history(self, ref: ChannelRef) -> None:
        # The meta hash stays, as in centrifuge: epoch and offset go on, clients stay comparable.
        await self._redis.delete(self._stream(ref))

    async def set_subscriber_count(self, ref: ChannelRef, count: int) -> SubscriberCounts:
        totals = await self._subscribers(
            keys=[self._counts(ref)],
            args=[self._node_id, count, f"{self._prefix}.node.", 86400],
        )
        return SubscriberCounts(int(totals[0]), int(totals[1]))

    async def subscriber_count(self, ref: ChannelRef) -> int:
        raw: dict[bytes, bytes] = await self._redis.hgetall(self._counts(ref))  # type: ignore[assignment]
        if not raw:
            return 0
        nodes = list(raw)
        alive = await self._redis.mget([self._alive(n.decode()) for n in nodes])
        return sum(int(raw[n]) for n, ok in zip(nodes, alive, strict=True) if ok)
