"""The rate limiter's contract on every counter: memory and NATS JetStream (sliding-window
counters), Redis (the `limits` library). Per app at its own `rate_limit`, per IP on the token
endpoints, with the seconds to wait when refused; on shared backends two nodes draw on one
budget."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable

import pytest

from tests.support.backends import BACKENDS, NATS_URL, REDIS_URL, delete_streams
from tests.support.services import ensure_service
from xshathra.api.ratelimit import RateLimiter
from xshathra.ratelimit import WindowCounter
from xshathra.ratelimit.memory import MemoryWindowCounter
from xshathra.ratelimit.redis import LimitsCounter
from xshathra.tenancy.apps import generate_app

NodeFactory = Callable[[int], RateLimiter]


@pytest.fixture(params=BACKENDS)
async def nodes(request: pytest.FixtureRequest) -> AsyncIterator[NodeFactory]:
    """Makes limiters that share the backend's counts, as the nodes of one cluster do (on
    memory, where nothing is shared, every call returns the same limiter)."""
    kind: str = request.param
    prefix = f"xs_test_{secrets.token_hex(6)}"
    counters: list[WindowCounter] = []
    memory = MemoryWindowCounter()

    def make(token_per_minute: int = 100) -> RateLimiter:
        counter: WindowCounter
        if kind == "memory":
            counter = memory
        elif kind == "redis":
            # `limits` keys live under its own "LIMITS" prefix; unique keys keep tests apart.
            counter = LimitsCounter("async+" + REDIS_URL)
        else:
            from xshathra.links.nats import NatsLink
            from xshathra.ratelimit.nats import NatsWindowCounter

            counter = NatsWindowCounter(NatsLink(NATS_URL, name=prefix), prefix=prefix)
        counters.append(counter)
        return RateLimiter(counter, token_per_minute=token_per_minute)

    if kind in ("redis", "nats"):
        ensure_service(kind)
    try:
        yield make
    finally:
        for counter in counters:
            await counter.close()
        if kind == "nats":
            await delete_streams(prefix)


async def test_each_app_has_its_own_budget(nodes: NodeFactory) -> None:
    limiter = nodes(100)
    small, _ = generate_app(name="small", rate_limit=2)
    other, _ = generate_app(name="other", rate_limit=2)
    assert [await limiter.hit_app(small) for _ in range(2)] == [None, None]
    retry_after = await limiter.hit_app(small)
    assert retry_after is not None and 1 <= retry_after <= 60
    assert await limiter.hit_app(other) is None


async def test_a_new_limit_applies_at_once(nodes: NodeFactory) -> None:
    limiter = nodes(100)
    app, _ = generate_app(name="grows", rate_limit=1)
    assert await limiter.hit_app(app) is None
    assert await limiter.hit_app(app) is not None
    assert await limiter.hit_app(app.with_changes(rate_limit=5)) is None


async def test_token_endpoints_count_per_ip(nodes: NodeFactory) -> None:
    limiter = nodes(3)
    ip = f"198.51.100.{secrets.randbelow(250)}"
    assert [await limiter.hit_ip(ip) for _ in range(3)] == [None, None, None]
    retry_after = await limiter.hit_ip(ip)
    assert retry_after is not None and 1 <= retry_after <= 60
    assert await limiter.hit_ip("203.0.113.9" if ip != "203.0.113.9" else "203.0.113.8") is None


async def test_nodes_share_one_budget(nodes: NodeFactory) -> None:
    """Requests spread over two nodes are counted together."""
    first, second = nodes(100), nodes(100)
    app, _ = generate_app(name="shared", rate_limit=3)
    got = [await node.hit_app(app) for node in (first, second, first)]
    assert got == [None, None, None]
    assert await second.hit_app(app) is not None
    assert await first.hit_app(app) is not None


async def test_a_once_only_mark_is_first_on_one_node_only(nodes: NodeFactory) -> None:
    """`first_use` (the Pusher API's replay guard): of concurrent first uses of one key over
    two nodes exactly one wins, and later uses lose until the mark expires."""
    first, second = nodes(100), nodes(100)
    key = f"sig/{secrets.token_hex(8)}"
    wins = await asyncio.gather(*(n.first_use(key, 60) for n in (first, second) * 5))
    assert sorted(wins) == [False] * 9 + [True]
    assert await second.first_use(key, 60) is False
    assert await first.first_use(key + "-other", 60) is True
    short = f"short/{secrets.token_hex(8)}"
    assert await first.first_use(short, 1) is True
    await asyncio.sleep(2.2)  # a mark's expiry is the store's clock: nothing to await
    assert await second.first_use(short, 1) is True


async def test_concurrent_requests_never_exceed_the_limit(nodes: NodeFactory) -> None:
    """Twenty requests at once over two nodes against a limit of ten: exactly ten pass."""
    first, second = nodes(100), nodes(100)
    app, _ = generate_app(name="burst", rate_limit=10)
    results = await asyncio.gather(*(node.hit_app(app) for node in (first, second) * 10))
    assert sum(result is None for result in results) == 10


async def test_hundreds_of_concurrent_requests_on_one_node(nodes: NodeFactory) -> None:
    """300 requests at once, 200 on one node and 100 on another, against a limit of 150:
    exactly 150 pass. (NATS: the hits of one node once raced each other's compare-and-set
    until some gave up, and a counter that fails allows the request: more than the limit
    passed.)"""
    first, second = nodes(100), nodes(100)
    app, _ = generate_app(name="crowd", rate_limit=150)
    results = await asyncio.gather(*(node.hit_app(app) for node in (first, first, second) * 100))
    assert sum(result is None for result in results) == 150
    assert all(1 <= r <= 60 for r in results if r is not None)


async def test_the_memory_window_slides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Last minute's requests still count, weighted by how much of that minute lies inside
    the last 60 s; idle keys are forgotten."""
    clock = [600.0]  # the start of minute 10
    monkeypatch.setattr(time, "time", lambda: clock[0])
    counter = MemoryWindowCounter()
    assert [await counter.hit(4, "k") for _ in range(4)] == [None] * 4
    assert await counter.hit(4, "k") == 60
    clock[0] = 660.0 + 30  # half-way into the next minute: half of the 4 still count
    assert [await counter.hit(4, "k") for _ in range(2)] == [None, None]
    assert await counter.hit(4, "k") is not None
    clock[0] = 660.0 + 59  # nearly all of the old minute has slid out
    assert await counter.hit(4, "k") is None
    clock[0] = 900.0  # minutes later: the key is swept
    await counter.hit(4, "other")
    assert len(counter) == 1  # only "other" is left


async def test_work_is_counted_not_requests(nodes: NodeFactory) -> None:
    """A request that does several units of work (a broadcast's channels, a batch's commands)
    draws that many from the budget, all or nothing: a refused hit takes none of it."""
    first, second = nodes(100), nodes(100)
    app, _ = generate_app(name="weighted", rate_limit=10)
    assert await first.hit_app(app, cost=6) is None
    retry_after = await second.hit_app(app, cost=6)  # 6 + 6 > 10: refused whole
    assert retry_after is not None and 1 <= retry_after <= 60
    assert await second.hit_app(app, cost=4) is None  # the refused 6 took nothing
    assert await first.hit_app(app) is not None


async def test_failed_key_attempts_block_a_client_address() -> None:
    """After `limit` failures in a minute an address is refused before any key is checked;
    other addresses are not, and checking costs no count of its own."""
    limiter = RateLimiter(MemoryWindowCounter(), auth_failures_per_minute=3)
    for _ in range(5):
        assert limiter.auth_blocked("192.0.2.1") is None  # looking never counts
    for _ in range(5):
        limiter.auth_failed("192.0.2.1", "app", "the-same-stale-key")
    # One wrong key sent again and again (a backend with a rotated key) is one failure: it is
    # known now, and answered without a lookup, but it locks nobody out.
    assert limiter.auth_known_bad("app", "the-same-stale-key")
    assert not limiter.auth_known_bad("admin", "the-same-stale-key")  # kinds are apart
    assert limiter.auth_blocked("192.0.2.1") is None
    for i in range(2):
        limiter.auth_failed("192.0.2.1", "app", f"wrong-{i}")
    retry_after = limiter.auth_blocked("192.0.2.1")
    assert retry_after is not None and 1 <= retry_after <= 60
    assert limiter.auth_blocked("192.0.2.2") is None
    assert not limiter.auth_known_bad("app", "never-tried")
