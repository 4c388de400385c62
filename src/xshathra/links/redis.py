"""The Redis client every Redis backend (broker, presence, rate limits) uses."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def redis_client(url: str) -> Redis:
    """A client for commands that survives a Redis restart: a stale pooled connection is
    retried on a fresh one instead of failing the first command after the restart. (A command
    cut off after Redis ran it may thus run twice: publish with an idempotency key where that
    matters.)"""
    return Redis.from_url(
        url,
        decode_responses=False,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
    )
