"""The server API's hot path: `POST /realtime/api/<method>` answered as a bare ASGI app.

Backends publish through this path thousands of times a second. Through FastAPI, each request
crossed about fifteen layers (middlewares, routing, dependency solving) before reaching the
handler: some 300 µs of CPU per publish on a benchmark machine, of which the publish itself
was a small part. Here a request costs one header scan, one body read and the handler.

The answers are the same as the documented FastAPI routes', because both call
`api.server.routes.answer`; this module only adds what the FastAPI stack gave those routes: the
request body limit (413 in Centrifugo's error shape), a generic 500 for an unexpected error
(logged without its message, which may carry secrets), and the per-route request counter of
`/metrics`.
"""

from __future__ import annotations

import json

from starlette.types import Receive, Scope, Send

from xshathra.api.context import ServerContext
from xshathra.api.errors import INTERNAL, TOO_LARGE, format_error, log_unexpected
from xshathra.api.server import PREFIX as SURFACE_PREFIX
from xshathra.api.server.errors import server_error
from xshathra.api.server.routes import EngineAnswer, answer, api_key_from
from xshathra.observability.metrics import HttpStats

PREFIX = SURFACE_PREFIX + "/"
# The route templates of the FastAPI routes, so /metrics counts both paths alike.
BATCH_ROUTE, METHOD_ROUTE = PREFIX + "batch", PREFIX + "{method}"
WANTED_HEADERS = frozenset({b"x-api-key", b"authorization", b"content-length"})
JSON_TYPE = (b"content-type", b"application/json")


def handles(scope: Scope) -> bool:
    """POST to one method's path; anything else (GET, deeper paths) goes to FastAPI."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    path: str = scope["path"]
    return path.startswith(PREFIX) and len(path) > len(PREFIX) and "/" not in path[len(PREFIX) :]


class EngineHttp:
    def __init__(self, ctx: ServerContext, stats: HttpStats) -> None:
        self._ctx = ctx
        self._stats = stats
        self._limit = ctx.settings.max_request_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method = path[len(PREFIX) :]
        reply = await self._reply(scope, receive, path, method)
        if reply is None:
            return  # the client went away before its request was whole
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    JSON_TYPE,
                    (b"content-length", str(len(reply.body)).encode()),
                    *((k.lower().encode(), v.encode()) for k, v in (reply.headers or {}).items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})
        self._stats.add(BATCH_ROUTE if method == "batch" else METHOD_ROUTE, "POST", reply.status)

    async def _reply(
        self, scope: Scope, receive: Receive, path: str, method: str
    ) -> EngineAnswer | None:
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name in WANTED_HEADERS:
                headers[name.decode("latin-1")] = value.decode("latin-1")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._limit:
            return _error(TOO_LARGE, 413)
        try:
            body = await self._body(receive)
        except BodyTooLarge:
            return _error(TOO_LARGE, 413)
        if body is None:
            return None
        try:
            client = scope.get("client")
            address = str(client[0]) if client else ""
            return await answer(self._ctx, method, api_key_from(headers), body, address)
        except Exception as exc:
            log_unexpected("POST", path, exc)
            return _error(INTERNAL, 500)

    async def _body(self, receive: Receive) -> bytes | None:
        """The whole body, or None if the client disconnects first. Raises `BodyTooLarge` as
        soon as it passes the limit: a chunked body need not say its length up front."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class BodyTooLarge(Exception):
    pass


def _error(message: str, status: int) -> EngineAnswer:
    """Errors the handlers never see, in the server API's own error shape."""
    return EngineAnswer(
        status, json.dumps(format_error(server_error, message, status=status)).encode()
    )
