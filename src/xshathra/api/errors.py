"""HTTP errors: the exception routes raise, and the handlers that answer it in the shape of the
surface it belongs to. No stack trace, internal detail or secret ever reaches a client.

Each surface (`api.apps`, `api.realtime`, `api.server`) declares its own `ErrorFormat`, and its
router answers every error of its routes in it (`surface_route`). A request that reaches no
surface's route (an unknown path, a body refused before routing, a crash in a middleware) is
answered in the format `ErrorsFor` picks for its path, from the prefixes the surfaces declare.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("xshathra.api")

ErrorFormat = Callable[[str, int], dict[str, Any]]
"""A surface's error object for (message, HTTP status); `extra` fields are added to it."""

ErrorsFor = Callable[[str], ErrorFormat]
"""The error format for a request path that no surface's route answered."""


class HttpError(Exception):
    """An error answered to the client as-is, in the surface's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.extra = extra or {}


def format_error(
    errors: ErrorFormat, message: str, extra: dict[str, Any] | None = None, *, status: int = 400
) -> dict[str, Any]:
    """The error object in format `errors`, with `extra` fields (`retry_after`) added."""
    body = errors(message, status)
    body.update(extra or {})
    return body


def error_response(
    errors: ErrorFormat,
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    return JSONResponse(
        format_error(errors, message, extra, status=status), status_code=status, headers=headers
    )


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "dict_type": "an object",
    "list_type": "an array",
    "model_type": "an object",
    "float_type": "a number",
    "model_attributes_type": "an object",
}


def validation_message(exc: RequestValidationError) -> str:
    """The first problem, in words a person reads: "room is required", "ttlSeconds must be…"."""
    for err in exc.errors():
        kind = str(err.get("type", ""))
        loc = tuple(err.get("loc", ()))
        name = _field(loc)
        if kind == "json_invalid":
            return "invalid JSON body"
        if kind == "missing":
            return "request body is required" if name == "body" else f"{name} is required"
        if kind in _TYPE_WORDS:
            if name == "body":
                return "request body must be a JSON object"
            return f"{name} must be {_TYPE_WORDS[kind]}"
        if kind == "extra_forbidden":
            return f"{name} is not a known field"
        bounds = err.get("ctx") or {}
        if kind == "greater_than_equal":
            return f"{name} must be at least {bounds.get('ge')}"
        if kind == "less_than_equal":
            return f"{name} must be at most {bounds.get('le')}"
        msg = str(err.get("msg", "invalid value"))
        msg = msg.removeprefix("Value error, ")
        return f"{name}: {msg}" if name != "body" else msg
    return "invalid request"


INTERNAL = "internal server error"
TOO_LARGE = "request body too large"


def http_exception_message(exc: StarletteHTTPException) -> str:
    """Words for the framework's own HTTP exceptions (no route, no method, a body too large)."""
    message = {404: "not found", 405: "method not allowed", 413: TOO_LARGE}.get(exc.status_code)
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        message = "invalid JSON body"  # FastAPI's words for JSON it could not load
    return message or str(exc.detail)


def surface_route(errors: ErrorFormat) -> type[APIRoute]:
    """The route class of a surface's router: every error of its routes (raised `HttpError`,
    a body that fails validation, a body over the limit, a wrong method, a crash) is answered
    in `errors`, the surface's own format. `APIRouter(route_class=surface_route(...))`."""

    class SurfaceRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def answer(request: Request) -> Response:
                try:
                    return await handler(request)
                except HttpError as exc:
                    return error_response(errors, exc.status, exc.message, exc.headers, exc.extra)
                except RequestValidationError as exc:
                    return error_response(errors, 400, validation_message(exc))
                except StarletteHTTPException as exc:
                    message = http_exception_message(exc)
                    return error_response(errors, exc.status_code, message, dict(exc.headers or {}))
                except Exception as exc:
                    log_unexpected(request.method, request.url.path, exc)
                    return error_response(errors, 500, INTERNAL)

            return answer

        async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await super().handle(scope, receive, send)
            except StarletteHTTPException as exc:
                if exc.status_code != 405:  # the path is this route's, the method is not
                    raise
                headers = dict(exc.headers or {})
                await error_response(errors, 405, http_exception_message(exc), headers)(
                    scope, receive, send
                )

    return SurfaceRoute


def install_error_handlers(app: FastAPI, errors_for: ErrorsFor) -> None:
    """Handlers for errors outside the surfaces' routes, in the format of the path's surface."""

    def respond(
        request: Request,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Response:
        return error_response(errors_for(request.url.path), status, message, headers, extra)

    @app.exception_handler(HttpError)
    async def _http_error(request: Request, exc: HttpError) -> Response:
        return respond(request, exc.status, exc.message, exc.headers, exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return respond(request, 400, validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _starlette(request: Request, exc: StarletteHTTPException) -> Response:
        message = http_exception_message(exc)
        return respond(request, exc.status_code, message, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Reached only by errors outside the routes (in an outer middleware).
        log_unexpected(request.method, request.url.path, exc)
        return respond(request, 500, INTERNAL)


def log_unexpected(method: str, path: str, exc: BaseException) -> None:
    """Where it failed (type and frames), never the message: messages of driver errors can
    carry SQL parameters, hence secrets."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unhandled %s on %s %s\n%s", type(exc).__name__, method, path, frames.rstrip())


class CatchAllMiddleware:
    """Answer any exception that escapes with a generic 500 in the surface's shape, and keep it
    from reaching the server's own error log (whose traceback would include the exception's
    message). Installed innermost, just outside the exception handlers."""

    def __init__(self, app: ASGIApp, errors_for: ErrorsFor) -> None:
        self.app = app
        self.errors_for = errors_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            path = str(scope.get("path", ""))
            log_unexpected(str(scope.get("method", "")), path, exc)
            if started:
                raise
            body = json.dumps(format_error(self.errors_for(path), INTERNAL, status=500)).encode()
            await _send_json(send, 500, body)


def install_error_handling(app: FastAPI, *, max_body: int, errors_for: ErrorsFor) -> None:
    """Every piece that shapes errors outside the surfaces' routes: the handlers, the
    catch-all, the body limit; `errors_for` picks the format by path."""
    install_error_handlers(app, errors_for)
    # added first: innermost of the middlewares
    app.add_middleware(CatchAllMiddleware, errors_for=errors_for)
    app.add_middleware(BodyLimitMiddleware, limit=max_body, errors_for=errors_for)


class BodyLimitMiddleware:
    """Refuse request bodies over `limit` bytes with 413, whether or not Content-Length says so,
    without reading more than the limit into memory.

    A streamed (chunked) body that grows past the limit raises `HTTPException(413)` from
    `receive`: FastAPI re-raises HTTP exceptions met while reading a body (anything else
    would become a 400), so the surface's own error shape answers it."""

    def __init__(self, app: ASGIApp, limit: int, errors_for: ErrorsFor) -> None:
        self.app = app
        self.limit = limit
        self.errors_for = errors_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._too_large(path, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise StarletteHTTPException(413, TOO_LARGE)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except StarletteHTTPException as exc:
            # Only if the body was read outside FastAPI's exception handling.
            if exc.status_code != 413 or started:
                raise
            await self._too_large(path, send)

    async def _too_large(self, path: str, send: Send) -> None:
        body = json.dumps(format_error(self.errors_for(path), TOO_LARGE, status=413)).encode()
        await _send_json(send, 413, body)


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
