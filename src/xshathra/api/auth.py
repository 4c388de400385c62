"""Who is calling: the admin key or an application key, and which application a request acts on.

App keys come as `X-APP-API-KEY`, `X-API-Key` or `?api_key=`, and on `/api/realtime/*` also as
`Authorization: apikey <key>` or `Bearer <key>`. Keys are looked up by their SHA-256 (an indexed
lookup on a hash reveals nothing about the key) and the admin key is compared in constant time.
A client address with too many distinct wrong keys in the last minute is refused (429) for
any key that would need a store lookup; the admin key and app keys this node has cached still
work from it. The same wrong key sent again is answered 401 without a lookup and is not a new
failure, so a backend still sending a rotated key locks nobody out.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from xshathra.api.context import ServerContext
from xshathra.api.errors import HttpError
from xshathra.api.ratelimit import KeyKind
from xshathra.tenancy.apps import Application, hash_key


@dataclass(frozen=True, slots=True)
class Caller:
    admin: bool
    app: Application | None  # the key's own app; None for the admin


@dataclass(frozen=True, slots=True)
class Target:
    """The caller and the application the request acts on (isolation already enforced)."""

    caller: Caller
    app: Application


def app_key_from(request: Request, *, allow_authorization: bool) -> str:
    headers = request.headers
    key = headers.get("x-app-api-key") or headers.get("x-api-key") or ""
    if not key:
        key = request.query_params.get("api_key", "")
    if not key and allow_authorization:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() in ("apikey", "bearer"):
            key = value.strip()
    return key.strip()


async def authenticate(request: Request, ctx: ServerContext, *, realtime: bool = False) -> Caller:
    """Identify the caller or raise 401. The admin key wins when both are sent."""
    limiter = ctx.limiter
    blocked = limiter.auth_blocked(client_address(request))
    admin_key = request.headers.get("x-admin-api-key")
    if admin_key:
        admin_hash = hash_key(admin_key)
        if hmac.compare_digest(admin_hash, ctx.admin_key_hash):
            return Caller(admin=True, app=None)
        if not limiter.auth_known_bad("admin", admin_hash):
            _refuse_if_limited(blocked)
            key_failed(ctx, request, "admin", admin_hash)
        raise HttpError(401, "invalid admin API key")
    key = app_key_from(request, allow_authorization=realtime)
    if not key:
        raise HttpError(401, "missing API key")
    key_hash = hash_key(key)
    if limiter.auth_known_bad("app", key_hash):
        raise HttpError(401, "invalid API key")
    if blocked is not None:
        app = ctx.app_keys.cached(key_hash)
        if app is None:
            _refuse_if_limited(blocked)
    else:
        app = await ctx.app_keys.find_by_api_key_hash(key_hash)
    if app is None:
        key_failed(ctx, request, "app", key_hash)
        raise HttpError(401, "invalid API key")
    return Caller(admin=False, app=app)


def client_address(request: Request) -> str:
    """The caller's address: the peer, or what a trusted proxy says (uvicorn resolved it)."""
    return request.client.host if request.client is not None else ""


def refuse_if_guessing(ctx: ServerContext, request: Request) -> None:
    """429 for an address with too many wrong keys (or app secrets) in the last minute."""
    _refuse_if_limited(ctx.limiter.auth_blocked(client_address(request)))


def key_failed(ctx: ServerContext, request: Request, kind: KeyKind, secret_hash: str) -> None:
    ctx.limiter.auth_failed(client_address(request), kind, secret_hash)


async def target_app(caller: Caller, ctx: ServerContext, requested: str | None) -> Application:
    """The app a request acts on, enforcing isolation (403) and admin scoping (400/404)."""
    if caller.admin:
        if not requested:
            raise HttpError(400, "app_id is required when using the admin key")
        app = await ctx.db.apps.get_app(requested)
        if app is None:
            raise HttpError(404, "application not found")
        return app
    assert caller.app is not None
    if requested and requested != caller.app.app_id:
        raise HttpError(403, "access denied: the API key belongs to another application")
    if not caller.app.status:
        raise HttpError(403, "application is disabled")
    return caller.app


async def rated_app(caller: Caller, ctx: ServerContext, requested: str | None) -> Application:
    """The app a request acts on (see `target_app`), counted against its rate limit."""
    app = await target_app(caller, ctx, requested)
    await check_app_rate(ctx, caller, app)
    return app


async def check_app_rate(ctx: ServerContext, caller: Caller, app: Application) -> None:
    """Count the request against the app's per-minute limit (app keys only; admins are exempt)."""
    if caller.admin:
        return
    _refuse_if_limited(await ctx.limiter.hit_app(app))


async def check_ip_rate(ctx: ServerContext, request: Request) -> None:
    _refuse_if_limited(await ctx.limiter.hit_ip(client_address(request)))


def _refuse_if_limited(retry_after: int | None) -> None:
    """429 with `Retry-After` and `retry_after`, in the surface's error shape."""
    if retry_after is not None:
        raise HttpError(
            429,
            "rate limit exceeded",
            headers={"Retry-After": str(retry_after)},
            extra={"retry_after": retry_after},
        )
