"""The limiter: per app at its own `rate_limit`, per IP on the token endpoints, with the
seconds to wait when refused."""

from __future__ import annotations

from xshathra.api.ratelimit import RateLimiter
from xshathra.tenancy.apps import generate_app


async def test_each_app_has_its_own_budget() -> None:
    limiter = RateLimiter("async+memory://")
    small, _ = generate_app(name="small", rate_limit=2)
    other, _ = generate_app(name="other", rate_limit=2)
    assert [await limiter.hit_app(small) for _ in range(2)] == [None, None]
    retry_after = await limiter.hit_app(small)
    assert retry_after is not None and 1 <= retry_after <= 60
    assert await limiter.hit_app(other) is None


async def test_a_new_limit_applies_at_once() -> None:
    limiter = RateLimiter("async+memory://")
    app, _ = generate_app(name="grows", rate_limit=1)
    assert await limiter.hit_app(app) is None
    assert await limiter.hit_app(app) is not None
    assert await limiter.hit_app(app.with_changes(rate_limit=5)) is None


async def test_token_endpoints_count_per_ip() -> None:
    limiter = RateLimiter("async+memory://", token_per_minute=3)
    assert [await limiter.hit_ip("198.51.100.1") for _ in range(3)] == [None, None, None]
    retry_after = await limiter.hit_ip("198.51.100.1")
    assert retry_after is not None and 1 <= retry_after <= 60
    assert await limiter.hit_ip("198.51.100.2") is None
