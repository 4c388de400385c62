"""HTTP errors in the shape each surface documents, and the handlers that enforce them.

Seed-000 endpoints answer `{"success": false, "error": "..."}`, seed-001 endpoints
(`/api/realtime/*`) answer `{"error": "..."}`. No stack trace, internal detail or secret ever
reaches a client.
"""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xshathra.protocol.codes import ErrorCode

log = logging.getLogger("xshathra.api")


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


# Centrifugo error codes for answers the engine API's own handlers never reach (413, 404...).
_ENGINE_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.PERMISSION_DENIED,
    404: ErrorCode.METHOD_NOT_FOUND,
    405: ErrorCode.METHOD_NOT_FOUND,
    413: ErrorCode.LIMIT_EXCEEDED,
    429: ErrorCode.TOO_MANY_REQUESTS,
}


def error_body(
    path: str, message: str, extra: dict[str, Any] | None = None, *, status: int = 400
) -> dict[str, Any]:
    """The error object of the surface `path` belongs to: seed 001 under `/api/realtime/`,
    Centrifugo's under `/realtime/api/`, seed 000 everywhere else."""
    body: dict[str, Any]
    if path.startswith("/api/realtime/"):
        body = {"error": message}
    elif path.startswith("/realtime/api/"):
        code = _ENGINE_CODES.get(status, ErrorCode.INTERNAL)
        body = {"error": {"code": int(code), "message": message}}
    else:
        body = {"success": False, "error": message}
    body.update(extra or {})
    return body


def error_response(
    request: Request,
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(request.url.path, message, extra, status=status),
        status_code=status,
        headers=headers,
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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HttpError)
    async def _http_error(request: Request, exc: HttpError) -> Response:
        return error_response(request, exc.status, exc.message, exc.headers, exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return error_response(request, 400, validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _starlette(request: Request, exc: StarletteHTTPException) -> Response:
        message = {404: "not found", 405: "method not allowed", 413: TOO_LARGE}.get(exc.status_code)
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            message = "invalid JSON body"  # FastAPI's words for JSON it could not load
        return error_response(
            request, exc.status_code, message or str(exc.detail), dict(exc.headers or {})
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Reached only by errors outside the routes (in an outer middleware).
        log_unexpected(request.method, request.url.path, exc)
        return error_response(request, 500, INTERNAL)


INTERNAL = "internal server error"


def log_unexpected(method: str, path: str, exc: BaseException) -> None:
    """Where it failed (type and frames), never the message: messages of driver errors can
    carry SQL parameters, hence secrets."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unhandled %s on %s %s\n%s", type(exc).__name__, method, path, frames.rstrip())


class CatchAllMiddleware:
    """Answer any exception a route lets escape with a generic 500 in the surface's shape, and
    keep it from reaching the server's own error log (whose traceback would include the
    exception's message). Installed innermost, just outside the exception handlers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
            body = json.dumps(error_body(path, INTERNAL, status=500)).encode()
            await _send_json(send, 500, body)


def install_error_handling(app: FastAPI, *, max_body: int) -> None:
    """Every piece that shapes errors: the handlers, the catch-all, the body limit."""
    install_error_handlers(app)
    app.add_middleware(CatchAllMiddleware)  # added first: innermost of the middlewares
    app.add_middleware(BodyLimitMiddleware, limit=max_body)


class BodyLimitMiddleware:
    """Refuse request bodies over `limit` bytes with 413, whether or not Content-Length says so,
    without reading more than the limit into memory.

    A streamed (chunked) body that grows past the limit raises `HTTPException(413)` from
    `receive`: FastAPI re-raises HTTP exceptions met while reading a body (anything else
    would become a 400), so the surface's own error shape answers it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _too_large(path, send)
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
            await _too_large(path, send)


TOO_LARGE = "request body too large"


async def _too_large(path: str, send: Send) -> None:
    body = json.dumps(error_body(path, TOO_LARGE, status=413)).encode()
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
