"""Seed 000, the apps API: `/api/token`, `/api/broadcast`, `/api/applications`,
`/api/analytics`, `/api/webhooks`. Errors as `{"success": false, "error": "..."}`."""

# No `from __future__ import annotations`: FastAPI must resolve the dependency aliases that are
# defined inside `create_apps_router`.

import hmac
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from xshathra.analytics import PERIODS
from xshathra.api import docs
from xshathra.api.apps import PREFIX
from xshathra.api.apps.errors import apps_error
from xshathra.api.auth import (
    Caller,
    authenticate,
    check_ip_rate,
    key_failed,
    rated_app,
    refuse_if_guessing,
)
from xshathra.api.context import ServerContext
from xshathra.api.errors import HttpError, surface_route
from xshathra.api.executor import ApiError, PublishRequest
from xshathra.api.views import application_view, delivery_view, iso, webhook_view
from xshathra.protocol.codes import ErrorCode, LifecycleEvent
from xshathra.tenancy.apps import (
    APP_ID_PATTERN,
    AppExistsError,
    AppIdRetiredError,
    hash_key,
    new_secret,
)
from xshathra.tenancy.service import (
    AppDisabled,
    AppUpdate,
    InvalidInput,
    KeyReplaced,
    NotFound,
    OperatorOnly,
    ServiceError,
)

LIFECYCLE_EVENTS = tuple(event.value for event in LifecycleEvent)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TokenBody(_Body):
    app_id: StrictStr
    app_secret: StrictStr
    payload: dict[str, Any] | None = None


class BroadcastBody(_Body):
    app_id: StrictStr | None = None
    room: StrictStr
    event: StrictStr
    data: Any = Field(default_factory=dict)


class CreateAppBody(_Body):
    app_id: StrictStr | None = None
    name: StrictStr
    allowed_domain: StrictStr | None = None
    rate_limit: StrictInt | None = None


class UpdateAppBody(_Body):
    name: StrictStr | None = None
    allowed_domain: StrictStr | None = Field(None, description='null or "" clears it.')
    rate_limit: StrictInt | None = Field(
        None,
        description="Per minute: up to XSHATHRA_APP_RATE_LIMIT_CEILING with the app's own key, "
        "up to 1000000 with the admin key.",
    )
    status: StrictBool | None = Field(
        None, description="An app key may disable its app; only the admin enables it again."
    )
    namespaces: dict[str, docs.NamespaceOptionsModel] | None = Field(
        None, description="Replaces the app's namespaces: name -> options."
    )
    proxies: dict[str, Any] | None = Field(
        None,
        description="Backend proxies (Centrifugo v6 shape: `proxies`, `client.proxy.connect|"
        "refresh|send`, `rpc.namespaces`); replaces the app's. `{}` removes them.",
    )
    pusher_client_events: StrictBool | None = Field(
        None, description="Let Pusher clients send client- events (SPEC §10)."
    )
    pusher_subscription_count: StrictBool | None = Field(
        None,
        description="Send Pusher subscribers of non-presence channels "
        "pusher_internal:subscription_count events (SPEC §10).",
    )
    pusher_user_authentication: StrictBool | None = Field(
        None,
        description="Close Pusher connections that do not sign in (pusher:signin) in time, "
        "with 4009 (SPEC §10).",
    )
    token_rsa_public_key: StrictStr | None = Field(
        None, description="PEM public key verifying the app's own RS256 tokens; null clears."
    )
    token_ecdsa_public_key: StrictStr | None = Field(
        None, description="PEM P-256 public key verifying the app's own ES256 tokens."
    )
    token_jwks_url: StrictStr | None = Field(
        None, description="A JWKS URL publishing the app's RS256/ES256 keys (cached 5 min)."
    )
    token_audience: StrictStr | None = Field(
        None, description="The `aud` the app's own tokens must carry; null: not checked."
    )
    token_issuer: StrictStr | None = Field(
        None, description="The `iss` the app's own tokens must carry; null: not checked."
    )
    # Quotas: admin key only; a number sets one, null clears it (the deployment's limit).
    max_connections: StrictInt | None = Field(
        None, description="Admin only. Open connections, cluster-wide (3504 past it)."
    )
    max_connections_per_user: StrictInt | None = Field(
        None, description="Admin only. One user's connections, cluster-wide (3504 past it)."
    )
    max_channels_per_connection: StrictInt | None = Field(
        None, description="Admin only. Subscriptions per connection (error 106 past it)."
    )
    max_message_size: StrictInt | None = Field(
        None, description="Admin only. Bytes of one publication's data (error 106 past it)."
    )
    rate_limit_ceiling: StrictInt | None = Field(
        None, description="Admin only. The highest rate_limit the app's own key may set."
    )


