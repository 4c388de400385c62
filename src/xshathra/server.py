"""Composition root: the only module that picks concrete backends (from the URLs in Settings),
bootstraps secrets, and wires the engine, the HTTP API and uvicorn together on one port.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import secrets
import sys
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from typing import Any, cast

import uvicorn
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from xshathra.accounts.service import AccountService, SignupPolicy
from xshathra.analytics.recorder import AnalyticsRecorder
from xshathra.api.context import ServerContext
from xshathra.api.executor import Executor
from xshathra.api.ratelimit import RateLimiter
from xshathra.api.server import engine_http
from xshathra.api.server.engine_http import EngineHttp
from xshathra.brokers import ClusterBroker
from xshathra.engine.node import Node
from xshathra.engine.options import EngineOptions
from xshathra.engine.proxy import ProxyCaller
from xshathra.observability.metrics import (
    CONTENT_TYPE,
    HttpMetricsMiddleware,
    HttpStats,
    build_registry,
    render,
)
from xshathra.observability.tracing import (
    TracedBroker,
    TracedProxyCaller,
    TracingMiddleware,
    setup_tracing,
    traced_call,
)
from xshathra.presence import PresenceStore
from xshathra.proxies.caller import HttpProxyCaller
from xshathra.pusher.channels import PusherChannels
from xshathra.ratelimit import WindowCounter
from xshathra.settings import Settings, proxy_entries
from xshathra.storage.database import Database, open_database
from xshathra.tenancy.appcache import AppKeyCache
from xshathra.tenancy.apps import hash_key
from xshathra.tenancy.jwks import JwksCache
from xshathra.tenancy.service import ApplicationService
from xshathra.tenancy.tokens import TokenService
from xshathra.transports.http import BoundedHttpToolsProtocol
from xshathra.transports.stream_routes import StreamEndpoints
from xshathra.transports.websocket import NODE_STATE_KEY, CentrifugeWebSocketProtocol
from xshathra.webhooks.dispatcher import WebhookDispatcher
from xshathra.webhooks.events import WebhookEvents

log = logging.getLogger("xshathra.server")


async def pusher_keys(db: Database, app_id: str) -> tuple[str, str] | None:
    """What Pusher-format webhooks are signed with: the app's key and secret, as stored now."""
    app = await db.apps.get_app(app_id)
    return (app.client_api_key, app.app_secret) if app is not None else None


HEALTH_TIMEOUT = 2.0
_ADMIN_HASH_KEY = "admin_api_key_hash"
_TOKEN_SECRET_KEY = "token_hmac_secret"


@dataclass
class Backends:
    broker: ClusterBroker
    presence: PresenceStore
    rate_limits: WindowCounter  # shared when the broker is shared


def make_backends(
    broker_url: str,
    prefix: str = "xs",
    presence_ttl: int = 60,
    node_id: str = "",
    history_max_bytes: tuple[int, int] = (256 << 20, 64 << 20),
) -> Backends:
    """Choose the broker, presence store and rate-limit storage from the broker URL's scheme.
    Backend modules are imported only when chosen."""
    scheme = broker_url.split("://", 1)[0].lower()
    if scheme == "memory":
        from xshathra.brokers.memory import MemoryBroker
        from xshathra.presence.memory import MemoryPresenceStore
        from xshathra.ratelimit.memory import MemoryWindowCounter

        # Budgets for history in this process (node, app); shared brokers bound it themselves.
        broker = MemoryBroker(
            max_bytes=history_max_bytes[0], max_bytes_per_app=history_max_bytes[1]
        )
        return Backends(broker, MemoryPresenceStore(), MemoryWindowCounter())
    if scheme in ("redis", "rediss"):
        from xshathra.brokers.redis import RedisBroker
        from xshathra.presence.redis import RedisPresenceStore
        from xshathra.ratelimit.redis import LimitsCounter

        return Backends(
            RedisBroker(broker_url, prefix=prefix, node_id=node_id),
            RedisPresenceStore(broker_url, prefix=prefix, ttl=presence_ttl),
            LimitsCounter("async+" + broker_url),
        )
    if scheme in ("nats", "tls"):
        from xshathra.brokers.nats import NatsBroker
        from xshathra.links.nats import NatsLink
        from xshathra.presence.nats import NatsPresenceStore
        from xshathra.ratelimit.nats import NatsWindowCounter

        link = NatsLink(broker_url, name=f"{prefix}.{node_id}")
        return Backends(
            NatsBroker(link, prefix=prefix, node_id=node_id),
            NatsPresenceStore(link, prefix=prefix, ttl=presence_ttl),
            NatsWindowCounter(link, prefix=prefix),
        )
    raise SystemExit(
        f"XSHATHRA_BROKER_URL: unsupported broker '{scheme}' (use memory://, redis:// or nats://)"
    )


