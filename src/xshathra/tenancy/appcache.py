"""API key -> application, cached for the HTTP API's hot path, and app id or public client
key -> application for the engine's connects (`Node.get_app`, `Node.app_by_client_key`).

Every publish authenticates with the app's API key; reading the app from the database each
time costs more than the publish itself (and, on SQLite, a worker thread competing with the
event loop for the GIL). Entries live at most `ttl` seconds, and an app's entries are dropped
the moment any node changes it: the executor forgets them locally, and the `app_changed`
control message makes every other node forget them too. So a regenerated key or a disabled
app is refused at once; `ttl` only bounds staleness if a control message was lost (a broker
outage). Unknown keys are never cached: a new app's key works at once.

A lookup that was reading the store while an app changed does not keep what it read: it may
be the row from before the change (the old key, the app still enabled), which would otherwise
stay valid here for another `ttl`.

Why the engine reads through it too: a tenant flooding connects (even refused ones, past its
`max_connections`) made one store read per connect, and on SQLite every read is a worker
thread taking the GIL from the event loop; another tenant's publishes waited behind them
(issue 18's noisy-tenant test). Through the cache a connect costs a dict lookup.
"""

from __future__ import annotations

import time

from xshathra.tenancy.apps import Application, AppStore

DEFAULT_TTL = 5.0
MAX_ENTRIES = 10_000


class AppKeyCache:
    def __init__(self, store: AppStore, *, ttl: float = DEFAULT_TTL) -> None:
        self._store = store
        self._ttl = ttl
        self._entries: dict[str, tuple[float, Application]] = {}
        # app_id -> app, for requests that name their app and prove it by a signature (the
        # Pusher HTTP API); the same lifetime and invalidation as the key entries.
        self._by_id: dict[str, tuple[float, Application]] = {}
        # public client key -> app, for connections that name their app so (Pusher clients,
        # tokenless Centrifuge connects); the same lifetime and invalidation again.
        self._by_client_key: dict[str, tuple[float, Application]] = {}
        self._changes = 0  # bumped by every forget_app: a read that spans one is not cached

    async def find_by_api_key_hash(self, key_hash: str) -> Application | None:
        now = time.monotonic()
        entry = self._entries.get(key_hash)
        if entry is not None and entry[0] > now:
            return entry[1]
        changes = self._changes
        app = await self._store.find_by_api_key_hash(key_hash)
        if app is None:
            self._entries.pop(key_hash, None)
            return None
        if changes != self._changes:
            return app  # answer this request, but do not remember what may be stale
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key_hash] = (now + self._ttl, app)
        return app

    async def get_app(self, app_id: str) -> Application | None:
        now = time.monotonic()
        entry = self._by_id.get(app_id)
        if entry is not None and entry[0] > now:
            return entry[1]
        changes = self._changes
        app = await self._store.get_app(app_id)
        if app is None:
            self._by_id.pop(app_id, None)
            return None
        if changes != self._changes:
            return app
        if len(self._by_id) >= MAX_ENTRIES:
            self._by_id.clear()
        self._by_id[app_id] = (now + self._ttl, app)
        return app

    async def find_by_client_key(self, client_key: str) -> Application | None:
        now = time.monotonic()
        entry = self._by_client_key.get(client_key)
        if entry is not None and entry[0] > now:
            return entry[1]
        changes = self._changes
        app = await self._store.find_by_client_key(client_key)
        if app is None:
            self._by_client_key.pop(client_key, None)
            return None
        if changes != self._changes:
            return app
        if len(self._by_client_key) >= MAX_ENTRIES:
            self._by_client_key.clear()
        self._by_client_key[client_key] = (now + self._ttl, app)
        return app

    def cached(self, key_hash: str) -> Application | None:
        """The app behind `key_hash` if this node holds it now, without asking the store: what
        a throttled client address may still use (a known key costs no lookup)."""
        entry = self._entries.get(key_hash)
        return entry[1] if entry is not None and entry[0] > time.monotonic() else None

    def forget_app(self, app_id: str) -> None:
        self._changes += 1
        self._by_id.pop(app_id, None)
        for key_hash in [k for k, (_, app) in self._entries.items() if app.app_id == app_id]:
            del self._entries[key_hash]
        for key in [k for k, (_, app) in self._by_client_key.items() if app.app_id == app_id]:
            del self._by_client_key[key]
