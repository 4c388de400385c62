"""The Centrifugo-compatible server API: `POST /realtime/api/<method>`, scoped to the app whose
key authenticates the request (`X-API-Key: <key>` or `Authorization: apikey <key>`).

Answers as Centrifugo does: `{"result": {...}}` or `{"error": {"code": N, "message": "..."}}`,
so the PyPI client `cent` works unmodified against `http://HOST/realtime/api`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from fastapi import APIRouter, Request, Response

from xshathra.api import executor as x
from xshathra.api.context import ServerContext
from xshathra.protocol.codes import ErrorCode
from xshathra.tenancy.apps import Application, hash_key

_encoder = msgspec.json.Encoder()
log = logging.getLogger("xshathra.api")

Handler = Callable[[x.Executor, Application, Any], Awaitable[Any]]


async def _publish(e: x.Executor, app: Application, r: x.PublishRequest) -> Any:
    return (await e.publish(app, r)).result


METHODS: dict[str, tuple[type[msgspec.Struct], Handler]] = {
    "publish": (x.PublishRequest, _publish),
    "broadcast": (x.BroadcastRequest, lambda e, a, r: e.broadcast(a, r)),
    "subscribe": (x.SubscribeRequest, lambda e, a, r: e.subscribe(a, r)),
    "unsubscribe": (x.UnsubscribeRequest, lambda e, a, r: e.unsubscribe(a, r)),
    "disconnect": (x.DisconnectRequest, lambda e, a, r: e.disconnect(a, r)),
    "refresh": (x.RefreshRequest, lambda e, a, r: e.refresh(a, r)),
    "presence": (x.ChannelRequest, lambda e, a, r: e.presence(a, r)),
    "presence_stats": (x.ChannelRequest, lambda e, a, r: e.presence_stats(a, r)),
    "history": (x.HistoryRequest, lambda e, a, r: e.history(a, r)),
    "history_remove": (x.ChannelRequest, lambda e, a, r: e.history_remove(a, r)),
    "channels": (x.ChannelsRequest, lambda e, a, r: e.channels(a, r)),
    "info": (x.InfoRequest, lambda e, a, r: e.info(a, r)),
}
_decoders = {name: msgspec.json.Decoder(spec[0]) for name, spec in METHODS.items()}
_batch_decoder = msgspec.json.Decoder(x.BatchRequest)


@dataclass(slots=True)
class EngineAnswer:
    """One server API answer, whichever HTTP layer sends it."""

    status: int
    body: bytes
    headers: dict[str, str] | None = None


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> EngineAnswer:
    return EngineAnswer(status, _encoder.encode(body), headers)


def _error(code: ErrorCode, message: str | None = None, status: int = 200) -> EngineAnswer:
    err = x.ApiError(code, message)
    return _json({"error": {"code": int(err.code), "message": err.message}}, status)


def api_key_from(headers: Mapping[str, str]) -> str:
    """The key of `X-API-Key: <key>` or `Authorization: apikey|bearer <key>`; "" if neither."""
    key = headers.get("x-api-key", "")
    if key:
        return key
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() in ("apikey", "bearer") and value.strip():
        return value.strip()
    return ""


async def run_method(
    ctx: ServerContext, app: Application, method: str, body: bytes
) -> dict[str, Any]:
    """Decode and run one method; returns the Centrifugo reply object (result or error)."""
    spec = METHODS.get(method)
    if spec is None:
        raise x.ApiError(ErrorCode.METHOD_NOT_FOUND)
    try:
        request = _decoders[method].decode(body or b"{}")
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise x.ApiError(ErrorCode.BAD_REQUEST, f"bad request: {exc}") from None
    result = await spec[1](ctx.executor, app, request)
    return {"result": result}


async def answer(ctx: ServerContext, method: str, api_key: str, body: bytes) -> EngineAnswer:
    """The whole server API behind one call: authenticate, rate-limit, run `method` (or a
    batch) and shape the reply as Centrifugo does. The body limit is the HTTP layer's: a body
    over it never gets here. Both HTTP layers (the bare ASGI fast path in
    `api.engine_http` and the FastAPI route that documents it) answer through here."""
    app = await ctx.app_keys.find_by_api_key_hash(hash_key(api_key)) if api_key else None
    if app is None:
        return _error(ErrorCode.UNAUTHORIZED, status=401)
    if not app.status:
        return _error(ErrorCode.PERMISSION_DENIED, "application is disabled", status=403)
    limited = await ctx.limiter.hit_app(app)
    if limited is not None:
        return _json(
            {
                "error": {"code": int(ErrorCode.TOO_MANY_REQUESTS), "message": "too many requests"},
                "retry_after": limited,
            },
            429,
            {"Retry-After": str(limited)},
        )
    if method == "batch":
        return await _batch(ctx, app, body)
    if method not in METHODS:
        return _error(ErrorCode.METHOD_NOT_FOUND, status=404)
    try:
        return _json(await run_method(ctx, app, method, body))
    except x.ApiError as exc:
        status = 400 if exc.code == ErrorCode.BAD_REQUEST and "bad request:" in exc.message else 200
        return _error(exc.code, exc.message, status)
    except Exception as exc:
        log.warning("server API %s failed: %s", method, type(exc).__name__)
        return _error(ErrorCode.INTERNAL, status=500)


async def _batch(ctx: ServerContext, app: Application, body: bytes) -> EngineAnswer:
    try:
        req = _batch_decoder.decode(body or b"{}")
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        return _error(ErrorCode.BAD_REQUEST, f"bad request: {exc}", 400)
    replies: list[dict[str, Any]] = []
    for command in req.commands:
        if len(command) != 1:
            replies.append({"error": {"code": 107, "message": "one method per command"}})
            continue
        ((method, params),) = command.items()
        try:
            reply = await run_method(ctx, app, method, bytes(params))
            replies.append({method: reply["result"]})
        except x.ApiError as exc:
            replies.append({"error": {"code": int(exc.code), "message": exc.message}})
        except Exception as exc:
            log.warning("server API %s failed in a batch: %s", method, type(exc).__name__)
            replies.append({"error": {"code": 100, "message": "internal server error"}})
    return _json({"replies": replies})


def _response(a: EngineAnswer) -> Response:
    return Response(a.body, a.status, a.headers, media_type="application/json")


def create_engine_router(ctx: ServerContext) -> APIRouter:
    """The documented routes (OpenAPI). In a running server `api.engine_http` answers these
    paths before FastAPI sees them; the routes answer the same way, through `answer`."""
    router = APIRouter(prefix="/realtime/api", tags=["engine server API (Centrifugo)"])

    @router.post("/batch", summary="Run several methods in one request")
    async def batch(request: Request) -> Response:
        body = await request.body()
        return _response(await answer(ctx, "batch", api_key_from(request.headers), body))

    @router.post("/{method}", summary="Run one server API method (publish, presence, ...)")
    async def call(method: str, request: Request) -> Response:
        body = await request.body()
        return _response(await answer(ctx, method, api_key_from(request.headers), body))

    return router
