"""Applications in SQL: `SqlAppStore` implements `tenancy.apps.AppStore`.

Every change is one conditional UPDATE of the fields it sets (with RETURNING, so the answer is
the row as that statement left it); deletion purges the app's rows and retires its app_id (in
`app_ids`, where every app_id ever created stays) in one transaction.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import delete, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from xshathra.model import AppId
from xshathra.storage.tables import (
    analytics_counts,
    analytics_online,
    analytics_users,
    app_ids,
    applications,
    blocked_users,
    revoked_tokens,
    user_token_invalidations,
    webhook_deliveries,
    webhooks,
)
from xshathra.tenancy.apps import (
    MAX_HISTORY_SIZE,
    MAX_HISTORY_TTL,
    AppChanges,
    AppExistsError,
    AppIdRetiredError,
    Application,
    AppSummary,
    NamespaceOptions,
    NewAppKeys,
    Quotas,
    SecretRotation,
    utcnow,
)
from xshathra.tenancy.proxies import NO_PROXIES, decode_proxy_config, encode_proxy_config

_namespaces_decoder = msgspec.json.Decoder(dict[str, NamespaceOptions])
_raw_namespaces_decoder = msgspec.json.Decoder(dict[str, dict[str, Any]])
_quotas_decoder = msgspec.json.Decoder(Quotas)


def _decode_namespaces(text: str) -> dict[str, NamespaceOptions]:
    """Stored namespace options. Rows written before history_size and history_ttl had upper
    bounds may hold larger values: they are read clamped to the bounds (what every broker
    would keep at most anyway) instead of making the whole app unreadable."""
    try:
        return _namespaces_decoder.decode(text)
    except msgspec.ValidationError:
        raw = _raw_namespaces_decoder.decode(text)
        for options in raw.values():
            for name, ceiling in (
                ("history_size", MAX_HISTORY_SIZE),
                ("history_ttl", MAX_HISTORY_TTL),
            ):
                value = options.get(name)
                if isinstance(value, int | float):
                    options[name] = max(0, min(int(value), ceiling))
        return msgspec.convert(raw, dict[str, NamespaceOptions])


def app_row(app: Application) -> dict[str, Any]:
    """The `applications` row of an app (also how a migration test writes one under an old
    revision)."""
    row = {
        "app_id": app.app_id,
        "name": app.name,
        "app_secret": app.app_secret,
        "api_key_hash": app.api_key_hash,
        "api_key_hint": app.api_key_hint,
        "client_api_key": app.client_api_key,
        "allowed_domain": app.allowed_domain,
        "rate_limit": app.rate_limit,
        "status": app.status,
        "namespaces": msgspec.json.encode(app.namespaces).decode(),
        "quotas": msgspec.json.encode(app.quotas).decode(),
        "previous_app_secret": app.previous_app_secret,
        "previous_secret_until": app.previous_secret_until,
        "token_rsa_public_key": app.token_rsa_public_key,
        "token_ecdsa_public_key": app.token_ecdsa_public_key,
        "token_jwks_url": app.token_jwks_url,
        "token_audience": app.token_audience,
        "token_issuer": app.token_issuer,
        "owner_id": app.owner_id,
        "pusher_client_events": app.pusher_client_events,
        "pusher_subscription_count": app.pusher_subscription_count,
        "pusher_user_authentication": app.pusher_user_authentication,
        "created_at": app.created_at,
        "updated_at": app.updated_at,
    }
    if app.proxies != NO_PROXIES:  # most apps have none: the column stays NULL
        row["proxies"] = encode_proxy_config(app.proxies)
    return row


def _app(row: Any) -> Application:
    return Application(
        app_id=AppId(row.app_id),
        name=row.name,
        app_secret=row.app_secret,
        api_key_hash=row.api_key_hash,
        api_key_hint=row.api_key_hint,
        client_api_key=row.client_api_key,
        allowed_domain=row.allowed_domain,
        rate_limit=row.rate_limit,
        status=bool(row.status),
        namespaces=_decode_namespaces(row.namespaces),
        quotas=_quotas_decoder.decode(row.quotas),
        previous_app_secret=row.previous_app_secret,
        previous_secret_until=int(row.previous_secret_until),
        token_rsa_public_key=row.token_rsa_public_key,
        token_ecdsa_public_key=row.token_ecdsa_public_key,
        token_jwks_url=row.token_jwks_url,
        token_audience=row.token_audience,
        token_issuer=row.token_issuer,
        proxies=decode_proxy_config(row.proxies),
        owner_id=row.owner_id,
        pusher_client_events=bool(row.pusher_client_events),
        pusher_subscription_count=bool(row.pusher_subscription_count),
        pusher_user_authentication=bool(row.pusher_user_authentication),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlAppStore:
    """`AppStore` on SQLite or PostgreSQL; namespaces are stored as msgspec-encoded JSON text."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_app(self, app: Application) -> None:
        try:
            async with self._engine.begin() as conn:
                # The id's registry row first: its primary key refuses an id that is taken or
                # retired, even against a delete or another create running at the same time.
                await conn.execute(app_ids.insert().values(app_id=app.app_id))
                await conn.execute(applications.insert().values(**app_row(app)))
        except IntegrityError:
            async with self._engine.connect() as conn:
                known = (
                    await conn.execute(
                        select(app_ids.c.deleted_at).where(app_ids.c.app_id == app.app_id)
                    )
                ).first()
            # The api_key_hash is unique too: only a known app_id is "app exists".
            if known is None:
                raise
            if known.deleted_at is not None:
                raise AppIdRetiredError(app.app_id) from None
            raise AppExistsError(app.app_id) from None

    async def get_app(self, app_id: str) -> Application | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(applications).where(applications.c.app_id == app_id))
            ).first()
        return _app(row) if row is not None else None

    async def find_by_api_key_hash(self, key_hash: str) -> Application | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(applications).where(applications.c.api_key_hash == key_hash)
                )
            ).first()
        return _app(row) if row is not None else None

    async def find_by_client_key(self, client_key: str) -> Application | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(applications).where(applications.c.client_api_key == client_key)
                )
            ).first()
        return _app(row) if row is not None else None

    async def list_apps(self, owner_id: str | None = None) -> list[Application]:
        query = select(applications).order_by(applications.c.created_at, applications.c.app_id)
        if owner_id is not None:
            query = query.where(applications.c.owner_id == owner_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_app(r) for r in rows]

    async def get_apps(self, app_ids: list[str]) -> list[Application]:
        if not app_ids:
            return []
        query = (
            select(applications)
            .where(applications.c.app_id.in_(app_ids))
            .order_by(applications.c.created_at, applications.c.app_id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_app(r) for r in rows]

    async def list_summaries(
        self, owner_id: str | None = None, app_ids: list[str] | None = None
    ) -> list[AppSummary]:
        c = applications.c
        query = select(c.app_id, c.name, c.owner_id, c.status, c.rate_limit, c.created_at)
        if owner_id is not None or app_ids is not None:
            query = query.where(or_(c.owner_id == owner_id, c.app_id.in_(app_ids or [])))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(c.created_at, c.app_id))).all()
        return [
            AppSummary(
                app_id=AppId(r.app_id),
                name=r.name,
                owner_id=r.owner_id,
                status=bool(r.status),
                rate_limit=int(r.rate_limit),
                created_at=r.created_at,
            )
            for r in rows
        ]

    async def update_app(
        self, app_id: str, changes: AppChanges, *, while_key: str | None = None
    ) -> Application | None:
        values: dict[str, Any] = {**changes, "updated_at": utcnow()}
        if "namespaces" in changes:
            values["namespaces"] = msgspec.json.encode(changes["namespaces"]).decode()
        if "quotas" in changes:
            values["quotas"] = msgspec.json.encode(changes["quotas"]).decode()
        if "proxies" in changes:
            proxies = changes["proxies"]
            values["proxies"] = encode_proxy_config(proxies) if proxies != NO_PROXIES else None
        return await self._update(app_id, values, while_key)

    async def set_api_key(
        self, app_id: str, keys: NewAppKeys, *, while_key: str | None = None
    ) -> Application | None:
        values = {
            "api_key_hash": keys.api_key_hash,
            "api_key_hint": keys.api_key_hint,
            "updated_at": utcnow(),
        }
        return await self._update(app_id, values, while_key)

    async def set_client_key(
        self, app_id: str, client_api_key: str, *, while_key: str | None = None
    ) -> Application | None:
        values = {"client_api_key": client_api_key, "updated_at": utcnow()}
        return await self._update(app_id, values, while_key)

    async def set_app_secret(
        self, app_id: str, secret: SecretRotation, *, while_key: str | None = None
    ) -> Application | None:
        # The previous secret is read by the same statement that replaces it: two rotations
        # racing each keep the secret they replaced, never one from before.
        values = {
            "previous_app_secret": applications.c.app_secret,
            "previous_secret_until": secret.previous_until,
            "app_secret": secret.app_secret,
            "updated_at": utcnow(),
        }
        return await self._update(app_id, values, while_key)

    async def _update(
        self, app_id: str, values: dict[str, Any], while_key: str | None
    ) -> Application | None:
        """One UPDATE of `values`; with `while_key`, only if the caller's key is still the
        app's and the app is enabled, checked by the same statement that writes."""
        query = update(applications).where(applications.c.app_id == app_id)
        if while_key is not None:
            query = query.where(
                applications.c.api_key_hash == while_key, applications.c.status == true()
            )
        async with self._engine.begin() as conn:
            row = (await conn.execute(query.values(**values).returning(applications))).first()
        return _app(row) if row is not None else None

    async def delete_app(self, app_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(applications).where(applications.c.app_id == app_id))
            if not result.rowcount:
                return False
            # Everything SQL holds for the app goes with it (webhooks and their deliveries
            # cascade too; the explicit deletes also cover rows written without the cascade).
            await conn.execute(
                delete(webhook_deliveries).where(webhook_deliveries.c.app_id == app_id)
            )
            await conn.execute(delete(webhooks).where(webhooks.c.app_id == app_id))
            for table in (
                analytics_counts,
                analytics_users,
                analytics_online,
                blocked_users,
                revoked_tokens,
                user_token_invalidations,
            ):
                await conn.execute(delete(table).where(table.c.app_id == app_id))
            await conn.execute(
                update(app_ids).where(app_ids.c.app_id == app_id).values(deleted_at=utcnow())
            )
        return True
