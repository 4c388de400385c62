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
from xshathra.api.errors import surface_route
from xshathra.api.server import PREFIX
from xshathra.api.server.errors import server_error
from xshathra.protocol.codes import ERROR_MESSAGES, ErrorCode
from xshathra.tenancy.apps import Application, hash_key

_encoder = msgspec.json.Encoder()
log = logging.getLogger("xshathra.api")
_INTERNAL = ERROR_MESSAGES[ErrorCode.INTERNAL]

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
    "rpc": (x.RpcRequest, lambda e, a, r: e.rpc(a, r)),
}
REQUEST_DECODERS = {name: msgspec.json.Decoder(spec[0]) for name, spec in METHODS.items()}
_batch_decoder = msgspec.json.Decoder(x.BatchRequest)


@dataclass(slots=True)
class EngineAnswer:
    """One server API answer, whichever HTTP layer sends it."""

    status: int
    body: bytes
    headers: dict[str, str] | None = None


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> EngineAnswer:
    return EngineAnswer(status, _encoder.encode(body), headers)


def _error(code: ErrorCode | int, message: str | None = None, status: int = 200) -> EngineAnswer:
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


class MalformedRequest(x.ApiError):
    """A body that does not decode as the method's request: answered with HTTP 400, where the
    errors a method itself reports are answered with 200, as Centrifugo answers them."""

    def __init__(self, problem: str) -> None:
        super().__init__(ErrorCode.BAD_REQUEST, f"bad request: {problem}")


@dataclass(slots=True)
class Command:
    """One method call, decoded before anything runs, so its work can be counted first."""

    method: str
    request: Any = None  # the decoded request; None when `error` says why there is none
    error: x.ApiError | None = None

    def cost(self, broadcast_cap: int) -> int:
        """Units of the app's rate limit: one per publish a broadcast makes, else one. A
        broadcast over the node's cap costs one: the executor refuses it without publishing."""
        if isinstance(self.request, x.BroadcastRequest):
            channels = len(self.request.channels)
            return channels if 0 < channels <= broadcast_cap else 1
        return 1


def decode_command(method: str, body: bytes) -> Command:
    spec = METHODS.get(method)
    if spec is None:
        return Command(method, error=x.ApiError(ErrorCode.METHOD_NOT_FOUND))
    try:
        return Command(method, REQUEST_DECODERS[method].decode(body or b"{}"))
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        return Command(method, error=MalformedRequest(str(exc)))


async def run_command(ctx: ServerContext, app: Application, command: Command) -> dict[str, Any]:
    """Run one decoded method; returns the Centrifugo reply object (result or error)."""
    if command.error is not None:
        raise command.error
    result = await METHODS[command.method][1](ctx.executor, app, command.request)
    return {"result": result}


async def run_method(
    ctx: ServerContext, app: Application, method: str, body: bytes
) -> dict[str, Any]:
    """Decode and run one method; returns the Centrifugo reply object (result or error)."""
    return await run_command(ctx, app, decode_command(method, body))


def _too_many(retry_after: int) -> EngineAnswer:
    return _json(
        {
            "error": {"code": int(ErrorCode.TOO_MANY_REQUESTS), "message": "too many requests"},
            "retry_after": retry_after,
        },
        429,
        {"Retry-After": str(retry_after)},
    )


async def answer(
    ctx: ServerContext, method: str, api_key: str, body: bytes, client: str = ""
) -> EngineAnswer:
    """The whole server API behind one call: authenticate, rate-limit, run `method` (or a
    batch) and shape the reply as Centrifugo does. The body limit is the HTTP layer's: a body
    over it never gets here. Both HTTP layers (the bare ASGI fast path in
    `api.server.engine_http` and the FastAPI route that documents it) answer through here.

    `client` is the caller's address (already resolved from trusted proxies by uvicorn): an
    address with too many wrong keys in the last minute is refused unless its key is one this
    node has cached (no store lookup for a guesser).

    The request's work is counted before any of it runs: one unit per command, one per channel
    of a broadcast. Work over the node's caps, or over what the app's `rate_limit` could ever
    allow, is refused with 106; work that does not fit now, with 429 and Retry-After."""
    limiter = ctx.limiter
    key_hash = hash_key(api_key) if api_key else ""
    if key_hash and limiter.auth_known_bad("app", key_hash):
        return _error(ErrorCode.UNAUTHORIZED, status=401)  # the same wrong key: no lookup
    blocked = limiter.auth_blocked(client)
    if blocked is not None:
        # A throttled address may still use a key this node knows (no lookup): see api.auth.
        app = ctx.app_keys.cached(key_hash) if key_hash else None
        if app is None:
            return _too_many(blocked)
    else:
        app = await ctx.app_keys.find_by_api_key_hash(key_hash) if key_hash else None
    if app is None:
        if key_hash:
            limiter.auth_failed(client, "app", key_hash)
        return _error(ErrorCode.UNAUTHORIZED, status=401)
    if not app.status:
        return _error(ErrorCode.PERMISSION_DENIED, "application is disabled", status=403)
    if method == "batch":
        return await _batch(ctx, app, body)
    command = decode_command(method, body)
    refused = await _admit(ctx, app, command.cost(ctx.settings.max_broadcast_channels), method)
    if refused is not None:
        return refused
    try:
        return _json(await run_command(ctx, app, command))
    except x.ApiError as exc:
        if exc.code == ErrorCode.METHOD_NOT_FOUND and exc is command.error:
            return _error(exc.code, exc.message, 404)  # no such API method (not an rpc's 104)
        return _error(exc.code, exc.message, 400 if isinstance(exc, MalformedRequest) else 200)
    except Exception as exc:
        log.warning("server API %s failed: %s", method, type(exc).__name__)
        return _error(ErrorCode.INTERNAL, status=500)


