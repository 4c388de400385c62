"""The FastAPI application for every HTTP surface except the engine's WebSocket: it gathers the
surfaces' routers, their error formats (for requests no route answers) and the docs."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from xshathra import __version__
from xshathra.api import errors, realtime, server
from xshathra.api.apps.errors import apps_error
from xshathra.api.apps.routes import create_apps_router
from xshathra.api.context import ServerContext
from xshathra.api.docs import install_docs
from xshathra.api.executor import ApiError, Executor, PublishRequest
from xshathra.api.pusher import PREFIX as PUSHER_PREFIX
from xshathra.api.pusher.errors import pusher_error
from xshathra.api.pusher.routes import create_pusher_router
from xshathra.api.realtime.errors import realtime_error
from xshathra.api.realtime.routes import create_realtime_router
from xshathra.api.server.errors import server_error
from xshathra.api.server.routes import create_engine_router
from xshathra.dashboard import create_dashboard
from xshathra.dashboard.projects import PublishRefused
from xshathra.tenancy.apps import Application

# Where each surface lives, for the requests that reach none of its routes (an unknown path, a
# body refused before routing). Every other path, `/api/...` included, answers as seed 000.
SURFACE_ERRORS: tuple[tuple[str, errors.ErrorFormat], ...] = (
    (realtime.PREFIX + "/", realtime_error),
    (server.PREFIX + "/", server_error),
    (PUSHER_PREFIX + "/", pusher_error),
)


def errors_for(path: str) -> errors.ErrorFormat:
    """The error format of the surface `path` belongs to; seed 000's for any other path."""
    for prefix, shape in SURFACE_ERRORS:
        if path.startswith(prefix):
            return shape
    return apps_error


def error_body(
    path: str, message: str, extra: dict[str, Any] | None = None, *, status: int = 400
) -> dict[str, Any]:
    """The error object a request to `path` gets when no surface's route answers it."""
    return errors.format_error(errors_for(path), message, extra, status=status)


def install_error_handling(app: FastAPI, *, max_body: int) -> None:
    """The handlers, catch-all and body limit for errors outside the surfaces' routes."""
    errors.install_error_handling(app, max_body=max_body, errors_for=errors_for)


def create_http_app(ctx: ServerContext) -> FastAPI:
    """Every HTTP route, its error shapes and the docs, over one `ServerContext`.

    Build it once the context's node has started (it has no lifespan of its own) and serve it
    as the ASGI app for HTTP; middlewares added later by the caller wrap these ones."""
    app = FastAPI(
        title="Xshathra",
        version=__version__,
        description=(
            "Multi-tenant realtime messaging: the apps API (seed 000), the realtime API "
            "(seed 001) and the Centrifugo-compatible engine API under /realtime/api."
        ),
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    install_error_handling(app, max_body=ctx.settings.max_request_body)
    install_docs(app)
    app.include_router(create_apps_router(ctx))
    app.include_router(create_realtime_router(ctx))
    app.include_router(create_engine_router(ctx))
    app.include_router(create_pusher_router(ctx))
    install_dashboard(app, ctx)
    return app


class ConsolePublisher:
    """The live console's test messages, published as the server API publishes (the same
    executor, checks and analytics), for the project the member opened."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    async def publish(self, app: Application, channel: str, data: bytes) -> int:
        try:
            outcome = await self._executor.publish(
                app,
                PublishRequest(channel=channel, data=msgspec.Raw(data)),
                origin="api",
                count_subscribers=True,
            )
        except ApiError as exc:
            raise PublishRefused(f"The channel was refused: {exc.message}.") from None
        return outcome.subscriber_count


def install_dashboard(app: FastAPI, ctx: ServerContext) -> None:
    """The dashboard at /dashboard (its own pages, errors and headers); `/` leads there."""
    dashboard = create_dashboard(
        ctx.accounts,
        ctx.apps,
        session_ttl=ctx.settings.dashboard_session_ttl,
        tokens=ctx.tokens,
        analytics=ctx.analytics,
        publisher=ConsolePublisher(ctx.executor),
        public_url=ctx.settings.public_url,
        lifecycle=ctx.executor.node,
    )

    async def to_dashboard(request: Request) -> Response:
        return RedirectResponse("/dashboard", status_code=302)

    app.add_route("/", to_dashboard, methods=["GET"], include_in_schema=False)
    app.add_route("/dashboard", dashboard.index, methods=["GET"], include_in_schema=False)
    app.mount("/dashboard", dashboard.app)
