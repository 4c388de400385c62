"""Delivers queued webhooks: claims due rows with a lease, POSTs them signed, records the
outcome, and schedules retries with backoff.

One tenant cannot hold up another: rows are claimed round-robin across apps, each app has at
most `per_app` attempts in flight on this node, and every attempt has a connect timeout and a
total deadline (a receiver that trickles bytes cannot stretch it). Requests go through the SSRF
guard's pinned transport, so they reach only the address that was checked. Old delivered and
failed rows are pruned.

Delivery is at least once: a node that dies after the receiver answered but before recording it
leaves the row to be retried after its lease; receivers deduplicate by the body's `id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import httpx

from xshathra.outbound.netguard import Resolver, UnsafeURLError, guarded_client, system_resolver
from xshathra.outbound.signing import signed_headers
from xshathra.webhooks import pusher
from xshathra.webhooks.backoff import MAX_ATTEMPTS, next_delay
from xshathra.webhooks.models import Delivery, Webhook, utcnow

if TYPE_CHECKING:
    from xshathra.webhooks.store import WebhookStores

log = logging.getLogger("xshathra.webhooks")

PRUNE_EVERY_SECONDS = 3600.0


class WebhookDispatcher:
    def __init__(
        self,
        db: WebhookStores,
        node_id: str,
        *,
        allow_private: bool,
        concurrency: int = 16,
        per_app: int = 4,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        lease_seconds: float = 0.0,
        poll_seconds: float = 1.0,
        retry_base: float = 2.0,
        retention_days: float = 7.0,
        resolver: Resolver = system_resolver,
        pusher_keys: Callable[[str], Awaitable[tuple[str, str] | None]] | None = None,
    ) -> None:
        self._db = db
        # An app's (key, secret) as Pusher names them, to sign Pusher-format deliveries.
        self._pusher_keys = pusher_keys
        self._node_id = node_id
        self._concurrency = concurrency
        self._per_app = max(1, min(per_app, concurrency))
        self._timeout = timeout
        # The lease must outlast an attempt (and the write of its outcome), or another node
        # would start the same delivery; no longer than that, because a node killed while
        # attempting leaves the row unclaimable until the lease ends.
        self._lease = max(lease_seconds, 2 * timeout + 5)
        self._poll = poll_seconds
        self._retry_base = retry_base
        self._retention = timedelta(days=retention_days)
        self._last_prune = 0.0
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._busy: Counter[str] = Counter()  # attempts in flight here, per app
        self._released: list[str] = []  # held deliveries whose publication went out
        self._task: asyncio.Task[None] | None = None
        self._client = guarded_client(
            allow_private=allow_private,
            resolver=resolver,
            timeout=httpx.Timeout(timeout, connect=min(connect_timeout, timeout)),
            limits=httpx.Limits(max_connections=concurrency * 2),
        )
        self.outcomes: dict[str, int] = {"delivered": 0, "retry": 0, "failed": 0, "dropped": 0}

    @property
    def in_flight(self) -> int:
        """Delivery attempts running on this node now."""
        return len(self._inflight)

    def wake(self) -> None:
        self._wake.set()

    def release(self, delivery_ids: list[str]) -> None:
        """Deliveries held until their publication went out: make them due (batched, in the
        loop). Should this never run (a crash), they fall due when the hold ends."""
        self._released.extend(delivery_ids)
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        await self._client.aclose()

    async def _run(self) -> None:
        while True:
            await self._housekeeping()
            free = self._concurrency - len(self._inflight)
            claimed: list[Delivery] = []
            if free > 0:
                try:
                    claimed = await self._db.deliveries.claim_due(
                        self._node_id,
                        free,
                        self._lease,
                        per_app=self._per_app,
                        busy={app: n for app, n in self._busy.items() if n > 0},
                    )
                except Exception as exc:  # the database may be away for a while
                    log.warning("webhook claim failed: %s", type(exc).__name__)
            for delivery in claimed:
                self._busy[delivery.app_id] += 1
                task = asyncio.get_running_loop().create_task(self._deliver(delivery))
                self._inflight.add(task)
                task.add_done_callback(functools.partial(self._done, app_id=delivery.app_id))
            if not claimed or free <= 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)

    async def _housekeeping(self) -> None:
        """Release held deliveries; prune old finished rows now and then. Errors are logged by
        type only: a driver's message can carry SQL parameters (bodies, secrets)."""
        released, self._released = self._released, []
        try:
            await self._db.deliveries.release(released)
        except Exception as exc:  # they fall due anyway when their hold ends
            log.warning("webhook release failed: %s", type(exc).__name__)
        if time.monotonic() - self._last_prune >= PRUNE_EVERY_SECONDS:
            self._last_prune = time.monotonic()
            try:
                await self._db.deliveries.prune(utcnow() - self._retention)
            except Exception as exc:
                log.warning("webhook delivery pruning failed: %s", type(exc).__name__)

    def _done(self, task: asyncio.Task[None], app_id: str) -> None:
        self._inflight.discard(task)
        self._busy[app_id] -= 1
        if self._busy[app_id] <= 0:
            del self._busy[app_id]
        self._wake.set()  # a slot is free: look for more due work

    async def send_test(self, webhook: Webhook, body: bytes) -> tuple[int | None, str | None]:
        """One signed POST of `body` to the webhook now, outside the outbox (nothing stored,
        no retry): the receiver's status, or None and why it could not be reached."""
        headers = {**webhook.headers, **signed_headers(webhook.secret, int(time.time()), body)}
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._client.stream("POST", webhook.url, content=body, headers=headers) as response,
            ):
                return response.status_code, None
        except UnsafeURLError as exc:
            return None, str(exc)
        except httpx.HTTPError as exc:
            return None, type(exc).__name__
        except TimeoutError:
            return None, f"DeadlineExceeded: no answer within {self._timeout:g} s"

    async def _deliver(self, delivery: Delivery) -> None:
        """One attempt. Never lets an exception escape the task: an unretrieved task error is
        logged by asyncio with the driver's full text, SQL parameters included."""
        try:
            await self._attempt(delivery)
        except Exception as exc:  # the row keeps its lease and is retried when it ends
            log.warning("webhook delivery %s not recorded: %s", delivery.id, type(exc).__name__)

    async def _attempt(self, delivery: Delivery) -> None:
        store = self._db.deliveries
        attempts = delivery.attempts + 1
        webhook = await self._db.webhooks.get_webhook(delivery.app_id, delivery.webhook_id)
        if webhook is None or not webhook.enabled:
            await store.mark_failed(
                delivery.id, self._node_id, delivery.attempts, None, "webhook disabled or deleted"
            )
            self.outcomes["failed"] += 1
            return
        status: int | None = None
        try:
            body = delivery.body.encode()
            # The app's own headers first: the signature's and the content type win.
            headers = {**webhook.headers, **signed_headers(webhook.secret, int(time.time()), body)}
            if delivery.event in pusher.PUSHER_EVENTS and self._pusher_keys is not None:
                keys = await self._pusher_keys(delivery.app_id)
                if keys is not None:
                    headers.update(pusher.signed_headers(keys[0], keys[1], body))
            # The total deadline: httpx's timeouts are per phase and per read.
            async with (
                asyncio.timeout(self._timeout),
                self._client.stream("POST", webhook.url, content=body, headers=headers) as response,
            ):
                status = response.status_code
            if 200 <= status < 300:
                await store.mark_delivered(delivery.id, self._node_id, attempts, status)
                self.outcomes["delivered"] += 1
                return
            if status == 410:  # the receiver says it is gone for good: stop sending to it
                await self._db.webhooks.set_enabled(delivery.app_id, webhook.id, False)
                await store.mark_failed(
                    delivery.id, self._node_id, attempts, status, "410 Gone: webhook disabled"
                )
                self.outcomes["failed"] += 1
                return
            error = f"HTTP {status}"
        except UnsafeURLError as exc:
            error = str(exc)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}"
        except TimeoutError:
            error = f"DeadlineExceeded: no answer within {self._timeout:g} s"
        if attempts >= MAX_ATTEMPTS:
            await store.mark_failed(delivery.id, self._node_id, attempts, status, error)
            self.outcomes["failed"] += 1
        else:
            await store.mark_retry(
                delivery.id,
                self._node_id,
                attempts,
                next_delay(attempts, base=self._retry_base),
                status,
                error,
            )
            self.outcomes["retry"] += 1
