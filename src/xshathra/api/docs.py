"""The OpenAPI document (`/openapi.json`): the response schemas the routes declare, the key
schemes, and the readable docs page at `/docs`, rendered by Swagger UI from the
`swagger-ui-bundle` package's own files (no CDN). Schemas here describe; they validate nothing.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from xshathra.tenancy.apps import MAX_HISTORY_SIZE, MAX_HISTORY_TTL, NamespaceOptions

# --- errors ------------------------------------------------------------------------------------


class AppsError(BaseModel):
    """Seed 000 error: `{"success": false, "error": "..."}`."""

    success: Literal[False] = False
    error: str
    retry_after: int | None = Field(None, description="Seconds to wait; 429 answers only.")


class RealtimeError(BaseModel):
    """Seed 001 error: `{"error": "..."}`."""

    error: str
    retry_after: int | None = Field(None, description="Seconds to wait; 429 answers only.")


_STATUS_WORDS = {
    400: "Bad request: invalid JSON, a missing field or a wrong type",
    401: "Missing or invalid key (or app_id/app_secret)",
    403: "Forbidden: another application's app_id, a disabled application, or admin only",
    404: "Not found",
    409: "The app_id is taken, or was used by a deleted app (never reused)",
    413: "Request body too large",
    429: "Rate limit exceeded (see the Retry-After header)",
    500: "Internal server error (a generic message only)",
}


def apps_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a seed-000 route: its error statuses, in the seed-000 shape."""
    return {s: {"model": AppsError, "description": _STATUS_WORDS[s]} for s in statuses}


def realtime_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": RealtimeError, "description": _STATUS_WORDS[s]} for s in statuses}


# --- seed 000 answers --------------------------------------------------------------------------


class Success(BaseModel):
    success: Literal[True] = True


class TokenAnswer(Success):
    token: str = Field(description="HS256 JWT with `app_id` (set by the server) and `sub`.")
    expires_in: int = Field(86400, description="Seconds.")
    expires_at: str = Field(description="ISO 8601 UTC, e.g. 2024-01-02T12:00:00.000Z")


class BroadcastAnswer(Success):
    room: str = Field(description="`app-{app_id}-{room}`")
    event: str
    subscriber_count: int = Field(description="Subscribers of the room on all nodes.")
    timestamp: int = Field(description="Unix milliseconds.")


_NS = NamespaceOptions()  # the defaults


class NamespaceOptionsModel(BaseModel):
    """Channel options of one namespace, as Centrifugo names them: the schema of
    `tenancy.apps.NamespaceOptions` (its defaults and bounds), for the docs and for readable
    messages naming a wrong field. The options are enforced by `NamespaceOptions` itself."""

    model_config = ConfigDict(extra="forbid")

    presence: StrictBool = _NS.presence
    join_leave: StrictBool = _NS.join_leave
    force_push_join_leave: StrictBool = _NS.force_push_join_leave
    history_size: StrictInt = Field(_NS.history_size, ge=0, le=MAX_HISTORY_SIZE)
    history_ttl: StrictInt = Field(
        _NS.history_ttl, ge=0, le=MAX_HISTORY_TTL, description="Seconds (30 days at most)."
    )
    force_recovery: StrictBool = _NS.force_recovery
    allow_subscribe_for_client: StrictBool = _NS.allow_subscribe_for_client
    allow_publish_for_subscriber: StrictBool = _NS.allow_publish_for_subscriber
    allow_publish_for_client: StrictBool = _NS.allow_publish_for_client
    allow_presence_for_subscriber: StrictBool = _NS.allow_presence_for_subscriber
    allow_history_for_subscriber: StrictBool = _NS.allow_history_for_subscriber
    subscribe_proxy_enabled: StrictBool = _NS.subscribe_proxy_enabled
    subscribe_proxy_name: StrictStr = _NS.subscribe_proxy_name
    publish_proxy_enabled: StrictBool = _NS.publish_proxy_enabled
    publish_proxy_name: StrictStr = _NS.publish_proxy_name
    sub_refresh_proxy_enabled: StrictBool = _NS.sub_refresh_proxy_enabled
    sub_refresh_proxy_name: StrictStr = _NS.sub_refresh_proxy_name
    allowed_delta_types: tuple[Literal["fossil"], ...] = Field(
        (),
        description='Delta compression a subscriber may ask for: ["fossil"].',
    )
    delta_publish: StrictBool = Field(
        _NS.delta_publish, description="Send every publication as a delta where negotiated."
    )
    force_recovery_mode: Literal["", "stream", "cache"] = Field(
        "", description='"cache": a recovering subscriber gets the latest publication only.'
    )
    allow_positioning: StrictBool = _NS.allow_positioning
    force_positioning: StrictBool = Field(
        _NS.force_positioning, description="A gap in a channel's stream disconnects (3010)."
    )
    allow_tags_filter: StrictBool = Field(
        _NS.allow_tags_filter, description="Subscribers may filter publications by tags (tf)."
    )


