"""An application backend answering Xshathra's proxy requests in Centrifugo's format, for
tests: a real HTTP server (Starlette under uvicorn) on a loopback port, in the test's event
loop. Each path has a
handler the test sets (request body -> (status, reply body, delay)); every request is recorded
with its headers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Json = dict[str, Any]
Answer = tuple[int, Json, float]  # HTTP status, body, seconds to wait before answering
Handler = Callable[[Json], Answer]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> Json:
        parsed: Json = json.loads(self.raw)
        return parsed


@dataclass
class ProxyBackend:
    url: str = ""
    handlers: dict[str, Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on(self, path: str, handler: Handler) -> str:
        """Answer `path` with `handler`; returns the endpoint URL."""
        self.handlers[path] = handler
        return self.url + path

    def requests(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    async def wait_for(self, path: str, count: int = 1, timeout: float = 10.0) -> list[Seen]:
        async def loop() -> list[Seen]:
            while len(self.requests(path)) < count:
                self.changed.clear()
                await self.changed.wait()
            return self.requests(path)

        return await asyncio.wait_for(loop(), timeout)

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        path = request.url.path
        self.seen.append(Seen(path, dict(request.headers.items()), raw))
        self.changed.set()
        handler = self.handlers.get(path)
        if handler is None:
            return Response(status_code=404)
        status, body, delay = handler(json.loads(raw))
        if delay:  # the slow backend being simulated; `in_flight` counts those waiting
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                await asyncio.sleep(delay)
            finally:
                self.in_flight -= 1
        return JSONResponse(body, status_code=status)


@asynccontextmanager
async def proxy_backend() -> AsyncIterator[ProxyBackend]:
    backend = ProxyBackend()
    app = Starlette(routes=[Route("/{tail:path}", backend._handle, methods=["POST"])])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 (uvicorn has no event to await)
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        backend.url = f"http://127.0.0.1:{port}"
        yield backend
    finally:
        server.should_exit = True
        await task


def ok(result: Json, delay: float = 0.0) -> Answer:
    return 200, {"result": result}, delay