async def _admit(ctx: ServerContext, app: Application, cost: int, what: str) -> EngineAnswer | None:
    """Count `cost` units against the app's rate limit, all or none; the refusal if not."""
    if cost > app.rate_limit:
        # It could never fit: a 429 would only invite retrying forever. One unit is counted,
        # so refused requests still count as requests.
        limited = await ctx.limiter.hit_app(app)
        if limited is not None:
            return _too_many(limited)
        return _error(
            ErrorCode.LIMIT_EXCEEDED,
            f"{what} needs {cost} units (publishes or commands), over the app's rate_limit of "
            f"{app.rate_limit} per minute",
        )
    limited = await ctx.limiter.hit_app(app, cost=cost)
    return _too_many(limited) if limited is not None else None


async def _batch(ctx: ServerContext, app: Application, body: bytes) -> EngineAnswer:
    try:
        req = _batch_decoder.decode(body or b"{}")
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        refused = await _admit(ctx, app, 1, "this batch")
        return refused or _error(ErrorCode.BAD_REQUEST, f"bad request: {exc}", 400)
    cap = ctx.settings.max_batch_commands
    work = len(req.commands)
    commands: list[Command] = []
    if work <= cap:  # else refused below, before decoding what will never run
        for raw in req.commands:
            if len(raw) != 1:
                commands.append(
                    Command("", error=x.ApiError(ErrorCode.BAD_REQUEST, "one method per command"))
                )
                continue
            ((method, params),) = raw.items()
            commands.append(decode_command(method, bytes(params)))
        broadcast_cap = ctx.settings.max_broadcast_channels
        work = sum(command.cost(broadcast_cap) for command in commands)
    if work > cap:
        refused = await _admit(ctx, app, 1, "this batch")
        return refused or _error(
            ErrorCode.LIMIT_EXCEEDED,
            f"batch too large: {work} commands and broadcast channels, at most {cap} per batch",
        )
    refused = await _admit(ctx, app, max(1, work), "this batch")
    if refused is not None:
        return refused
    replies: list[dict[str, Any]] = []
    for command in commands:
        try:
            reply = await run_command(ctx, app, command)
            replies.append({command.method: reply["result"]})
        except x.ApiError as exc:
            replies.append({"error": {"code": int(exc.code), "message": exc.message}})
        except Exception as exc:
            log.warning("server API %s failed in a batch: %s", command.method, type(exc).__name__)
            replies.append({"error": {"code": int(ErrorCode.INTERNAL), "message": _INTERNAL}})
    return _json({"replies": replies})


def _response(a: EngineAnswer) -> Response:
    return Response(a.body, a.status, a.headers, media_type="application/json")


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else ""


def create_engine_router(ctx: ServerContext) -> APIRouter:
    """The documented routes (OpenAPI). In a running server `api.server.engine_http` answers these
    paths before FastAPI sees them; the routes answer the same way, through `answer`."""
    router = APIRouter(
        prefix=PREFIX,
        tags=["engine server API (Centrifugo)"],
        route_class=surface_route(server_error),
    )

    @router.post("/batch", summary="Run several methods in one request")
    async def batch(request: Request) -> Response:
        body = await request.body()
        key = api_key_from(request.headers)
        return _response(await answer(ctx, "batch", key, body, _client(request)))

    @router.post("/{method}", summary="Run one server API method (publish, presence, ...)")
    async def call(method: str, request: Request) -> Response:
        body = await request.body()
        key = api_key_from(request.headers)
        return _response(await answer(ctx, method, key, body, _client(request)))

    return router
