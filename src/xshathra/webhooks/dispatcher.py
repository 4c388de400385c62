"""Delivers queued webhooks: claims due rows with a lease, POSTs them signed, records the
outcome, and schedules retries with backoff. Bounded concurrency and timeouts mean a slow or
hostile receiver cannot stall others or grow memory.

Delivery is at least once: a node that dies after the receiver answered but before recording it
leaves the row to be retried after its lease; receivers deduplicate by the body's `id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import httpx

from xshathra.storage.deliveries import Delivery
from xshathra.webhooks.backoff import MAX_ATTEMPTS, next_delay
from xshathra.webhooks.netguard import UnsafeURLError, check_webhook_url
from xshathra.webhooks.signing import signed_headers

if TYPE_CHECKING:
    from xshathra.storage.database import Database

log = logging.getLogger("xshathra.webhooks")


class WebhookDispatcher:
    def __init__(
        self,
        db: Database,
        node_id: str,
        *,
        allow_private: bool,
        concurrency: int = 16,
        timeout: float = 10.0,
        lease_seconds: float = 60.0,
        poll_seconds: float = 1.0,
        retry_base: float = 2.0,
    ) -> None:
        self._db = db
        self._node_id = node_id
        self._allow_private = allow_private
        self._concurrency = concurrency
        self._timeout = timeout
        self._lease = lease_seconds
        self._poll = poll_seconds
        self._retry_base = retry_base
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency * 2),
        )
        self.outcomes: dict[str, int] = {"delivered": 0, "retry": 0, "failed": 0}

    def wake(self) -> None:
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
            free = self._concurrency - len(self._inflight)
            claimed: list[Delivery] = []
            if free > 0:
                try:
                    claimed = await self._db.deliveries.claim_due(self._node_id, free, self._lease)
                except Exception as exc:
                    log.warning("webhook claim failed: %s", type(exc).__name__)
            for delivery in claimed:
                task = asyncio.get_running_loop().create_task(self._deliver(delivery))
                self._inflight.add(task)
                task.add_done_callback(self._done)
            if not claimed or free <= 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # a slot is free: look for more due work

    async def _deliver(self, delivery: Delivery) -> None:
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
            await check_webhook_url(webhook.url, allow_private=self._allow_private)
            body = delivery.body.encode()
            headers = signed_headers(webhook.secret, int(time.time()), body)
            async with self._client.stream(
                "POST", webhook.url, content=body, headers=headers
            ) as response:
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
