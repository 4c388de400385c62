"""The NATS connection a node shares between its broker, its presence store and its rate-limit
counters, and the few JetStream operations they need: ensuring a stream exists, and reading a
consistent snapshot of what a stream holds under a subject filter.

Only the NATS modules turn a `ChannelRef` into subject tokens (`channel_token`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext, api
from nats.js.errors import APIError

from xshathra.links.keys import channel_ident
from xshathra.model import ChannelRef

log = logging.getLogger("xshathra.nats")

CONNECT_TIMEOUT = 2
REQUEST_TIMEOUT = 5.0
# A stream whose config changed (an upgrade, another node with other settings) is updated.
STREAM_NAME_IN_USE = 10058
WRONG_LAST_SEQUENCE = 10071  # JetStream's answer when another append came first
EXPECT_LAST = "Nats-Expected-Last-Subject-Sequence"
STREAM_RESTORE_ATTEMPTS = 40


def channel_token(ref: ChannelRef) -> str:
    """One subject token naming the channel: base64url of the length-prefixed app id and the
    name, so any channel name (dots, spaces, `*`, `>`) is a valid token and ("a:b", "c")
    never meets ("a", "b:c")."""
    return base64.urlsafe_b64encode(channel_ident(ref).encode()).rstrip(b"=").decode()


def text_token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode() or "_"


def stream_name(prefix: str, kind: str) -> str:
    """JetStream names allow no dots, spaces, `*` or `>`."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{prefix}_{kind}")


class NatsUnavailable(ConnectionError):
    """NATS cannot serve now (down, reconnecting, or without JetStream)."""