TOKEN_FIELDS = (
    "token_rsa_public_key",
    "token_ecdsa_public_key",
    "token_jwks_url",
    "token_audience",
    "token_issuer",
)
QUOTA_FIELDS = (
    "max_connections",
    "max_connections_per_user",
    "max_channels_per_connection",
    "max_message_size",
    "rate_limit_ceiling",
)


class RegenerateSecretBody(_Body):
    grace_seconds: StrictInt = Field(
        0, description="Seconds the old app_secret stays valid (0 to 2592000)."
    )


class WebhookBody(_Body):
    app_id: StrictStr | None = None
    url: StrictStr
    secret: StrictStr | None = None
    events: list[StrictStr]
    rooms: list[StrictStr] | None = Field(
        None, description="Room (channel) `*` globs whose events it wants; absent: every room."
    )
    headers: dict[str, StrictStr] | None = Field(
        None, description="Custom headers sent with every delivery (up to 20)."
    )


class WebhookUpdateBody(_Body):
    url: StrictStr | None = None
    events: list[StrictStr] | None = None
    rooms: list[StrictStr] | None = Field(None, description="Replaces the room globs; [] all.")
    headers: dict[str, StrictStr] | None = Field(None, description="Replaces the headers.")
    enabled: StrictBool | None = None


