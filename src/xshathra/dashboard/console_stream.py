"""The live console's app-wide stream: the project's lifecycle events (client connected and
disconnected, subscribed and unsubscribed, with channel, user, client id, transport and node)
from every node of the cluster, as Server-Sent Events on the dashboard's own origin.

The engine tells them through `Node.watch_lifecycle` (engine/lifecycle.py), which the
composition root hands here as a `LifecycleSource`; only this project's events reach this
stream. Any member may watch (viewers too: no key or secret is in an event).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from xshathra.dashboard.security import SECURITY_HEADERS

if TYPE_CHECKING:
    from xshathra.dashboard.projects import ProjectPages

# uvicorn's connection asks a held-open response to end as the server stops (see
# transports/http.py: BoundedHttpToolsProtocol.shutdown) through this key of the scope.
ON_SHUTDOWN_KEY = "xshathra.on_shutdown"
# Seconds between comments that keep proxies from closing an idle stream; the member's session
# and role are checked again each time.
KEEPALIVE = 10.0
QUEUE_MAX = 1000  # events waiting for a slow browser; past it they are dropped and counted


class AppEvent(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def client(self) -> str: ...
    @property
    def transport(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def node(self) -> str: ...
    @property
    def at(self) -> float: ...


class LifecycleSource(Protocol):
    """The engine's facade (`Node`), as far as the console needs it."""

    async def watch_lifecycle(
        self, app_id: str, listener: Callable[[AppEvent | None], None]
    ) -> Callable[[], None]: ...


def _frame(kind: str, data: dict[str, object]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class ConsoleStream:
    def __init__(self, pages: ProjectPages, source: LifecycleSource | None) -> None:
        self.pages = pages
        self.source = source

    def routes(self) -> list[Route]:
        return [Route("/projects/{app_id}/console/events", self.events, methods=["GET"])]

    async def _still_allowed(self, request: Request) -> bool:
        signed = await self.pages.d._signed(request)
        return signed is not None and await self.pages._find(request, signed) is not None

    async def events(self, request: Request) -> Response:
        opened = await self.pages._open(request)
        if isinstance(opened, Response):
            return opened
        _, project = opened
        if self.source is None:
            return JSONResponse({"error": "The live console is not available here."}, 503)
        queue: asyncio.Queue[AppEvent | None] = asyncio.Queue(QUEUE_MAX)
        dropped = 0

        def listener(event: AppEvent | None) -> None:
            nonlocal dropped
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                dropped += 1

        stop = await self.source.watch_lifecycle(project.app.app_id, listener)
        request.scope[ON_SHUTDOWN_KEY] = lambda: listener(None)

        async def stream() -> AsyncIterator[bytes]:
            nonlocal dropped
            try:
                yield b"retry: 3000\n\n" + _frame("ready", {"app_id": project.app.app_id})
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), KEEPALIVE)
                    except TimeoutError:
                        # Still signed in and still a member? A sign-out, a password change,
                        # a disabled account or a removed membership ends the stream here.
                        if not await self._still_allowed(request):
                            return
                        yield b": keep-alive\n\n"
                        continue
                    if event is None:  # the node stops: the browser reconnects elsewhere
                        return
                    if dropped:
                        yield _frame("dropped", {"count": dropped})
                        dropped = 0
                    yield _frame(
                        "lifecycle",
                        {
                            "kind": event.kind,
                            "user": event.user,
                            "client": event.client,
                            "transport": event.transport,
                            "channel": event.channel,
                            "node": event.node,
                            "at": event.at,
                        },
                    )
            finally:
                stop()

        headers = {
            **SECURITY_HEADERS,
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        }
        # `stop` in the background too: a browser gone before the first byte never starts
        # the generator, whose `finally` then never runs (calling it twice is harmless).
        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers=headers,
            background=BackgroundTask(stop),
        )
