"""Seed 001, the realtime API: connection and subscription tokens, and the publish proxy.

Authenticated by the project's server API key (`Authorization: apikey <key>`, or `Bearer`, or
the seed-000 headers). Errors as `{"error": "..."}`; publish answers exactly as the engine API.
"""

from typing import Any

import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from xshathra.api.auth import authenticate, check_app_rate, check_ip_rate, target_app
from xshathra.api.context import ServerContext
from xshathra.api.errors import HttpError
from xshathra.api.executor import ApiError, PublishRequest
from xshathra.engine.channels import is_valid_channel
from xshathra.tenancy.tokens import REALTIME_TTL_DEFAULT, REALTIME_TTL_MAX, REALTIME_TTL_MIN

_publish_decoder = msgspec.json.Decoder(PublishRequest)
_encoder = msgspec.json.Encoder()
MAX_USER_ID = 255
MAX_CHANNELS_IN_TOKEN = 128


class ConnectionTokenBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    userId: StrictStr
    ttlSeconds: StrictInt | None = None
    channels: list[StrictStr] | None = None
    info: dict[str, Any] | None = None


class SubscriptionTokenBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    userId: StrictStr
    channel: StrictStr
    ttlSeconds: StrictInt | None = None
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


def create_realtime_router(ctx: ServerContext) -> APIRouter:
    router = APIRouter(prefix="/api/realtime", tags=["realtime API (seed 001)"])

    async def ip_limited(request: Request) -> None:
        await check_ip_rate(ctx, request)

    @router.post("/token", summary="Mint a connection JWT", dependencies=[Depends(ip_limited)])
    async def connection_token(request: Request, body: ConnectionTokenBody) -> JSONResponse:
        who = await authenticate(request, ctx, realtime=True)
        app = await target_app(who, ctx, request.query_params.get("app_id"))
        channels = body.channels or []
        if len(channels) > MAX_CHANNELS_IN_TOKEN:
            raise HttpError(400, f"channels: at most {MAX_CHANNELS_IN_TOKEN} channels")
        for channel in channels:
            if not is_valid_channel(channel):
                raise HttpError(400, f"channels: invalid channel name '{channel[:64]}'")
        ttl = _ttl(body.ttlSeconds)
        minted = ctx.tokens.mint_connection_token(
            app.app_id, _user(body.userId), ttl, channels or None, body.info
        )
        return JSONResponse({"token": minted.token, "expiresInSeconds": ttl})

    @router.post(
        "/subscription-token",
        summary="Mint a subscription JWT for one channel",
        dependencies=[Depends(ip_limited)],
    )
    async def subscription_token(request: Request, body: SubscriptionTokenBody) -> JSONResponse:
        who = await authenticate(request, ctx, realtime=True)
        app = await target_app(who, ctx, request.query_params.get("app_id"))
        if not is_valid_channel(body.channel):
            raise HttpError(400, "channel must be a valid channel name")
        ttl = _ttl(body.ttlSeconds)
        minted = ctx.tokens.mint_subscription_token(
            app.app_id, _user(body.userId), body.channel, ttl, body.info
        )
        return JSONResponse(
            {"token": minted.token, "channel": body.channel, "expiresInSeconds": ttl}
        )

    @router.post("/publish", summary="Publish through the engine's publish API")
    async def publish(request: Request) -> Response:
        who = await authenticate(request, ctx, realtime=True)
        app = await target_app(who, ctx, request.query_params.get("app_id"))
        await check_app_rate(ctx, who, app)
        try:
            req = _publish_decoder.decode(await request.body())
        except msgspec.DecodeError:
            raise HttpError(400, "invalid JSON body") from None
        except msgspec.ValidationError as exc:
            raise HttpError(400, f"invalid publish request: {exc}") from None
        try:
            outcome = await ctx.executor.publish(app, req, origin="api")
        except ApiError as exc:
            body = {"error": {"code": int(exc.code), "message": exc.message}}
            return Response(_encoder.encode(body), media_type="application/json")
        return Response(_encoder.encode({"result": outcome.result}), media_type="application/json")

    return router