def engine_options(settings: Settings) -> EngineOptions:
    """The part of the settings the engine (and the transports serving it) reads."""
    return EngineOptions(
        node_name=settings.node_name,
        max_message_size=settings.max_message_size,
        max_channels_per_connection=settings.max_channels_per_connection,
        max_connections_per_app=settings.max_connections_per_app,
        client_command_rate=settings.client_command_rate,
        client_command_burst=settings.client_command_burst,
        client_queue_max_bytes=settings.client_queue_max_bytes,
        max_history_reply_bytes=settings.max_history_reply_bytes,
        ping_interval=settings.ping_interval,
        presence_ttl=settings.presence_ttl,
        connect_timeout=settings.connect_timeout,
        expired_close_delay=settings.expired_close_delay,
        node_stats_interval=settings.node_stats_interval,
        cluster_query_timeout=settings.cluster_query_timeout,
        access_rules_ttl=settings.access_rules_ttl,
        pusher_signin_timeout=settings.pusher_signin_timeout,
        position_check_interval=settings.position_check_interval,
        max_header_bytes=settings.max_header_bytes,
        preconnect_max_bytes=settings.preconnect_max_bytes,
        websocket_compression=settings.websocket_compression,
        websocket_compression_level=settings.websocket_compression_level,
        websocket_compression_min_size=settings.websocket_compression_min_size,
    )


@dataclass
class Secrets:
    admin_key_hash: str
    token_secret: str
    generated_admin_key: str | None  # shown once, on the start that created it


MIN_SECRET_BYTES = 32


class WeakSecretError(ValueError):
    """A configured secret is too short to resist guessing; the message names the variable."""


def check_secret_strength(settings: Settings) -> None:
    """Refuse a configured admin key or token HMAC secret under MIN_SECRET_BYTES: anyone who
    guesses the admin key owns every tenant, and the HMAC secret signs every tenant's tokens.
    XSHATHRA_ALLOW_WEAK_SECRETS (development) turns the refusal into a warning. Neither names
    the value. Generated secrets are always long enough."""
    configured = (
        ("XSHATHRA_ADMIN_API_KEY", settings.admin_api_key),
        ("XSHATHRA_TOKEN_HMAC_SECRET", settings.token_hmac_secret),
        ("XSHATHRA_TOKEN_HMAC_PREVIOUS_SECRET", settings.token_hmac_previous_secret),
    )
    for variable, secret in configured:
        if secret is None or not secret.get_secret_value():
            continue
        size = len(secret.get_secret_value().encode())
        if size >= MIN_SECRET_BYTES:
            continue
        if not settings.allow_weak_secrets:
            raise WeakSecretError(
                f"{variable} is shorter than {MIN_SECRET_BYTES} bytes ({size}): use a random "
                f"secret of {MIN_SECRET_BYTES} bytes or more (or unset it to have one generated), "
                "or set XSHATHRA_ALLOW_WEAK_SECRETS=1 for development"
            )
        log.warning(
            "%s is shorter than %d bytes (%d): accepted because XSHATHRA_ALLOW_WEAK_SECRETS is "
            "set; never run like this in production",
            variable,
            MIN_SECRET_BYTES,
            size,
        )


async def bootstrap_secrets(settings: Settings, db: Database) -> Secrets:
    """Use configured secrets (refused when weak, see `check_secret_strength`), else the stored
    ones, else generate and store them (once, even when several nodes start together: the
    database keeps the first value written)."""
    check_secret_strength(settings)
    generated: str | None = None
    if settings.admin_api_key is not None and settings.admin_api_key.get_secret_value():
        admin_hash = hash_key(settings.admin_api_key.get_secret_value())
    else:
        stored = await db.server_state.get(_ADMIN_HASH_KEY)
        if stored is None:
            candidate = "xa_" + secrets.token_urlsafe(24)
            stored = await db.server_state.get_or_create(_ADMIN_HASH_KEY, hash_key(candidate))
            if stored == hash_key(candidate):
                generated = candidate
        admin_hash = stored
    if settings.token_hmac_secret is not None and settings.token_hmac_secret.get_secret_value():
        token_secret = settings.token_hmac_secret.get_secret_value()
    else:
        token_secret = await db.server_state.get_or_create(
            _TOKEN_SECRET_KEY, secrets.token_urlsafe(48)
        )
    return Secrets(admin_hash, token_secret, generated)