def _ok(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse({"success": True, **body}, status_code=status)


# The HTTP status of each refusal of the application service.
_STATUS: dict[type[ServiceError], int] = {
    InvalidInput: 400,
    KeyReplaced: 401,
    AppDisabled: 403,
    OperatorOnly: 403,
    NotFound: 404,
}


@contextmanager
def refusals() -> Iterator[None]:
    """The application service's refusals as this surface's HTTP errors."""
    try:
        yield
    except ServiceError as exc:
        raise HttpError(_STATUS[type(exc)], exc.message) from None


def create_apps_router(ctx: ServerContext) -> APIRouter:
    router = APIRouter(
        prefix=PREFIX, tags=["apps API (seed 000)"], route_class=surface_route(apps_error)
    )
    service = ctx.apps

    async def caller(request: Request) -> Caller:
        return await authenticate(request, ctx)

    CallerDep = Annotated[Caller, Depends(caller)]

    async def ip_limited(request: Request) -> None:
        await check_ip_rate(ctx, request)

    @router.post(
        "/token",
        summary="Mint a client JWT (app_id + app_secret)",
        description="No API key: the app's `app_secret` authenticates. 100 per minute per IP.",
        dependencies=[Depends(ip_limited)],
        response_model=docs.TokenAnswer,
        responses=docs.apps_errors(400, 401, 403, 413, 429, 500),
    )
    async def token(body: TokenBody, request: Request) -> JSONResponse:
        refuse_if_guessing(ctx, request)  # an app_secret is a key too
        app = await ctx.db.apps.get_app(body.app_id) if APP_ID_PATTERN.match(body.app_id) else None
        # Compare against something even when the app is unknown: no timing hint either way.
        # During a secret's grace period its predecessor authenticates too.
        expected = app.token_secrets(time.time()) if app is not None else (new_secret(),)
        given = body.app_secret.encode()
        matched = [hmac.compare_digest(e.encode(), given) for e in expected]
        if not any(matched) or app is None:
            key_failed(ctx, request, "secret", hash_key(f"{body.app_id}:{body.app_secret}"))
            raise HttpError(401, "invalid app_id or app_secret")
        if not app.status:
            raise HttpError(403, "application is disabled")
        minted = ctx.tokens.mint_api_token(app.app_id, body.payload)
        return _ok(
            {
                "token": minted.token,
                "expires_in": minted.expires_at - minted.issued_at,
                "expires_at": time.strftime(
                    "%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(minted.expires_at)
                ),
            }
        )

    @router.post(
        "/broadcast",
        summary="Broadcast an event to a room",
        description="Publishes `data` to channel `room` with `tags.event = event`.",
        response_model=docs.BroadcastAnswer,
        responses=docs.apps_errors(400, 401, 403, 404, 413, 429, 500),
    )
    async def broadcast(
        body: BroadcastBody, who: CallerDep, app_id: str | None = None
    ) -> JSONResponse:
        app = await rated_app(who, ctx, body.app_id or app_id)
        if not body.room:
            raise HttpError(400, "room is required")
        if not body.event or len(body.event) > 200:
            raise HttpError(400, "event must be 1 to 200 characters")
        try:
            # A lone surrogate (JSON "\ud800") parses here but cannot be encoded: refused
            # before anything is published.
            data = msgspec.json.encode(body.data)
            body.event.encode()
        except UnicodeEncodeError:
            raise HttpError(400, "event and data must be valid Unicode text") from None
        try:
            outcome = await ctx.executor.publish(
                app,
                PublishRequest(
                    channel=body.room,
                    data=msgspec.Raw(data),
                    tags={"event": body.event},
                ),
                origin="api",
                count_subscribers=True,
            )
        except ApiError as exc:
            raise HttpError(
                413 if exc.code == ErrorCode.LIMIT_EXCEEDED else 400, f"room: {exc.message}"
            ) from None
        return _ok(
            {
                "room": f"app-{app.app_id}-{body.room}",
                "event": body.event,
                "subscriber_count": outcome.subscriber_count,
                "timestamp": int(time.time() * 1000),
            }
        )

    @router.get(
        "/applications",
        summary="Your application (app key) or all of them (admin)",
        description=(
            "With an app key: `{success, application}`. With the admin key: "
            "`{success, applications: [...]}`, or one app with `?app_id=`."
        ),
        response_model=docs.ApplicationAnswer | docs.ApplicationsAnswer,
        responses=docs.apps_errors(401, 403, 404, 429, 500),
    )
    async def list_or_get(who: CallerDep, app_id: str | None = None) -> JSONResponse:
        if who.admin and not app_id:
            apps = await service.list_applications()
            return _ok({"applications": [application_view(a) for a in apps]})
        app = await rated_app(who, ctx, app_id)
        return _ok({"application": application_view(app)})

    @router.post(
        "/applications",
        status_code=201,
        summary="Create an application (admin)",
        description="The answer carries `api_key` (= `server_api_key`): it is shown only here.",
        response_model=docs.ApplicationCreated,
        responses=docs.apps_errors(400, 401, 403, 409, 413, 500),
        openapi_extra=docs.ADMIN_ONLY,
    )
    async def create(body: CreateAppBody, who: CallerDep) -> JSONResponse:
        if not who.admin:
            raise HttpError(403, "the admin API key is required")
        try:
            with refusals():
                app, keys = await service.create_application(
                    name=body.name,
                    app_id=body.app_id,
                    allowed_domain=body.allowed_domain,
                    rate_limit=body.rate_limit,
                )
        except AppIdRetiredError:
            raise HttpError(
                409, "this app_id was used by a deleted application and cannot be reused"
            ) from None
        except AppExistsError:
            raise HttpError(409, "an application with this app_id already exists") from None
        return _ok({"application": application_view(app, api_key=keys.api_key)}, 201)

    @router.put(
        "/applications/{app_id}",
        summary="Update application settings",
        response_model=docs.ApplicationAnswer,
        responses=docs.apps_errors(400, 401, 403, 404, 413, 429, 500),
    )
    async def update(app_id: str, body: UpdateAppBody, who: CallerDep) -> JSONResponse:
        app = await rated_app(who, ctx, app_id)
        update: AppUpdate = {}
        if body.name is not None:
            update["name"] = body.name
        if "allowed_domain" in body.model_fields_set:
            update["allowed_domain"] = body.allowed_domain
        if body.rate_limit is not None:
            update["rate_limit"] = body.rate_limit
        if body.status is not None:
            update["status"] = body.status
        if body.namespaces is not None:
            update["namespaces"] = {n: o.model_dump() for n, o in body.namespaces.items()}
        for field in TOKEN_FIELDS:
            if field in body.model_fields_set:
                update[field] = getattr(body, field)  # type: ignore[literal-required]
        quotas = {q: getattr(body, q) for q in QUOTA_FIELDS if q in body.model_fields_set}
        if quotas:
            update["quotas"] = quotas
        if "proxies" in body.model_fields_set:
            update["proxies"] = body.proxies
        if body.pusher_client_events is not None:
            update["pusher_client_events"] = body.pusher_client_events
        if body.pusher_subscription_count is not None:
            update["pusher_subscription_count"] = body.pusher_subscription_count
        if body.pusher_user_authentication is not None:
            update["pusher_user_authentication"] = body.pusher_user_authentication
        with refusals():
            updated = await service.update_application(app, update, as_admin=who.admin)
        return _ok({"application": application_view(updated)})

    @router.delete(
        "/applications/{app_id}",
        summary="Delete an application (admin)",
        response_model=docs.Success,
        responses=docs.apps_errors(401, 403, 404, 500),
        openapi_extra=docs.ADMIN_ONLY,
    )
    async def delete(app_id: str, who: CallerDep) -> JSONResponse:
        if not who.admin:
            raise HttpError(403, "the admin API key is required")
        with refusals():
            await service.delete_application(app_id)
        return _ok({})

    @router.post(
        "/applications/{app_id}/regenerate-api-key",
        summary="Regenerate the API key",
        description="The new key is shown once; the old one fails at once, on every node.",
        response_model=docs.KeyRegenerated,
        responses=docs.apps_errors(401, 403, 404, 429, 500),
    )
    async def regenerate(app_id: str, who: CallerDep) -> JSONResponse:
        app = await rated_app(who, ctx, app_id)
        with refusals():
            updated, keys = await service.regenerate_api_key(app, as_admin=who.admin)
        view = application_view(updated, api_key=keys.api_key)
        return _ok({"application": view, "api_key": keys.api_key})

    @router.post(
        "/applications/{app_id}/regenerate-secret",
        summary="Regenerate the app secret",
        description="A new `app_secret` (in the answer). Tokens signed with the old one keep "
        "verifying for `grace_seconds` (0 to 2592000, default 0), and `POST /api/token` "
        "accepts it as long; then it fails everywhere. App key or admin key.",
        response_model=docs.ApplicationAnswer,
        responses=docs.apps_errors(400, 401, 403, 404, 413, 429, 500),
    )
    async def regenerate_secret(
        app_id: str, who: CallerDep, body: RegenerateSecretBody | None = None
    ) -> JSONResponse:
        app = await rated_app(who, ctx, app_id)
        grace = body.grace_seconds if body is not None else 0
        with refusals():
            updated = await service.regenerate_app_secret(
                app, grace_seconds=grace, as_admin=who.admin
            )
        return _ok({"application": application_view(updated)})

    @router.get(
        "/analytics",
        summary="Usage figures for a period",
        response_model=docs.AnalyticsAnswer,
        responses=docs.apps_errors(400, 401, 403, 404, 429, 500),
    )
    async def analytics(
        who: CallerDep,
        period: Annotated[str, Query(description="1h, 24h, 7d or 30d")] = "24h",
        app_id: str | None = None,
    ) -> JSONResponse:
        app = await rated_app(who, ctx, app_id)
        seconds = PERIODS.get(period)
        if seconds is None:
            raise HttpError(400, "period must be one of 1h, 24h, 7d, 30d")
        snap = await ctx.analytics.snapshot(app.app_id, seconds)
        return _ok(
            {
                "app_id": app.app_id,
                "period": period,
                "metrics": {
                    "connections": {
                        "total": snap.connections_total,
                        "current": snap.connections_current,
                    },
                    "events": {"total": snap.events_total, "broadcasts": snap.events_broadcasts},
                    "users": {"online": snap.users_online, "total": snap.users_total},
                },
                "series": msgspec.to_builtins(snap.series),
                "timestamp": int(time.time() * 1000),
            }
        )

    @router.post(
        "/webhooks",
        status_code=201,
        summary="Register a webhook",
        description="Without `secret` the server generates one and shows it once.",
        response_model=docs.WebhookAnswer,
        responses=docs.apps_errors(400, 401, 403, 404, 413, 429, 500),
    )
    async def create_webhook(
        body: WebhookBody, who: CallerDep, app_id: str | None = None
    ) -> JSONResponse:
        app = await rated_app(who, ctx, body.app_id or app_id)
        with refusals():
            webhook, shown = await service.create_webhook(
                app.app_id,
                url=body.url,
                events=body.events,
                secret=body.secret,
                rooms=body.rooms,
                headers=body.headers,
            )
        return _ok({"webhook": webhook_view(webhook, secret=shown)}, 201)

    @router.get(
        "/webhooks",
        summary="List webhooks",
        response_model=docs.WebhooksAnswer,
        responses=docs.apps_errors(400, 401, 403, 404, 429, 500),
    )
    async def list_webhooks(who: CallerDep, app_id: str | None = None) -> JSONResponse:
        app = await rated_app(who, ctx, app_id)
        hooks = await service.list_webhooks(app.app_id)
        return _ok({"webhooks": [webhook_view(h) for h in hooks]})

    @router.put(
        "/webhooks/{webhook_id}",
        summary="Change a webhook",
        description="Sets the fields given (`url`, `events`, `rooms`, `headers`, `enabled`); "
        "the others stay as they are.",
        response_model=docs.WebhookAnswer,
        responses=docs.apps_errors(400, 401, 403, 404, 413, 429, 500),
    )
    async def update_webhook(
        webhook_id: str, body: WebhookUpdateBody, who: CallerDep, app_id: str | None = None
    ) -> JSONResponse:
        app = await rated_app(who, ctx, app_id)
        with refusals():
            webhook = await service.update_webhook(
                app.app_id,
                webhook_id,
                url=body.url,
                events=body.events,
                rooms=body.rooms,
                headers=body.headers,
                enabled=body.enabled,
            )
        return _ok({"webhook": webhook_view(webhook)})

    @router.post(
        "/webhooks/{webhook_id}/test",
        summary="Send a test event now",
        description="POSTs a signed `test` event to the webhook at once (no retry; the attempt "
        "is listed among its deliveries) and answers what the receiver said: `delivered` "
        "(a 2xx), its HTTP `status`, or the `error` that kept it from answering.",
        response_model=docs.WebhookTestAnswer,
        responses=docs.apps_errors(400, 401, 403, 404, 429, 500),
    )
    async def test_webhook(
        webhook_id: str, who: CallerDep, app_id: str | None = None
    ) -> JSONResponse:
        app = await rated_app(who, ctx, app_id)
        with refusals():
            sent = await service.send_test_event(app.app_id, webhook_id)
        return _ok({"delivered": sent.delivered, "status": sent.status, "error": sent.error})

    @router.delete(
        "/webhooks/{webhook_id}",
        summary="Delete a webhook",
        response_model=docs.Success,
        responses=docs.apps_errors(400, 401, 403, 404, 429, 500),
    )
    async def delete_webhook(
        webhook_id: str, who: CallerDep, app_id: str | None = None
    ) -> JSONResponse:
        app = await rated_app(who, ctx, app_id)
        with refusals():
            await service.delete_webhook(app.app_id, webhook_id)
        return _ok({})

    @router.get(
        "/webhooks/{webhook_id}/deliveries",
        summary="Recent deliveries of a webhook",
        response_model=docs.DeliveriesAnswer,
        responses=docs.apps_errors(400, 401, 403, 404, 429, 500),
    )
    async def deliveries(
        webhook_id: str, who: CallerDep, app_id: str | None = None
    ) -> JSONResponse:
        app = await rated_app(who, ctx, app_id)
        with refusals():
            rows = await service.list_deliveries(app.app_id, webhook_id)
        return _ok({"deliveries": [delivery_view(d) for d in rows]})

    @router.post(
        "/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
        summary="Queue a delivery again (after a failure, say)",
        response_model=docs.Success,
        responses=docs.apps_errors(400, 401, 403, 404, 429, 500),
    )
    async def replay(
        webhook_id: str, delivery_id: str, who: CallerDep, app_id: str | None = None
    ) -> JSONResponse:
        app = await rated_app(who, ctx, app_id)
        with refusals():
            await service.replay_delivery(app.app_id, webhook_id, delivery_id)
        return _ok({})

    return router


__all__ = ["LIFECYCLE_EVENTS", "create_apps_router", "iso"]
