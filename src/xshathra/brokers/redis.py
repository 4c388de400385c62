"""Redis broker: publications, join/leave and control messages cross nodes over PUB/SUB;
history lives in Redis streams written by the same Lua script that publishes, so publish and
append are one atomic step and recovery works whichever node a client reconnects to.

Only this module turns a `ChannelRef` into Redis key names. It must never block the event loop
on a lost connection: the reader reconnects with backoff and resubscribes by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from importlib import resources

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

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

log = logging.getLogger("xshathra.redis")

NODE_TTL = 30  # seconds a node's subscriber counts are trusted without a heartbeat
META_TTL = 7 * 86400  # the epoch outlives the stream, so old positions stay comparable
IDEMPOTENCY_TTL = 300
RECONNECT_MAX_DELAY = 5.0

Info = tuple[str, str, bytes, bytes]


class _Envelope(msgspec.Struct, array_like=True, omit_defaults=True):
    """A publication on the wire (msgpack): data bytes untouched."""

    data: bytes
    tags: dict[str, str] | None = None
    info: Info | None = None
    time: int = 0


_encode = msgspec.msgpack.Encoder().encode
_envelope = msgspec.msgpack.Decoder(_Envelope)
_info = msgspec.msgpack.Decoder(tuple[str, str, bytes, bytes])


def _pack_info(info: ClientInfoData | None) -> Info | None:
    return None if info is None else (info.user, info.client, info.conn_info, info.chan_info)


def _unpack_info(info: Info | None) -> ClientInfoData | None:
    return None if info is None else ClientInfoData(*info)


def redis_client(url: str) -> Redis:
    """A client whose commands survive a Redis restart: a stale pooled connection is retried
    on a fresh one instead of failing the first command after the restart."""
    return Redis.from_url(
        url,
        decode_responses=False,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
    )


def _script(name: str) -> str:
    return resources.files("xshathra.brokers.lua").joinpath(name).read_text()


class RedisBroker:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "xs",
        node_id: str = "",
    ) -> None:
        self._redis: Redis = redis_client(url)
        # The subscription has its own client without transparent retries: a lost connection
        # must surface here, because messages sent meanwhile are gone and clients must recover.
        self._subscriber: Redis = Redis.from_url(url, decode_responses=False)
        self._prefix = prefix
        self._handler: BrokerEventHandler | None = None
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._topics: dict[bytes, ChannelRef] = {}
        self._control = f"{prefix}.control".encode()
        self._publish = self._redis.register_script(_script("publish.lua"))
        self._history = self._redis.register_script(_script("history.lua"))
        self.healthy = False
        self._node_id = node_id or secrets.token_hex(8)
        self._heartbeat: asyncio.Task[None] | None = None

    # --- naming: the only place a ChannelRef becomes Redis keys ------------------------------

    def _ident(self, ref: ChannelRef) -> str:
        # Length-prefixed app id: ("a:b", "c") and ("a", "b:c") can never collide.
        return f"{len(ref.app_id)}:{ref.app_id}:{ref.name}"

    def _topic(self, ref: ChannelRef) -> bytes:
        return f"{self._prefix}.ch.{self._ident(ref)}".encode()

    def _stream(self, ref: ChannelRef) -> str:
        return f"{self._prefix}.st.{self._ident(ref)}"

    def _meta(self, ref: ChannelRef) -> str:
        return f"{self._prefix}.mt.{self._ident(ref)}"

    def _counts(self, ref: ChannelRef) -> str:
        return f"{self._prefix}.sc.{self._ident(ref)}"

    def _alive(self, node_id: str) -> str:
        return f"{self._prefix}.node.{node_id}"

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, handler: BrokerEventHandler) -> None:
        self._handler = handler
        await self._redis.ping()
        self._pubsub = await self._open_pubsub()
        self.healthy = True
        await self._redis.set(self._alive(self._node_id), b"1", ex=NODE_TTL)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        """Keep this node's liveness key; counts of nodes without one are ignored."""
        while True:
            await asyncio.sleep(NODE_TTL / 3)
            with contextlib.suppress(RedisError, OSError):
                await self._redis.set(self._alive(self._node_id), b"1", ex=NODE_TTL)

    async def _open_pubsub(self) -> PubSub:
        pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._control, *self._topics)
        return pubsub

    async def close(self) -> None:
        for task in (self._reader, self._heartbeat):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self._alive(self._node_id))
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose()
        await self._subscriber.aclose()
        self._handler = None

    async def ping(self) -> None:
        if not self.healthy:
            raise ConnectionError("redis subscription is down")
        await self._redis.ping()

    async def _read(self) -> None:
        delay = 0.1
        while True:
            pubsub = self._pubsub
            try:
                assert pubsub is not None
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message["type"] == "message":
                        self._dispatch(message["channel"], message["data"])
                    delay = 0.1
            except (RedisError, OSError) as exc:
                self.healthy = False
                log.warning("redis subscription lost (%s); reconnecting", type(exc).__name__)
            while True:
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX_DELAY, delay * 2)
                try:
                    if self._pubsub is not None:
                        with contextlib.suppress(RedisError, OSError):
                            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
                    self._pubsub = await self._open_pubsub()
                    break
                except (RedisError, OSError):
                    continue
            self.healthy = True
            log.info("redis subscription restored (%d channels)", len(self._topics))
            # Redis may have restarted empty: re-assert this node's liveness at once.
            with contextlib.suppress(RedisError, OSError):
                await self._redis.set(self._alive(self._node_id), b"1", ex=NODE_TTL)
            if self._handler is not None:
                # Messages may have been missed meanwhile: the engine tells clients to recover.
                self._handler.on_reconnect()

    def _dispatch(self, topic: bytes, data: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        if topic == self._control:
            handler.on_control(data)
            return
        ref = self._topics.get(topic)
        if ref is None:
            return
        kind = data[:1]
        try:
            if kind == b"p":
                offset, epoch, payload = data[1:].split(b":", 2)
                env = _envelope.decode(payload)
                handler.on_publication(
                    ref,
                    BrokerPublication(
                        data=env.data,
                        offset=int(offset),
                        epoch=epoch.decode(),
                        tags=env.tags,
                        info=_unpack_info(env.info),
                        time=env.time,
                    ),
                )
            elif kind in (b"j", b"l"):
                info = ClientInfoData(*_info.decode(data[1:]))
                if kind == b"j":
                    handler.on_join(ref, info)
                else:
                    handler.on_leave(ref, info)
        except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
            log.warning("ignoring a malformed message on a channel topic")

    # --- Broker ---------------------------------------------------------------------------------

    async def subscribe(self, ref: ChannelRef) -> None:
        topic = self._topic(ref)
        self._topics[topic] = ref
        if self._pubsub is not None and self.healthy:
            await self._pubsub.subscribe(topic)

    async def unsubscribe(self, ref: ChannelRef) -> None:
        topic = self._topic(ref)
        if self._topics.pop(topic, None) is not None and self._pubsub is not None and self.healthy:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(topic)

    async def publish(self, ref: ChannelRef, data: bytes, opts: PublishOptions) -> StreamPosition:
        payload = _encode(
            _Envelope(
                data=data, tags=opts.tags, info=_pack_info(opts.info), time=int(time.time() * 1000)
            )
        )
        idem = ""
        if opts.idempotency_key:
            idem = f"{self._prefix}.id.{self._ident(ref)}.{opts.idempotency_key}"
        result = await self._publish(
            keys=[self._stream(ref), self._meta(ref), idem],
            args=[
                payload,
                opts.history_size,
                max(1, opts.history_ttl),
                self._topic(ref),
                secrets.token_hex(4),
                max(META_TTL, opts.history_ttl),
                IDEMPOTENCY_TTL,
            ],
        )
        offset, _, epoch = bytes(result).partition(b":")
        return StreamPosition(int(offset), epoch.decode())

    async def publish_join(self, ref: ChannelRef, info: ClientInfoData) -> None:
        await self._redis.publish(self._topic(ref), b"j" + _encode(_pack_info(info)))

    async def publish_leave(self, ref: ChannelRef, info: ClientInfoData) -> None:
        await self._redis.publish(self._topic(ref), b"l" + _encode(_pack_info(info)))

    async def publish_control(self, data: bytes) -> None:
        await self._redis.publish(self._control, data)

    async def history(self, ref: ChannelRef, opts: HistoryOptions) -> HistoryResult:
        first = 0
        if opts.since is not None:
            first = opts.since.offset + 1
        raw = await self._history(
            keys=[self._stream(ref), self._meta(ref)],
            args=[secrets.token_hex(4), META_TTL, first, opts.limit, "1" if opts.reverse else "0"],
        )
        offset, epoch = int(raw[0]), bytes(raw[1]).decode()
        position = StreamPosition(offset, epoch)
        if opts.since is not None and opts.since.epoch != epoch:
            return HistoryResult([], position)  # the caller reports the epoch change
        pubs: list[BrokerPublication] = []
        for i in range(2, len(raw), 2):
            entry_id = bytes(raw[i]).split(b"-", 1)[0]
            env = _envelope.decode(raw[i + 1])
            pubs.append(
                BrokerPublication(
                    data=env.data,
                    offset=int(entry_id),
                    epoch=epoch,
                    tags=env.tags,
                    info=_unpack_info(env.info),
                    time=env.time,
                )
            )
        return HistoryResult(pubs, position)

    async def remove_history(self, ref: ChannelRef) -> None:
        await self._redis.delete(self._stream(ref))

    async def set_subscriber_count(self, ref: ChannelRef, count: int) -> None:
        key = self._counts(ref)
        if count:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, self._node_id, count)
                pipe.expire(key, 86400)
                await pipe.execute()
        else:
            await self._redis.hdel(key, self._node_id)

    async def subscriber_count(self, ref: ChannelRef) -> int:
        raw: dict[bytes, bytes] = await self._redis.hgetall(self._counts(ref))  # type: ignore[assignment]
        if not raw:
            return 0
        nodes = list(raw)
        alive = await self._redis.mget([self._alive(n.decode()) for n in nodes])
        return sum(int(raw[n]) for n, ok in zip(nodes, alive, strict=True) if ok)