class NatsLink:
    """One connection per node, opened by whichever user needs it first and closed by the
    last one to let go. nats-py reconnects and resubscribes by itself; `on_reconnect` hooks
    hear about it (events published meanwhile are gone)."""

    def __init__(self, url: str, *, name: str) -> None:
        self._url = url
        self._name = name
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()
        self._users = 0
        self._streams: dict[str, api.StreamConfig] = {}  # ensured on this connection
        self.reconnect_hooks: list[Callable[[], None]] = []

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def acquire(self) -> tuple[NatsClient, JetStreamContext]:
        """Register one more user and return the (connected) client."""
        async with self._lock:
            if self._nc is None:
                self._nc, self._js = await self._connect()
            self._users += 1
            assert self._js is not None
            return self._nc, self._js

    async def client(self) -> tuple[NatsClient, JetStreamContext]:
        if self._nc is None or self._js is None:
            raise NatsUnavailable("the NATS connection is not open")
        return self._nc, self._js

    async def release(self) -> None:
        async with self._lock:
            self._users -= 1
            if self._users > 0 or self._nc is None:
                return
            nc, self._nc, self._js = self._nc, None, None
            self._streams.clear()
        with contextlib.suppress(NatsError, OSError, TimeoutError):
            await nc.drain()
        if not nc.is_closed:
            await nc.close()

    async def _connect(self) -> tuple[NatsClient, JetStreamContext]:
        async def reconnected() -> None:
            log.info("nats connection restored")
            # NATS may have restarted without our memory-backed streams: recreate them all
            # before anyone is told to re-read what they hold.
            configs, self._streams = list(self._streams.values()), {}
            for config in configs:
                for attempt in range(STREAM_RESTORE_ATTEMPTS):
                    try:
                        await self.ensure_stream(config)
                        break
                    except (NatsError, APIError, TimeoutError) as exc:
                        if attempt == STREAM_RESTORE_ATTEMPTS - 1:
                            log.error("nats: stream %s not restored (%s)", config.name, exc)
                        else:  # JetStream may still be starting up
                            await asyncio.sleep(0.25)
            for hook in list(self.reconnect_hooks):
                try:
                    hook()
                except Exception:
                    log.exception("nats reconnect hook failed")

        async def disconnected() -> None:
            if self._nc is not None:  # not our own close
                log.warning("nats connection lost; reconnecting")

        async def error(exc: Exception) -> None:
            # Reconnect attempts report here; the message never carries credentials.
            log.debug("nats: %s", type(exc).__name__)

        try:
            nc = await nats.connect(
                self._url,
                name=self._name,
                connect_timeout=CONNECT_TIMEOUT,
                allow_reconnect=True,
                # Bounded for the first connect (nats-py would retry it forever), so a node
                # started against an unreachable NATS fails fast and says so...
                max_reconnect_attempts=2,
                reconnect_time_wait=0.25,
                ping_interval=5,
                max_outstanding_pings=2,
                reconnected_cb=reconnected,
                disconnected_cb=disconnected,
                error_cb=error,
            )
        except (TimeoutError, NatsError, OSError) as exc:
            raise NatsUnavailable(
                f"XSHATHRA_BROKER_URL: cannot connect to NATS ({type(exc).__name__})"
            ) from None
        # ...and unbounded once connected: a running node outlives any NATS restart.
        nc.options["max_reconnect_attempts"] = -1
        js = nc.jetstream(timeout=REQUEST_TIMEOUT)
        try:
            await js.account_info()
        except (NatsError, APIError) as exc:
            await nc.close()
            raise NatsUnavailable(
                "XSHATHRA_BROKER_URL: this NATS server has no JetStream, which history, "
                "presence and subscriber counts need (start nats-server with -js)"
            ) from exc
        return nc, js

    async def ensure_stream(self, config: api.StreamConfig) -> None:
        """Create the stream, or bring an existing one to this config; once per connection."""
        assert config.name is not None
        if config.name in self._streams:
            return
        _, js = await self.client()
        try:
            await js.add_stream(config)
        except APIError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            await js.update_stream(config)
        self._streams[config.name] = config

    async def snapshot(
        self,
        stream: str,
        subject: str,
        *,
        last_per_subject: bool = False,
    ) -> list[Msg]:
        """Every message the stream holds now under `subject` (oldest first), or with
        `last_per_subject` only the newest of each subject. An ephemeral pull consumer fixes the
        count when it is created, so messages appended while reading are not waited for."""
        nc, js = await self.client()
        config = api.ConsumerConfig(
            name=nc.new_inbox().rsplit(".", 1)[-1],
            filter_subject=subject,
            deliver_policy=(
                api.DeliverPolicy.LAST_PER_SUBJECT if last_per_subject else api.DeliverPolicy.ALL
            ),
            ack_policy=api.AckPolicy.NONE,
            mem_storage=True,
            inactive_threshold=30.0,  # the server cleans up if we die mid-read
        )
        info = await js.add_consumer(stream, config)
        try:
            pending = info.num_pending or 0
            if pending == 0:
                return []
            sub = await js.pull_subscribe_bind(consumer=info.name, stream=stream)
            try:
                msgs: list[Msg] = []
                while len(msgs) < pending:
                    msgs.extend(await sub.fetch(pending - len(msgs), timeout=REQUEST_TIMEOUT))
                return msgs
            finally:
                await sub.unsubscribe()
        finally:
            with contextlib.suppress(NatsError, APIError, TimeoutError):
                await js.delete_consumer(stream, info.name)

    @staticmethod
    async def quietly(call: Awaitable[object]) -> None:
        """Await a best-effort background call, logging instead of raising."""
        try:
            await call
        except (TimeoutError, NatsError, APIError, OSError) as exc:
            log.warning("nats background call failed (%s)", type(exc).__name__)


async def append_after(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    after: int,
    headers: dict[str, str] | None = None,
) -> api.PubAck | None:
    """Append to `subject` only if its newest message is still stream sequence `after` (0:
    the subject holds nothing): JetStream's compare-and-set. None when another append came
    first; the caller re-reads and tries again."""
    try:
        return await js.publish(
            subject, payload, headers={**(headers or {}), EXPECT_LAST: str(after)}
        )
    except APIError as exc:
        if exc.err_code == WRONG_LAST_SEQUENCE:
            return None
        raise


class StreamUser:
    """A user of the shared link that needs one stream (presence, rate limits): opened on
    first use, since those stores have no start of their own, and released by `close`."""

    def __init__(self, link: NatsLink, config: api.StreamConfig) -> None:
        self.link = link
        self.config = config
        self._ready = False
        self._lock = asyncio.Lock()

    async def ready(self) -> tuple[NatsClient, JetStreamContext]:
        if not self._ready:
            async with self._lock:
                if not self._ready:
                    await self.link.acquire()
                    try:
                        await self.link.ensure_stream(self.config)
                    except BaseException:
                        await self.link.release()
                        raise
                    self._ready = True
        return await self.link.client()

    async def close(self) -> None:
        async with self._lock:
            if self._ready:
                self._ready = False
                await self.link.release()
