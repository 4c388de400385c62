"""Answering the callers of a batched backend request: several callers' work (publications of
one channel, rate-limit hits on one key) goes to Redis or NATS as one request, and each caller
awaits a future of its own. Written once for the brokers and the rate-limit counters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def resolve_all(waiters: Iterable[asyncio.Future[T]], results: Iterable[T]) -> None:
    """Each waiter its own result, in order; one whose caller gave up (cancelled) is skipped."""
    for waiter, result in zip(waiters, results, strict=True):
        if not waiter.done():
            waiter.set_result(result)


def fail_all(
    waiters: Iterable[asyncio.Future[T]], exc: BaseException, closed: Callable[[], Exception]
) -> None:
    """Each waiter hears the batch's failure, as if it had made the request alone. A
    cancellation of the batch's task (the backend closing) reaches them as `closed()`: the
    caller must re-raise that one itself."""
    failure = exc if isinstance(exc, Exception) else closed()
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(failure)
