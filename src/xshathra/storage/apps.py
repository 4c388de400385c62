"""Applications in SQL: `SqlAppStore` implements `tenancy.apps.AppStore`."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from xshathra.storage.tables import applications
from xshathra.tenancy.apps import AppExistsError, AppId, Application, NamespaceOptions

_namespaces_decoder = msgspec.json.Decoder(dict[str, NamespaceOptions])


def _row(app: Application) -> dict[str, Any]:
    return {
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
        "owner_id": app.owner_id,
        "created_at": app.created_at,
        "updated_at": app.updated_at,
    }


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
        namespaces=_namespaces_decoder.decode(row.namespaces),
        owner_id=row.owner_id,
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
                await conn.execute(applications.insert().values(**_row(app)))
        except IntegrityError:
            # The api_key_hash is unique too: only a taken app_id is "app exists".
            if await self.get_app(app.app_id) is not None:
                raise AppExistsError(app.app_id) from None
            raise

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

    async def list_apps(self, owner_id: str | None = None) -> list[Application]:
        query = select(applications).order_by(applications.c.created_at, applications.c.app_id)
        if owner_id is not None:
            query = query.where(applications.c.owner_id == owner_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_app(r) for r in rows]

    async def update_app(self, app: Application) -> bool:
        values = _row(app)
        del values["app_id"], values["created_at"]
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(applications).where(applications.c.app_id == app.app_id).values(**values)
            )
        return bool(result.rowcount)

    async def delete_app(self, app_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(applications).where(applications.c.app_id == app_id))
        return bool(result.rowcount)
