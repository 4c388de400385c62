"""The API-key cache: a hit skips the store, a changed app is forgotten at once, entries
expire, unknown keys are never remembered."""

from __future__ import annotations

import asyncio

import pytest

from xshathra.tenancy.appcache import AppKeyCache
from xshathra.tenancy.apps import Application, generate_app, hash_key


class CountingStore:
    def __init__(self, apps: dict[str, Application]) -> None:
        self.apps = apps
        self.reads = 0

    async def find_by_api_key_hash(self, key_hash: str) -> Application | None:
        self.reads += 1
        return self.apps.get(key_hash)


def _store() -> tuple[CountingStore, Application, str]:
    app, keys = generate_app(name="cached")
    key_hash = hash_key(keys.api_key)
    return CountingStore({key_hash: app}), app, key_hash


async def test_a_hit_skips_the_store_and_a_change_is_seen_at_once() -> None:
    store, app, key_hash = _store()
    cache = AppKeyCache(store)  # type: ignore[arg-type]
    assert await cache.find_by_api_key_hash(key_hash) is app
    assert await cache.find_by_api_key_hash(key_hash) is app
    assert store.reads == 1
    store.apps.clear()  # the key was regenerated
    cache.forget_app(app.app_id)
    assert await cache.find_by_api_key_hash(key_hash) is None
    assert store.reads == 2


async def test_entries_expire_and_unknown_keys_are_not_remembered() -> None:
    store, _, key_hash = _store()
    cache = AppKeyCache(store, ttl=0.05)  # type: ignore[arg-type]
    assert await cache.find_by_api_key_hash("nope") is None
    assert await cache.find_by_api_key_hash("nope") is None
    assert store.reads == 2
    await cache.find_by_api_key_hash(key_hash)
    await asyncio.sleep(0.1)  # expiry is time itself
    await cache.find_by_api_key_hash(key_hash)
    assert store.reads == 4


async def test_a_read_that_spans_a_change_is_not_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """H2: a lookup that read the app while it was being changed (the key regenerated) answers
    its own request but is not cached, or the old key would stay valid for another ttl."""
    store, app, key_hash = _store()
    reading, release = asyncio.Event(), asyncio.Event()
    plain_find = store.find_by_api_key_hash

    async def slow_find(k: str) -> Application | None:
        found = await plain_find(k)  # the row as it was before the change
        reading.set()
        await release.wait()
        return found

    monkeypatch.setattr(store, "find_by_api_key_hash", slow_find)
    cache = AppKeyCache(store)  # type: ignore[arg-type]
    lookup = asyncio.create_task(cache.find_by_api_key_hash(key_hash))
    await asyncio.wait_for(reading.wait(), 2)
    store.apps.clear()  # the key is regenerated meanwhile
    cache.forget_app(app.app_id)
    release.set()
    assert await lookup is app
    store.find_by_api_key_hash = plain_find  # type: ignore[method-assign]
    assert await cache.find_by_api_key_hash(key_hash) is None


async def test_apps_by_id_are_cached_and_forgotten_with_their_keys() -> None:
    """The Pusher HTTP API's lookup by app_id: a hit skips the store; a change drops it."""
    app, _ = generate_app(name="by-id", app_id="42")

    class ById:
        reads = 0

        async def get_app(self, app_id: str) -> Application | None:
            self.reads += 1
            return app if app_id == "42" else None

    store = ById()
    cache = AppKeyCache(store)  # type: ignore[arg-type]
    assert await cache.get_app("42") is app
    assert await cache.get_app("42") is app
    assert store.reads == 1
    assert await cache.get_app("nope") is None
    cache.forget_app("42")
    assert await cache.get_app("42") is app
    assert store.reads == 3


class ClientKeyStore:
    def __init__(self, app: Application) -> None:
        self.app: Application | None = app
        self.reads = 0

    async def find_by_client_key(self, client_key: str) -> Application | None:
        self.reads += 1
        app = self.app
        return app if app is not None and app.client_api_key == client_key else None


async def test_client_keys_are_cached_and_forgotten_with_their_app() -> None:
    """The engine's connects read apps through the cache: a flood of connects costs the store
    one read, and a change (the app disabled, say) is read again at once."""
    app, _ = generate_app(name="engine")
    store = ClientKeyStore(app)
    cache = AppKeyCache(store)  # type: ignore[arg-type]
    for _ in range(3):
        assert await cache.find_by_client_key(app.client_api_key) is app
    assert store.reads == 1
    store.app = None  # deleted
    cache.forget_app(app.app_id)
    assert await cache.find_by_client_key(app.client_api_key) is None
    assert store.reads == 2
