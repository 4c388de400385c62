"""In-process fixtures for the HTTP API: a started node (SQLite, memory broker) and an httpx
client talking to its FastAPI app over ASGI, with no socket in between."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from xshathra.server import Runtime
from xshathra.settings import Settings

ADMIN_KEY = "unit-admin-" + "a" * 24
TOKEN_SECRET = "unit-token-secret-" + "s" * 32
Json = dict[str, Any]


@dataclass
class Api:
    """The client, the runtime behind it (for direct looks at the database), and helpers."""

    http: httpx.AsyncClient
    runtime: Runtime

    @property
    def admin(self) -> dict[str, str]:
        return {"X-ADMIN-API-KEY": ADMIN_KEY}

    async def create_app(self, **body: Any) -> Json:
        body.setdefault("name", "unit app")
        r = await self.http.post("/api/applications", json=body, headers=self.admin)
        assert r.status_code == 201, r.text
        app: Json = r.json()["application"]
        return app


def unit_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'api.db'}",
        broker_url="memory://",
        admin_api_key=SecretStr(ADMIN_KEY),
        token_hmac_secret=SecretStr(TOKEN_SECRET),
        **overrides,
    )


async def start_api(settings: Settings) -> tuple[Runtime, httpx.AsyncClient]:
    runtime = Runtime(settings)
    await runtime.start()
    assert runtime.http is not None
    transport = httpx.ASGITransport(app=runtime.http, client=("203.0.113.7", 50000))
    return runtime, httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    runtime, http = await start_api(unit_settings(tmp_path))
    try:
        yield Api(http, runtime)
    finally:
        await http.aclose()
        await runtime.stop()
