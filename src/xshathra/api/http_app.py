"""The FastAPI application for every HTTP surface except the engine's WebSocket."""

from __future__ import annotations

from fastapi import FastAPI

from xshathra import __version__
from xshathra.api.context import ServerContext
from xshathra.api.docs import install_docs
from xshathra.api.errors import install_error_handling
from xshathra.api.routes_apps import create_apps_router
from xshathra.api.routes_engine import create_engine_router
from xshathra.api.routes_realtime import create_realtime_router


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
    return app
