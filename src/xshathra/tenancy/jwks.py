"""Public keys an app publishes as a JWKS URL (`token_jwks_url`), fetched and cached.

A connect with an RS256/ES256 token of such an app awaits `ensure` (a fetch only when the URL
was never read, its keys are older than `ttl`, or the token names a `kid` not seen yet, that
last at most once per `refetch_every` seconds, so a flood of made-up kids costs one request) and
then verifies synchronously against `key`. The URL is the tenant's choice: it is fetched
through the same guarded client as webhooks (no private address unless the operator allows
it, no redirect), with a deadline and a size limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from xshathra.outbound.netguard import UnsafeURLError, guarded_client

log = logging.getLogger("xshathra.jwks")
MAX_JWKS_BYTES = 65_536
MAX_URLS = 1000


@dataclass(slots=True)
class _Entry:
    fetched_at: float = 0.0  # monotonic; 0: never
    missed_at: float = 0.0  # when a kid not in `keys` last caused a fetch
    keys: dict[str, Any] = field(default_factory=dict)  # kid ("" for none) -> key
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class JwksCache:
    def __init__(
        self,
        *,
        allow_private: bool = False,
        ttl: float = 300.0,
        refetch_every: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        self._allow_private = allow_private
        self._ttl = ttl
        self._refetch_every = refetch_every
        self._timeout = timeout
        self._entries: dict[str, _Entry] = {}
        self._client: httpx.AsyncClient | None = None

    def key(self, url: str, kid: str) -> Any | None:
        """The cached key with this `kid` (or the only key, for a token without one)."""
        entry = self._entries.get(url)
        if entry is None:
            return None
        if kid:
            return entry.keys.get(kid)
        return next(iter(entry.keys.values())) if len(entry.keys) == 1 else entry.keys.get("")

    async def ensure(self, url: str, kid: str) -> None:
        """Fetch the URL's keys when they are missing, stale, or lack `kid`; never raises (a
        failed fetch keeps what was cached: the token is then refused if no key fits)."""
        entry = self._entries.get(url)
        if entry is None:
            if len(self._entries) >= MAX_URLS:
                self._entries.clear()
            entry = self._entries[url] = _Entry()
        now = time.monotonic()
        if entry.fetched_at and now - entry.fetched_at < self._ttl:
            if self.key(url, kid) is not None:
                return
            # An unknown kid (the app rotated its keys): fetch again, but not more often than
            # every `refetch_every` seconds, whatever kids a client makes up.
            if entry.missed_at and now - entry.missed_at < self._refetch_every:
                return
            entry.missed_at = now
        async with entry.lock:
            if entry.fetched_at > now:  # another connect fetched it meanwhile
                return
            try:
                entry.keys = await self._fetch(url)
            except Exception as exc:
                log.warning("JWKS fetch failed: %s", type(exc).__name__)
            entry.fetched_at = time.monotonic()

    async def _fetch(self, url: str) -> dict[str, Any]:
        if self._client is None:
            self._client = guarded_client(
                allow_private=self._allow_private, timeout=httpx.Timeout(self._timeout)
            )
        async with (
            asyncio.timeout(self._timeout),
            self._client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            response.raise_for_status()
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise UnsafeURLError("JWKS document too large")
        keys: dict[str, Any] = {}
        for jwk in jwt.PyJWKSet.from_json(body.decode()).keys:
            if jwk.public_key_use in (None, "sig"):
                keys[jwk.key_id or ""] = jwk.key
        return keys

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
