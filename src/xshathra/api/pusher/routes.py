"""The Pusher HTTP API's routes. Each request is authenticated by Pusher's signed query
(`api.pusher.auth`), counted against the app's `rate_limit`, and answered as Pusher does:
JSON on success, a plain-text message with the status on error.

Bodies are read raw (the signature covers their MD5) and decoded here, not by FastAPI.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from fastapi import APIRouter, Request, Response

from xshathra.api.context import ServerContext
from xshathra.api.errors import surface_route
from xshathra.api.pusher import PREFIX
from xshathra.api.pusher.auth import PusherAuthError, replay_mark, verify
from xshathra.api.pusher.errors import error_text, pusher_error
from xshathra.protocol import pusher as p
from xshathra.pusher.channels import ChannelState, EventRequest, PusherRequestError
from xshathra.tenancy.apps import Application

log = logging.getLogger("xshathra.api.pusher")
_encoder = msgspec.json.Encoder()


class _EventBody(msgspec.Struct, kw_only=True):
    name: str
    # A string as Pusher's libraries send it; any other JSON is taken as its JSON text.
    data: msgspec.Raw = msgspec.Raw(b'""')
    channels: list[str] | None = None
    channel: str | None = None
    socket_id: str | None = None
    info: str | None = None


class _BatchBody(msgspec.Struct, kw_only=True):
    batch: list[_EventBody]


_event_decoder = msgspec.json.Decoder(_EventBody)
_batch_decoder = msgspec.json.Decoder(_BatchBody)


def _json(body: Any) -> Response:
    return Response(_encoder.encode(body), media_type="application/json")


def _event(body: _EventBody) -> EventRequest:
    raw = bytes(body.data)
    data = msgspec.json.decode(raw) if raw[:1] == b'"' else raw.decode()
    channels = list(body.channels or [])
    if body.channel is not None:
        channels.append(body.channel)
    return EventRequest(name=body.name, data=data, channels=channels, socket_id=body.socket_id)


def _wanted(info: str | None) -> set[str]:
    return {part.strip() for part in (info or "").split(",") if part.strip()}


def _state(state: ChannelState, wanted: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "subscription_count" in wanted:
        out["subscription_count"] = state.subscription_count
    if "user_count" in wanted and state.user_count is not None:
        out["user_count"] = state.user_count
    return out


def create_pusher_router(ctx: ServerContext) -> APIRouter:
    root = APIRouter(route_class=surface_route(pusher_error), tags=["pusher"])
    router = APIRouter(prefix=PREFIX, route_class=surface_route(pusher_error), tags=["pusher"])
    channels = ctx.pusher

    async def authenticated(request: Request, app_id: str | None, body: bytes) -> Application:
        params = dict(request.query_params)
        if app_id is None:  # a path without the app: the signed auth_key names it
            app = await ctx.db.apps.find_by_client_key(params.get("auth_key", ""))
        else:
            app = await ctx.app_keys.get_app(app_id)
        app = verify(app, request.method, request.url.path, params, body)
        mark = replay_mark(app, request.method, params)
        if mark is not None and not await ctx.limiter.first_use(*mark):
            raise PusherAuthError(401, "Replayed request: this signature was already used")
        retry_after = await ctx.limiter.hit_app(app)
        if retry_after is not None:
            raise PusherAuthError(
                429, f"Rate limit exceeded: retry after {retry_after} s", retry_after
            )
        return app

    async def answer(request: Request, app_id: str | None, work: Any) -> Response:
        """Authenticate, run `work(app, body)`, and answer Pusher's way."""
        body = await request.body()
        try:
            app = await authenticated(request, app_id, body)
            return _json(await work(app, body))
        except PusherAuthError as exc:
            headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
            return error_text(exc.status, exc.message, headers)
        except PusherRequestError as exc:
            return error_text(exc.status, exc.message)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            return error_text(400, f"Invalid JSON body: {str(exc)[:200]}")

    @router.post("/{app_id}/events", summary="Trigger an event (Pusher)")
    async def events(app_id: str, request: Request) -> Response:
        async def work(app: Application, body: bytes) -> Any:
            parsed = _event_decoder.decode(body)
            event = _event(parsed)
            refs = channels.check_event(app, event)
            await channels.trigger(app, event, refs)
            wanted = _wanted(parsed.info)
            if not wanted:
                return {}
            return {
                "channels": {
                    name: _state(await channels.channel(app, name), wanted)
                    for name in event.channels
                }
            }

        return await answer(request, app_id, work)

    @router.post("/{app_id}/batch_events", summary="Trigger several events (Pusher)")
    async def batch_events(app_id: str, request: Request) -> Response:
        async def work(app: Application, body: bytes) -> Any:
            batch = _batch_decoder.decode(body).batch
            if len(batch) > p.MAX_BATCH_EVENTS:
                raise PusherRequestError(400, f"At most {p.MAX_BATCH_EVENTS} events per batch")
            events = [_event(item) for item in batch]
            for event in events:
                if len(event.channels) != 1:
                    raise PusherRequestError(400, "Each batch event names one channel")
            checked = [channels.check_event(app, event) for event in events]  # all, then publish
            for event, refs in zip(events, checked, strict=True):
                await channels.trigger(app, event, refs)
            if not any(item.info for item in batch):
                return {}
            return {
                "batch": [
                    _state(await channels.channel(app, event.channels[0]), _wanted(item.info))
                    for item, event in zip(batch, events, strict=True)
                ]
            }

        return await answer(request, app_id, work)

    @router.get("/{app_id}/channels", summary="Occupied channels (Pusher)")
    async def list_channels(app_id: str, request: Request) -> Response:
        async def work(app: Application, body: bytes) -> Any:
            prefix = request.query_params.get("filter_by_prefix", "")
            wanted = _wanted(request.query_params.get("info"))
            if "user_count" in wanted and not prefix.startswith(p.PRESENCE_PREFIX):
                raise PusherRequestError(
                    400, "info=user_count needs filter_by_prefix=presence- (presence channels)"
                )
            found = await channels.channels(app, prefix)
            return {"channels": {name: _state(state, wanted) for name, state in found.items()}}

        return await answer(request, app_id, work)

    @router.get("/{app_id}/channels/{channel_name}", summary="One channel (Pusher)")
    async def one_channel(app_id: str, channel_name: str, request: Request) -> Response:
        async def work(app: Application, body: bytes) -> Any:
            wanted = _wanted(request.query_params.get("info"))
            if "user_count" in wanted and not p.is_presence(channel_name):
                raise PusherRequestError(400, "info=user_count is for presence channels")
            state = await channels.channel(app, channel_name)
            return {"occupied": state.occupied, **_state(state, wanted)}

        return await answer(request, app_id, work)

    @router.get("/{app_id}/channels/{channel_name}/users", summary="Presence users (Pusher)")
    async def users(app_id: str, channel_name: str, request: Request) -> Response:
        async def work(app: Application, body: bytes) -> Any:
            return {"users": [{"id": uid} for uid in await channels.users(app, channel_name)]}

        return await answer(request, app_id, work)

    async def terminate_user(request: Request, app_id: str | None, user_id: str) -> Response:
        async def work(app: Application, body: bytes) -> Any:
            await channels.terminate(app, user_id)
            return {}

        return await answer(request, app_id, work)

    @router.post(
        "/{app_id}/users/{user_id}/terminate_connections",
        summary="Close a user's connections (Pusher)",
    )
    async def terminate(app_id: str, user_id: str, request: Request) -> Response:
        return await terminate_user(request, app_id, user_id)

    # The `pusher` PyPI library (3.3.4) sends this request without `/apps/{app_id}`: the app is
    # then the one whose key signed it.
    @root.post(
        "/users/{user_id}/terminate_connections",
        summary="Close a user's connections (Pusher, app named by auth_key)",
    )
    async def terminate_by_key(user_id: str, request: Request) -> Response:
        return await terminate_user(request, None, user_id)

    root.include_router(router)
    return root