class Runtime:
    """Everything one running node holds; built in the ASGI lifespan, torn down after it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db: Database | None = None
        self.node: Node | None = None
        self.http: FastAPI | None = None
        self.engine_http: EngineHttp | None = None  # the server API's hot path, before FastAPI
        self.streams: StreamEndpoints | None = None  # SSE, HTTP streaming, emulation
        self.secrets: Secrets | None = None
        self.analytics: AnalyticsRecorder | None = None
        self.dispatcher: WebhookDispatcher | None = None
        self.proxy: HttpProxyCaller | None = None
        self.limiter: RateLimiter | None = None
        self.events: WebhookEvents | None = None
        self.jwks: JwksCache | None = None
        self.tracing: TracerProvider | None = None

    async def start(self) -> None:
        settings = self.settings
        self.db = db = await open_database(settings.database_url)
        self.secrets = sec = await bootstrap_secrets(settings, db)
        node_id = secrets.token_hex(8)
        backends = make_backends(
            settings.broker_url,
            settings.broker_prefix,
            settings.presence_ttl,
            node_id,
            (settings.history_max_bytes, settings.history_max_bytes_per_app),
        )
        previous = settings.token_hmac_previous_secret
        self.jwks = JwksCache(allow_private=settings.webhook_allow_private)
        # OpenTelemetry (when OTEL_EXPORTER_OTLP_ENDPOINT is set): broker calls, HTTP requests
        # and webhook deliveries get spans; nothing is wrapped otherwise.
        self.tracing = tracing = setup_tracing(node_id)
        if tracing is not None:
            backends.broker = cast(ClusterBroker, TracedBroker(backends.broker, tracing))
        tokens = TokenService(
            sec.token_secret,
            previous.get_secret_value() if previous is not None else None,
            jwks=self.jwks,
        )
        self.analytics = analytics = AnalyticsRecorder(db.analytics, node_id)
        self.dispatcher = dispatcher = WebhookDispatcher(
            db,
            node_id,
            allow_private=settings.webhook_allow_private,
            concurrency=settings.webhook_concurrency,
            per_app=settings.webhook_concurrency_per_app,
            timeout=settings.webhook_timeout,
            connect_timeout=settings.webhook_connect_timeout,
            retry_base=settings.webhook_retry_base,
            pusher_keys=functools.partial(pusher_keys, db),
            retention_days=settings.webhook_delivery_retention_days,
        )
        self.events = events = WebhookEvents(
            db,
            dispatcher,
            max_pending_per_app=settings.webhook_max_pending_per_app,
            leave_delay=settings.webhook_leave_delay,
        )
        if tracing is not None:
            # The dispatcher's one attempt is the unit a trace shows (retries are new spans).
            attempt = traced_call(tracing, "webhook.delivery")(dispatcher._attempt)
            dispatcher._attempt = attempt  # type: ignore[method-assign,assignment]
        allow_private = settings.proxy_allow_private
        self.proxy = proxy = HttpProxyCaller(
            allow_private=settings.webhook_allow_private
            if allow_private is None
            else allow_private,
            per_app=settings.proxy_concurrency_per_app,
        )
        # One app cache for the HTTP API and the engine's connects: a flood of connects (even
        # refused ones) must not cost a store read each (see tenancy/appcache.py).
        app_keys = AppKeyCache(db.apps)
        self.node = node = Node(
            options=engine_options(settings),
            broker=backends.broker,
            presence=backends.presence,
            apps=app_keys,
            tokens=tokens,
            analytics=analytics,
            events=events,
            # With tracing, each call to an app's backend is a `proxy.<kind>` span.
            proxy=cast(ProxyCaller, TracedProxyCaller(proxy, tracing)) if tracing else proxy,
            node_id=node_id,
            access=db.access,
        )
        # Held webhook leaves are matched across nodes over the control bus.
        events.bind_peers(node)
        await node.start()
        await analytics.start()
        await dispatcher.start()
        self.limiter = RateLimiter(
            backends.rate_limits,
            token_per_minute=settings.token_rate_limit,
            auth_failures_per_minute=settings.auth_failure_limit,
        )
        node.app_change_listeners.append(app_keys.forget_app)
        executor = Executor(node, max_broadcast_channels=settings.max_broadcast_channels)
        ctx = ServerContext(
            settings=settings,
            db=db,
            tokens=tokens,
            admin_key_hash=sec.admin_key_hash,
            executor=executor,
            analytics=analytics,
            limiter=self.limiter,
            app_keys=app_keys,
            # The executor tells this node and the others of every change (control bus).
            apps=ApplicationService(
                db.apps,
                db.webhooks,
                db.deliveries,
                executor,
                default_rate_limit=settings.default_app_rate_limit,
                key_rate_limit_ceiling=settings.app_rate_limit_ceiling,
                webhook_max_per_app=settings.webhook_max_per_app,
                webhook_allow_private=settings.webhook_allow_private,
                webhook_tester=dispatcher,
                members=db.members,
                proxy_allow_private=settings.proxy_allow_private,
            ),
            accounts=AccountService(
                db.accounts,
                signup=SignupPolicy(settings.signup),
                session_ttl=timedelta(seconds=settings.dashboard_session_ttl),
                invitation_ttl=timedelta(seconds=settings.invitation_ttl),
            ),
            pusher=PusherChannels(node),
        )
        http_stats = HttpStats()
        self.http = build_http_app(ctx, self, http_stats)
        self.engine_http = EngineHttp(ctx, http_stats)
        self.streams = StreamEndpoints(node, settings.max_message_size)

    async def stop(self) -> None:
        """Close clients first (their last events still count), then flush and disconnect."""
        if self.node is not None:
            await self.node.close()
        if self.events is not None:
            with contextlib.suppress(Exception):
                await self.events.flush()  # held leaves are reported, not lost
        if self.dispatcher is not None:
            await self.dispatcher.close()
        if self.proxy is not None:
            await self.proxy.close()
        if self.analytics is not None:
            await self.analytics.close()
        if self.limiter is not None:
            await self.limiter.close()
        if self.jwks is not None:
            await self.jwks.close()
        if self.tracing is not None:
            self.tracing.shutdown()  # exports the spans still batched
        if self.db is not None:
            await self.db.close()

    async def healthy(self) -> bool:
        if self.db is None or self.node is None:
            return False
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                await self.db.ping()
                await self.node.ping()
        except Exception:
            return False
        return True


def build_http_app(ctx: ServerContext, runtime: Runtime, http_stats: HttpStats) -> FastAPI:
    from xshathra.api.http_app import create_http_app

    app = create_http_app(ctx)
    assert runtime.node is not None and runtime.dispatcher is not None
    registry = build_registry(
        runtime.node,
        runtime.dispatcher,
        http_stats,
        runtime.proxy.stats if runtime.proxy is not None else None,
    )
    app.add_middleware(HttpMetricsMiddleware, stats=http_stats)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(render(registry), media_type=CONTENT_TYPE)

    @app.get("/realtime/health", tags=["engine"], summary="Liveness of this node")
    async def health() -> Response:
        ok = await runtime.healthy()
        return JSONResponse({}, status_code=200 if ok else 503)

    @app.get("/socket-auth-test.html", include_in_schema=False)
    async def socket_auth_test() -> Response:
        page = resources.files("xshathra.static").joinpath("socket-auth-test.html").read_bytes()
        return Response(page, media_type="text/html; charset=utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        if name not in {"socket-auth-test.js", "socket-auth-test.css"}:
            return JSONResponse({"error": "not found"}, status_code=404)
        body = resources.files("xshathra.static").joinpath(name).read_bytes()
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        return Response(body, media_type=f"{kind}; charset=utf-8")

    return app


class XshathraASGI:
    """The ASGI entry point: owns the lifespan (so the node exists before any request) and
    hands HTTP to the FastAPI app built at startup, except the server API's methods, which
    `EngineHttp` answers directly (see api.server.engine_http). WebSockets never reach it: uvicorn
    gives them to `CentrifugeWebSocketProtocol`."""

    def __init__(self, settings: Settings, *, banner: bool = True) -> None:
        self.runtime = Runtime(settings)
        self.banner = banner  # of several workers, one prints it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        http = self.runtime.http
        if http is None:
            await JSONResponse({"error": "starting"}, status_code=503)(scope, receive, send)
            return
        if self.runtime.tracing is not None and scope["type"] == "http":
            traced = TracingMiddleware(self._http_app, self.runtime.tracing)
            await traced(scope, receive, send)
            return
        await self._http_app(scope, receive, send)

    async def _http_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        http = self.runtime.http
        assert http is not None
        engine = self.runtime.engine_http
        if engine is not None and engine_http.handles(scope):
            await engine(scope, receive, send)
            return
        streams = self.runtime.streams
        if streams is not None and streams.handles(scope):
            await streams(scope, receive, send)  # type: ignore[arg-type]
            return
        await http(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.runtime.start()
                except BaseException as exc:
                    log.error("startup failed: %s", _safe(exc))
                    await send({"type": "lifespan.startup.failed", "message": _safe(exc)})
                    return
                state: dict[str, Any] | None = scope.get("state")
                if state is not None:
                    state[NODE_STATE_KEY] = self.runtime.node
                await send({"type": "lifespan.startup.complete"})
                settle_garbage_collector()
                if self.banner:
                    _print_banner(self.runtime)
            elif message["type"] == "lifespan.shutdown":
                with contextlib.suppress(Exception):
                    await self.runtime.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def settle_garbage_collector() -> None:
    """Take what start-up built (modules, the app, the routes: hundreds of thousands of objects
    that live as long as the process) out of the cyclic collector's sight. Otherwise every
    full collection walks them all again, a pause of tens of milliseconds at a time on a
    small machine, which lands on the latency of every message in flight."""
    gc.collect()
    gc.freeze()


def _safe(exc: BaseException) -> str:
    """An error message for logs, never carrying a URL's password."""
    import re

    return re.sub(r"://([^:/@\s]+):[^@\s]+@", r"://\1:***@", str(exc)) or type(exc).__name__


