"""HTTP errors in the shape each surface documents, and the handlers that enforce them.

Seed-000 endpoints answer `{"success": false, "error": "..."}`, seed-001 endpoints
(`/api/realtime/*`) answer `{"error": "..."}`. No stack trace, internal detail or secret ever
reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


def error_body(path: str, message: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    if path.startswith("/api/realtime/"):
        body: dict[str, Any] = {"error": message}
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
        error_body(request.url.path, message, extra), status_code=status, headers=headers
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
        message = {404: "not found", 405: "method not allowed"}.get(exc.status_code)
        return error_response(
            request, exc.status_code, message or str(exc.detail), dict(exc.headers or {})
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error(
            "unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__
        )
        return error_response(request, 500, "internal server error")


class BodyLimitMiddleware:
    """Refuse request bodies over `limit` bytes with 413, whether or not Content-Length says so,
    without reading more than the limit into memory."""

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
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _too_large(path, send)
        except Exception:
            if too_large:
                await _too_large(path, send)
            else:
                raise


class _BodyTooLarge(Exception):
    pass


async def _too_large(path: str, send: Send) -> None:
    import json

    body = json.dumps(error_body(path, "request body too large")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
