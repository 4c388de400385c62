"""The Redis client every Redis backend (broker, presence, rate limits) uses."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Commands in flight per client. redis-py's default pool refuses the command past its limit
# (MaxConnectionsError: a burst of subscribes answered error 100, publishes failed); a blocking
# pool makes such a command wait up to POOL_WAIT seconds for a connection instead.
POOL_SIZE = 128
POOL_WAIT = 5.0


def redis_client(url: str) -> Redis:
    """A client for commands that survives a Redis restart: a stale pooled connection is
    retried on a fresh one instead of failing the first command after the restart. (A command
    cut off after Redis ran it may thus run twice: publish with an idempotency key where that
    matters.)"""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT,
        decode_responses=False,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
    )
    return Redis(connection_pool=pool)