def _print_banner(runtime: Runtime) -> None:
    s = runtime.settings
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::") else s.host
    base = s.public_url.rstrip("/") or f"http://{host}:{s.port}"
    lines = [
        f"Xshathra {runtime.node.version if runtime.node else ''} listening on {base}",
        f"  Dashboard:      {base}/dashboard",
        f"  API docs:       {base}/docs",
        f"  Test page:      {base}/socket-auth-test.html",
        f"  WebSocket:      {base.replace('http', 'ws', 1)}/realtime/connection/websocket",
        f"  SSE / streams:  {base}/realtime/connection/{{sse,http_stream,uni_sse,uni_http_stream}}",
    ]
    if runtime.secrets is not None and runtime.secrets.generated_admin_key:
        lines += [
            "",
            "  Admin API key (shown once, store it now; header X-ADMIN-API-KEY):",
            f"    {runtime.secrets.generated_admin_key}",
        ]
    print("\n".join(lines), file=sys.stdout, flush=True)


def create_server(settings: Settings, *, banner: bool = True) -> uvicorn.Server:
    proxies = proxy_entries(settings.trusted_proxies)
    config = uvicorn.Config(
        XshathraASGI(settings, banner=banner),
        host=settings.host,
        port=settings.port,
        ws=CentrifugeWebSocketProtocol,
        # httptools, with the request head bounded in size and time (issue 11, M1)
        http=BoundedHttpToolsProtocol.configured(
            settings.max_header_bytes, settings.header_timeout
        ),
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        lifespan="on",
        access_log=False,  # query strings may carry api_key: never log them
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
        ws_max_size=settings.max_message_size,
        # The client address (per-IP limits, logs) comes from X-Forwarded-For only when the
        # peer is one of the operator's proxies; by default from nobody, not even loopback.
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )
    return uvicorn.Server(config)


def serve(settings: Settings) -> None:
    """Run one node until SIGINT/SIGTERM."""
    server = create_server(settings)
    server.run()
    if not server.started:
        raise SystemExit(1)


async def prepare_storage(settings: Settings) -> Secrets:
    """Migrate the database and settle the secrets once, before several workers start: they
    then find both done, and the generated admin key is printed once, by the caller."""
    db = await open_database(settings.database_url)
    try:
        return await bootstrap_secrets(settings, db)
    finally:
        await db.close()
