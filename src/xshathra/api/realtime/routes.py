"""Seed 001, the realtime API: connection and subscription tokens, and the publish proxy.

Authenticated by the project's server API key (`Authorization: apikey <key>`, or `Bearer`, or
the seed-000 headers). Errors as `{"error": "..."}`; publish answers exactly as the engine API.
"""

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr

from xshathra.api import docs
from xshathra.api.auth import Target, authenticate, check_app_rate, target_app
from xshathra.api.context import ServerContext
from xshathra.api.errors import HttpError, surface_route
from xshathra.api.executor import ApiError, PublishRequest
from xshathra.api.realtime import PREFIX
from xshathra.api.realtime.errors import realtime_error
from xshathra.engine.channels import is_valid_channel, namespace_of
from xshathra.tenancy.apps import BUILTIN_NAMESPACES, Application
from xshathra.tenancy.tokens import REALTIME_TTL_DEFAULT, REALTIME_TTL_MAX, REALTIME_TTL_MIN

_publish_decoder = msgspec.json.Decoder(PublishRequest)
_encoder = msgspec.json.Encoder()
MAX_USER_ID = 255
MAX_CHANNELS_IN_TOKEN = 128

_TTL_DOC = (
    f"Seconds, a whole number from {REALTIME_TTL_MIN} to {REALTIME_TTL_MAX} (`900` or `900.0`); "
    f"default {REALTIME_TTL_DEFAULT}."
)


def _whole_number(value: object) -> object:
    """JSON has one number type: `900.0` is the whole number 900 (JSON Schema's "integer"
    says the same). Anything else is left for StrictInt to refuse, 900.5 and NaN included."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Seconds: any JSON number that is a whole number.
WholeSeconds = Annotated[StrictInt, BeforeValidator(_whole_number)]


class ConnectionTokenBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    userId: StrictStr = Field(description="Stable id of the end user; the JWT's `sub`.")
    ttlSeconds: WholeSeconds | None = Field(None, description=_TTL_DOC)
    channels: list[StrictStr] | None = Field(
        None,
        description="Channels the connection is subscribed to by the server; each in a "
        "namespace the app has configured (or `public:`, or no namespace).",
    )
    info: dict[str, Any] | None = Field(None, description="Small JSON object for presence.")


class SubscriptionTokenBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    userId: StrictStr
    channel: StrictStr = Field(description="Full channel name, e.g. `public:room_abc`.")
    ttlSeconds: WholeSeconds | None = Field(None, description=_TTL_DOC)
    info: dict[str, Any] | None = None


def _ttl(value: int | None) -> int:
    if value is None:
        return REALTIME_TTL_DEFAULT
    if not REALTIME_TTL_MIN <= value <= REALTIME_TTL_MAX:
        raise HttpError(
            400, f"ttlSeconds must be between {REALTIME_TTL_MIN} and {REALTIME_TTL_MAX}"
        )
    return value


def _user(user_id: str) -> str:
    if not user_id.strip() or len(user_id) > MAX_USER_ID:
        raise HttpError(400, f"userId must be 1 to {MAX_USER_ID} characters")
    return user_id


def _channel_error(channel: str) -> str:
    return f"invalid channel name '{channel[:64]}'"


def _check_channel(app: Application, channel: str, field: str) -> None:
    """Seed 001: a token's channels "must match namespaces configured on the engine": the
    app's own namespaces, the built-in `public`, or none (the default namespace)."""
    if not is_valid_channel(channel):
        raise HttpError(400, f"{field}: {_channel_error(channel)}")
    namespace = namespace_of(channel)
    if namespace not in app.namespaces and namespace not in BUILTIN_NAMESPACES:
        raise HttpError(
            400,
            f"{field}: channel '{channel[:64]}' is in namespace '{namespace[:64]}', which the "
            "application has not configured",
        )


