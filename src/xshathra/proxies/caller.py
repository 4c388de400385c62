"""`HttpProxyCaller`: POSTs the engine's proxy requests to an app's backend, as Centrifugo's
HTTP proxy does, and decodes the replies.

Every request is signed with the app secret like a webhook, carries only the client headers
the proxy names plus its static ones, goes through the private-address guard, and is bounded
by its `timeout`. One app has at most `per_app` calls in flight: a call past that fails at
once (the client gets 100) instead of queueing, so a slow tenant backend holds neither other
tenants' calls nor an unbounded number of waiting commands. Nothing here knows the engine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TypeVar

import httpcore

from xshathra.outbound.netguard import GuardedNetworkBackend, UnsafeURLError
from xshathra.outbound.signing import signed_headers
from xshathra.protocol import proxy as p
from xshathra.proxies.pool import ProxyPool, ReplyTooLarge
from xshathra.tenancy.apps import Application
from xshathra.tenancy.proxies import ProxyTarget

R = TypeVar("R")
log = logging.getLogger("xshathra.proxy")
USER_AGENT = "Xshathra-Proxy/1"
MAX_REPLY_BYTES = 1_048_576  # a larger reply is refused


class ProxyStats:
    """Plain counters by kind (connect, refresh, subscribe, publish, sub_refresh, rpc, send),
    read at scrape time. `errors` counts every call that did not get a proxy reply."""

    __slots__ = ("calls", "errors", "latency_count", "latency_sum", "rejected")

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.rejected: dict[str, int] = {}  # over the per-app bound: never sent
        self.latency_sum: dict[str, float] = {}
        self.latency_count: dict[str, int] = {}

    def _bump(self, table: dict[str, int], kind: str) -> None:
        table[kind] = table.get(kind, 0) + 1

    def reject(self, kind: str) -> None:
        """A call refused at once: over its app's bound."""
        self._bump(self.rejected, kind)
        self.observe(kind, 0.0, ok=False)

    def observe(self, kind: str, seconds: float, ok: bool) -> None:
        self._bump(self.calls, kind)
        if not ok:
            self._bump(self.errors, kind)
        self.latency_sum[kind] = self.latency_sum.get(kind, 0.0) + seconds
        self._bump(self.latency_count, kind)


class HttpProxyCaller:
    def __init__(self, *, allow_private: bool, per_app: int = 128) -> None:
        self._per_app = per_app
        self._in_flight: dict[str, int] = {}
        self.stats = ProxyStats()
        # No pool-wide connection cap: the per-app bound is what limits sockets, and a shared
        # cap would let one tenant's slow backend hold every pooled connection.
        self._pool = ProxyPool(GuardedNetworkBackend(allow_private=allow_private))

    async def close(self) -> None:
        await self._pool.close()

    async def call(
        self,
        app: Application,
        target: ProxyTarget,
        request: p.ProxyRequest,
        reply_type: type[R],
        client_headers: Sequence[tuple[str, str]] | None = None,
    ) -> R | None:
        kind = p.KINDS[type(request)]
        in_flight = self._in_flight.get(app.app_id, 0)
        if in_flight >= self._per_app:
            self.stats.reject(kind)
            return None
        self._in_flight[app.app_id] = in_flight + 1
        started = time.monotonic()
        reply: R | None = None
        try:
            reply = await self._post(app, target, request, reply_type, client_headers, kind)
        finally:
            left = self._in_flight[app.app_id] - 1
            if left:
                self._in_flight[app.app_id] = left
            else:
                del self._in_flight[app.app_id]  # the table holds only apps with calls now
            self.stats.observe(kind, time.monotonic() - started, ok=reply is not None)
        return reply

    async def _post(
        self,
        app: Application,
        target: ProxyTarget,
        request: p.ProxyRequest,
        reply_type: type[R],
        client_headers: Sequence[tuple[str, str]] | None,
        kind: str,
    ) -> R | None:
        body = p.encode_request(request)
        headers = _forwarded(target, client_headers)
        # Ours last: a configured header never replaces the signature or the content type.
        headers.update(
            signed_headers(app.app_secret, int(time.time()), body, user_agent=USER_AGENT)
        )
        raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        try:
            # One deadline for everything (resolving, connecting, sending, reading).
            async with asyncio.timeout(target.timeout):
                status, data = await self._pool.post(
                    target.endpoint, raw_headers, body, target.timeout, MAX_REPLY_BYTES
                )
        except TimeoutError:
            log.warning("%s proxy of app %s timed out", kind, app.app_id)
            return None
        except UnsafeURLError as exc:
            log.warning("%s proxy of app %s refused: %s", kind, app.app_id, exc)
            return None
        except ReplyTooLarge:
            log.warning("%s proxy of app %s answered too much", kind, app.app_id)
            return None
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            log.warning("%s proxy of app %s failed: %s", kind, app.app_id, type(exc).__name__)
            return None
        except (httpcore.UnsupportedProtocol, OSError, UnicodeError, ValueError) as exc:
            log.warning("%s proxy of app %s failed: %s", kind, app.app_id, type(exc).__name__)
            return None
        if status != 200:
            log.warning("%s proxy of app %s answered %d", kind, app.app_id, status)
            return None
        try:
            reply = p.decode_reply(type(request), data)
        except p.ProxyDecodeError:
            log.warning("%s proxy of app %s answered no proxy reply", kind, app.app_id)
            return None
        if not isinstance(reply, reply_type):
            return None
        return reply


def _forwarded(
    target: ProxyTarget, client_headers: Sequence[tuple[str, str]] | None
) -> dict[str, str]:
    """The client's headers the proxy asks for (case-insensitive), then its static ones."""
    headers: dict[str, str] = {}
    if client_headers and target.http_headers:
        wanted = {name.lower() for name in target.http_headers}
        for name, value in client_headers:
            if name.lower() in wanted:
                headers[name] = value
    for name, value in target.static_headers:
        headers[name] = value
    return headers
