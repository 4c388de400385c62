"""JSON views of records, one function per record, shared by the HTTP API and the CLI.

Keys: `api_key` (= `server_api_key`) is stored only as a SHA-256 hash, so it appears in the
answers that create or regenerate it and nowhere else (elsewhere: `api_key_hint`, its last four
characters). `app_secret` is shown to the app's owner because backends need it to sign tokens;
`client_api_key` is public by design.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from xshathra.tenancy.apps import Application
from xshathra.webhooks.models import Delivery, Webhook


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def application_view(app: Application, *, api_key: str | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "app_id": app.app_id,
        "name": app.name,
        "app_secret": app.app_secret,
        "client_api_key": app.client_api_key,
        "api_key_hint": app.api_key_hint,
        "allowed_domain": app.allowed_domain,
        "rate_limit": app.rate_limit,
        "status": app.status,
        "namespaces": msgspec.to_builtins(app.namespaces),
        # The operator's quotas, each null when the deployment's limit applies.
        **{name: getattr(app.quotas, name) for name in app.quotas.__struct_fields__},
        # Until when (unix seconds) the app_secret a regeneration replaced still verifies.
        "token_rsa_public_key": app.token_rsa_public_key,
        "token_ecdsa_public_key": app.token_ecdsa_public_key,
        "token_jwks_url": app.token_jwks_url,
        "token_audience": app.token_audience,
        "token_issuer": app.token_issuer,
        "previous_secret_expires_at": (
            app.previous_secret_until if app.previous_secret_until > time.time() else None
        ),
        "proxies": msgspec.to_builtins(app.proxies),
        "pusher_client_events": app.pusher_client_events,
        "pusher_subscription_count": app.pusher_subscription_count,
        "pusher_user_authentication": app.pusher_user_authentication,
        "created_at": iso(app.created_at),
        "updated_at": iso(app.updated_at),
    }
    if api_key is not None:
        view["api_key"] = api_key
        view["server_api_key"] = api_key
    return view


def webhook_view(webhook: Webhook, *, secret: str | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": webhook.id,
        "url": webhook.url,
        "events": list(webhook.events),
        "rooms": list(webhook.rooms),
        "headers": dict(webhook.headers),
        "enabled": webhook.enabled,
        "created_at": iso(webhook.created_at),
    }
    if secret is not None:
        view["secret"] = secret
    return view


def delivery_view(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event": delivery.event,
        "room": delivery.room,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "next_attempt_at": iso(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "created_at": iso(delivery.created_at),
        "delivered_at": iso(delivery.delivered_at) if delivery.delivered_at else None,
    }