class ApplicationOut(BaseModel):
    app_id: str
    name: str
    app_secret: str = Field(description="Signs the app's own HS256 tokens; keep it server-side.")
    client_api_key: str = Field(description="Public; grants nothing on the HTTP API.")
    api_key_hint: str = Field(description="Last 4 characters of the (hashed) api_key.")
    allowed_domain: str | None
    rate_limit: int = Field(description="HTTP API requests per minute.")
    status: bool = Field(description="true = enabled.")
    namespaces: dict[str, NamespaceOptionsModel]
    proxies: dict[str, Any] = Field(
        default_factory=dict, description="Backend proxies (SPEC §9); {} when none."
    )
    pusher_client_events: bool = Field(
        False, description="Pusher clients may send client- events (SPEC §10)."
    )
    pusher_subscription_count: bool = Field(
        False, description="Pusher subscription_count events on non-presence channels."
    )
    pusher_user_authentication: bool = Field(
        False, description="Pusher connections must sign in in time or are closed (4009)."
    )
    max_connections: int | None = Field(description="Quota (operator): connections, cluster-wide.")
    max_connections_per_user: int | None = Field(description="Quota: one user's, cluster-wide.")
    max_channels_per_connection: int | None = Field(description="Quota: subscriptions each.")
    max_message_size: int | None = Field(description="Quota: bytes of a publication's data.")
    rate_limit_ceiling: int | None = Field(description="Quota: most rate_limit the key may set.")
    token_rsa_public_key: str | None = Field(description="Verifies the app's RS256 tokens.")
    token_ecdsa_public_key: str | None = Field(description="Verifies the app's ES256 tokens.")
    token_jwks_url: str | None = Field(description="JWKS URL of the app's RS256/ES256 keys.")
    token_audience: str | None = Field(description="`aud` the app's own tokens must carry.")
    token_issuer: str | None = Field(description="`iss` the app's own tokens must carry.")
    previous_secret_expires_at: int | None = Field(
        description="Unix seconds until which the app_secret before the last regeneration "
        "still verifies; null when none does."
    )
    created_at: str
    updated_at: str


class ApplicationWithKey(ApplicationOut):
    api_key: str = Field(description="Shown once: only its hash is stored.")
    server_api_key: str = Field(description="The same key as api_key (seed 001's name).")


class ApplicationAnswer(Success):
    application: ApplicationOut


class ApplicationsAnswer(Success):
    applications: list[ApplicationOut]


class ApplicationCreated(Success):
    application: ApplicationWithKey


class KeyRegenerated(Success):
    application: ApplicationWithKey
    api_key: str = Field(description="The new key; the old one fails at once.")


class ConnectionsFigures(BaseModel):
    total: int = Field(description="Connections opened in the period.")
    current: int = Field(description="Open now.")


class EventsFigures(BaseModel):
    total: int = Field(description="Publications of any origin in the period.")
    broadcasts: int = Field(description="Those published through the HTTP API.")


class UsersFigures(BaseModel):
    online: int = Field(description="Distinct connected user ids now.")
    total: int = Field(description="Distinct user ids seen in the period.")


class Metrics(BaseModel):
    connections: ConnectionsFigures
    events: EventsFigures
    users: UsersFigures


class SeriesPoint(BaseModel):
    timestamp: int = Field(description="Start of the bucket, unix seconds.")
    connections: int
    events: int
    broadcasts: int
    users: int = Field(
        0,
        description="Distinct users active in the bucket (kept per hour: a minute's point "
        "has its hour's figure).",
    )