def create_realtime_router(ctx: ServerContext) -> APIRouter:
    router = APIRouter(
        prefix=PREFIX,
        tags=["realtime API (seed 001)"],
        route_class=surface_route(realtime_error),
    )

    async def project(request: Request) -> Target:
        """The app whose key authenticates the request (an admin names it with `?app_id=`).

        A dependency, so a caller without a valid key learns nothing from body validation."""
        who = await authenticate(request, ctx, realtime=True)
        return Target(who, await target_app(who, ctx, request.query_params.get("app_id")))

    ProjectDep = Annotated[Target, Depends(project)]
    token_errors = docs.realtime_errors(400, 401, 403, 404, 413, 429, 500)

    @router.post(
        "/token",
        summary="Mint a connection JWT",
        description="Counts against the app's `rate_limit` (not a per-IP limit).",
        response_model=docs.ConnectionTokenAnswer,
        responses=token_errors,
    )
    async def connection_token(to: ProjectDep, body: ConnectionTokenBody) -> JSONResponse:
        await check_app_rate(ctx, to.caller, to.app)
        channels = body.channels or []
        if len(channels) > MAX_CHANNELS_IN_TOKEN:
            raise HttpError(400, f"channels: at most {MAX_CHANNELS_IN_TOKEN} channels")
        for channel in channels:
            _check_channel(to.app, channel, "channels")
        ttl = _ttl(body.ttlSeconds)
        minted = ctx.tokens.mint_connection_token(
            to.app.app_id, _user(body.userId), ttl, channels or None, body.info
        )
        return JSONResponse({"token": minted.token, "expiresInSeconds": ttl})

    @router.post(
        "/subscription-token",
        summary="Mint a subscription JWT for one channel",
        description="Counts against the app's `rate_limit` (not a per-IP limit).",
        response_model=docs.SubscriptionTokenAnswer,
        responses=token_errors,
    )
    async def subscription_token(to: ProjectDep, body: SubscriptionTokenBody) -> JSONResponse:
        await check_app_rate(ctx, to.caller, to.app)
        # Any channel of the grammar: a private room is what a subscription token is for.
        if not is_valid_channel(body.channel):
            raise HttpError(400, f"channel: {_channel_error(body.channel)}")
        ttl = _ttl(body.ttlSeconds)
        minted = ctx.tokens.mint_subscription_token(
            to.app.app_id, _user(body.userId), body.channel, ttl, body.info
        )
        return JSONResponse(
            {"token": minted.token, "channel": body.channel, "expiresInSeconds": ttl}
        )

    @router.post(
        "/publish",
        summary="Publish through the engine's publish API",
        description=(
            "The body is a Centrifugo publish request, handed unchanged to the engine's "
            '`publish` method; the answer is the engine\'s: `{"result": {...}}`, or 200 '
            '`{"error": {"code", "message"}}` for a refused publish (as Centrifugo answers).'
        ),
        response_model=docs.PublishAnswer,
        responses=docs.realtime_errors(400, 401, 403, 404, 413, 429, 500),
        openapi_extra=docs.PUBLISH_REQUEST_BODY,
    )
    async def publish(request: Request, to: ProjectDep) -> Response:
        await check_app_rate(ctx, to.caller, to.app)
        try:
            req = _publish_decoder.decode(await request.body())
        # ValidationError first: it is a DecodeError too, and says which field is wrong.
        except msgspec.ValidationError as exc:
            raise HttpError(400, f"invalid publish request: {exc}") from None
        except (msgspec.DecodeError, RecursionError):  # nesting deeper than the stack
            raise HttpError(400, "invalid JSON body") from None
        try:
            outcome = await ctx.executor.publish(to.app, req, origin="api")
        except ApiError as exc:
            body = {"error": {"code": int(exc.code), "message": exc.message}}
            return Response(_encoder.encode(body), media_type="application/json")
        return Response(_encoder.encode({"result": outcome.result}), media_type="application/json")

    return router
