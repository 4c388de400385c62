"""The OpenAPI document names every endpoint with its models and keys; the docs page is served
from the package; the JSON views show keys only where the decision says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec

from tests.unit.api.conftest import Api
from xshathra.api.docs import ApplicationOut, NamespaceOptionsModel
from xshathra.api.views import application_view, iso
from xshathra.tenancy.apps import NamespaceOptions, generate_app

SEED_OPERATIONS = {
    ("post", "/api/token"): "TokenAnswer",
    ("post", "/api/broadcast"): "BroadcastAnswer",
    ("get", "/api/applications"): None,  # one app or the list: a union
    ("post", "/api/applications"): "ApplicationCreated",
    ("put", "/api/applications/{app_id}"): "ApplicationAnswer",
    ("delete", "/api/applications/{app_id}"): "Success",
    ("post", "/api/applications/{app_id}/regenerate-api-key"): "KeyRegenerated",
    ("get", "/api/analytics"): "AnalyticsAnswer",
    ("post", "/api/webhooks"): "WebhookAnswer",
    ("get", "/api/webhooks"): "WebhooksAnswer",
    ("delete", "/api/webhooks/{webhook_id}"): "Success",
    ("post", "/api/realtime/token"): "ConnectionTokenAnswer",
    ("post", "/api/realtime/subscription-token"): "SubscriptionTokenAnswer",
    ("post", "/api/realtime/publish"): "PublishAnswer",
}


def success_schema(operation: dict[str, Any]) -> dict[str, Any]:
    responses = operation["responses"]
    ok = responses.get("200") or responses["201"]
    schema: dict[str, Any] = ok["content"]["application/json"]["schema"]
    return schema


async def test_every_seed_endpoint_is_documented(api: Api) -> None:
    spec = (await api.http.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    for (method, path), model in SEED_OPERATIONS.items():
        operation = spec["paths"][path][method]
        schema = success_schema(operation)
        if model is not None:
            assert schema == {"$ref": f"#/components/schemas/{model}"}, (path, schema)
            assert model in schemas
        else:
            assert len(schema["anyOf"]) == 2
        assert "422" not in operation["responses"], path  # validation errors are 400 here
        if "requestBody" in operation:
            assert "400" in operation["responses"], path
        if path != "/api/token":
            assert "401" in operation["responses"], path
    assert "HTTPValidationError" not in schemas
    error_ref = spec["paths"]["/api/broadcast"]["post"]["responses"]["403"]["content"]
    assert error_ref["application/json"]["schema"]["$ref"].endswith("/AppsError")
    realtime_ref = spec["paths"]["/api/realtime/token"]["post"]["responses"]["401"]["content"]
    assert realtime_ref["application/json"]["schema"]["$ref"].endswith("/RealtimeError")


async def test_request_bodies_and_keys_are_documented(api: Api) -> None:
    spec = (await api.http.get("/openapi.json")).json()
    paths = spec["paths"]
    publish_body = paths["/api/realtime/publish"]["post"]["requestBody"]["content"]
    assert set(publish_body["application/json"]["schema"]["required"]) == {"channel", "data"}
    assert "requestBody" in paths["/api/broadcast"]["post"]
    assert set(spec["components"]["securitySchemes"]) == {
        "AppApiKey",
        "LegacyApiKey",
        "ApiKeyQuery",
        "AdminApiKey",
        "ServerApiKey",
    }
    assert paths["/api/token"]["post"]["security"] == []
    assert paths["/api/applications"]["post"]["security"] == [{"AdminApiKey": []}]
    assert {"AppApiKey": []} in paths["/api/broadcast"]["post"]["security"]
    assert {"ServerApiKey": []} in paths["/api/realtime/token"]["post"]["security"]


async def test_docs_page_uses_packaged_assets(api: Api) -> None:
    page = await api.http.get("/docs")
    assert page.status_code == 200
    assert "/docs/static/swagger-ui-bundle.js" in page.text and "/openapi.json" in page.text
    assert "http://" not in page.text.replace("http://testserver", "")
    assert "https://" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
        assert (await api.http.get(f"/docs/static/{asset}")).status_code == 200, asset


def test_namespace_model_mirrors_the_engine_options() -> None:
    """The documented and validated options are exactly the engine's, with the same defaults."""
    engine = {f.name: f.default for f in msgspec.structs.fields(NamespaceOptions)}
    documented = {name: f.default for name, f in NamespaceOptionsModel.model_fields.items()}
    assert documented == engine


def test_application_view_shows_the_key_only_when_given() -> None:
    app, keys = generate_app(name="v", app_id="v1", allowed_domain="example.com")
    app = app.with_changes(namespaces={"chat": NamespaceOptions(presence=True)})
    plain = application_view(app)
    assert set(plain) == {
        "app_id",
        "name",
        "app_secret",
        "client_api_key",
        "api_key_hint",
        "allowed_domain",
        "rate_limit",
        "status",
        "namespaces",
        "max_connections",
        "max_connections_per_user",
        "max_channels_per_connection",
        "max_message_size",
        "rate_limit_ceiling",
        "previous_secret_expires_at",
        "token_rsa_public_key",
        "token_ecdsa_public_key",
        "token_jwks_url",
        "token_audience",
        "token_issuer",
        "proxies",
        "pusher_client_events",
        "pusher_subscription_count",
        "pusher_user_authentication",
        "created_at",
        "updated_at",
    }
    # Every field is documented in the OpenAPI schema of an application.
    assert set(plain) == set(ApplicationOut.model_fields)
    assert keys.api_key not in str(plain) and plain["api_key_hint"] == keys.api_key[-4:]
    assert plain["namespaces"]["chat"]["presence"] is True
    shown = application_view(app, api_key=keys.api_key)
    assert shown["api_key"] == shown["server_api_key"] == keys.api_key


def test_iso_is_utc_with_milliseconds() -> None:
    moment = datetime(2024, 1, 2, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert iso(moment) == "2024-01-02T12:00:00.123Z"
    assert iso(datetime(2024, 1, 2, 12, tzinfo=UTC)) == "2024-01-02T12:00:00.000Z"