class AnalyticsAnswer(Success):
    app_id: str
    period: Literal["1h", "24h", "7d", "30d"]
    metrics: Metrics
    series: list[SeriesPoint]
    timestamp: int = Field(description="Unix milliseconds.")


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    rooms: list[str] = Field(description="Room `*` globs; empty: every room.")
    headers: dict[str, str] = Field(description="Custom headers sent with each delivery.")
    enabled: bool
    created_at: str
    secret: str | None = Field(None, description="Only when the server generated it (once).")


class WebhookAnswer(Success):
    webhook: WebhookOut


class WebhooksAnswer(Success):
    webhooks: list[WebhookOut]


class WebhookTestAnswer(Success):
    delivered: bool = Field(description="The receiver answered 2xx.")
    status: int | None = Field(description="The receiver's HTTP status; null if none came.")
    error: str | None = Field(description="Why no answer came (connect error, deadline...).")


class DeliveryOut(BaseModel):
    id: str
    event_id: str
    event: str
    room: str
    status: str = Field(description="pending, delivered or failed")
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: str | None
    created_at: str
    delivered_at: str | None


class DeliveriesAnswer(Success):
    deliveries: list[DeliveryOut]


# --- seed 001 answers --------------------------------------------------------------------------


class ConnectionTokenAnswer(BaseModel):
    token: str
    expiresInSeconds: int


class SubscriptionTokenAnswer(BaseModel):
    token: str
    channel: str
    expiresInSeconds: int


class PublishBody(BaseModel):
    """Centrifugo's publish request, forwarded unchanged to the engine's `publish` method."""

    channel: str
    data: Any = Field(description="Any JSON value.")
    skip_history: bool = False
    tags: dict[str, str] | None = None
    idempotency_key: str = ""
    b64data: str = ""
    delta: bool = Field(
        False, description="Sent as a fossil delta to subscribers that negotiated delta."
    )


class PublishResultModel(BaseModel):
    offset: int | None = Field(None, description="Omitted for channels without history.")
    epoch: str | None = None


class EngineErrorModel(BaseModel):
    code: int
    message: str


class PublishAnswer(BaseModel):
    """Exactly the engine's answer: `{"result": {...}}` or `{"error": {"code", "message"}}`."""

    result: PublishResultModel | None = None
    error: EngineErrorModel | None = None


# The publish proxy forwards its raw body, so it declares the schema rather than parse it.
PUBLISH_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PublishBody.model_json_schema()}},
    }
}

# --- keys --------------------------------------------------------------------------------------

SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "AppApiKey": {"type": "apiKey", "in": "header", "name": "X-APP-API-KEY"},
    "LegacyApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "ApiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
    "AdminApiKey": {"type": "apiKey", "in": "header", "name": "X-ADMIN-API-KEY"},
    "ServerApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`apikey <server_api_key>` (or `Bearer <server_api_key>`).",
    },
}
_APP_KEYS = ["AppApiKey", "LegacyApiKey", "ApiKeyQuery", "AdminApiKey"]
ADMIN_ONLY: dict[str, Any] = {"security": [{"AdminApiKey": []}]}


def _security_for(path: str) -> list[dict[str, list[str]]]:
    """Who may call a path, as OpenAPI alternatives (any one of them)."""
    if path in ("/api/token", "/realtime/health"):
        return []
    if path.startswith("/api/realtime/"):
        return [{name: []} for name in ["ServerApiKey", *_APP_KEYS]]
    if path.startswith("/api/"):
        return [{name: []} for name in _APP_KEYS]
    if path.startswith("/realtime/api/"):
        return [{"LegacyApiKey": []}, {"ServerApiKey": []}]
    return []


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the key schemes, minus the 422 answers this API never gives
    (validation errors are 400 in each surface's shape)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    spec = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    components = spec.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
            operation.setdefault("security", _security_for(path))
    schemas = components.get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = spec
    return spec


def install_docs(app: FastAPI) -> None:
    """`/openapi.json` (built once, on first request) and the Swagger UI page at `/docs`."""
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    app.mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Xshathra API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )
