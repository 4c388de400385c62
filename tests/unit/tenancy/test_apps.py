"""Applications: namespace option resolution, fresh keys, key hashing."""

from __future__ import annotations

from xshathra.engine.channels import namespace_of
from xshathra.tenancy.apps import (
    APP_ID_PATTERN,
    DEFAULT_NAMESPACE,
    PUBLIC_NAMESPACE,
    Application,
    NamespaceOptions,
    generate_app,
    hash_key,
    keys_equal,
    regenerate_api_key,
)


def _app(namespaces: dict[str, NamespaceOptions] | None = None) -> Application:
    app, _ = generate_app(name="t")
    return app.with_changes(namespaces=namespaces or {})


def test_public_is_built_in_as_the_spec_says() -> None:
    """`public`: open subscribe, presence and join/leave on, 100 messages for 10 minutes,
    client publish off."""
    options = _app().namespace_options("public")
    assert options is PUBLIC_NAMESPACE
    assert options.allow_subscribe_for_client and options.presence and options.join_leave
    assert (options.history_size, options.history_ttl) == (100, 600)
    assert not options.allow_publish_for_client and not options.allow_publish_for_subscriber


def test_default_namespace_is_closed() -> None:
    """Channels without a namespace need a token: nothing is open by default."""
    options = _app().namespace_options("")
    assert options == DEFAULT_NAMESPACE == NamespaceOptions()
    assert not options.allow_subscribe_for_client and options.history_size == 0


def test_app_namespaces_override_the_built_ins() -> None:
    """An app's own `public` (or default) options replace the built-in ones."""
    mine = NamespaceOptions(history_size=5, history_ttl=5)
    app = _app({"public": mine, "": NamespaceOptions(presence=True)})
    assert app.namespace_options("public") is mine
    assert app.namespace_options("").presence is True


def test_unknown_namespace_falls_back_to_the_default_one() -> None:
    """A namespace the app does not define gets the app's default options (or the built-in
    default), never `public`'s."""
    assert _app().namespace_options("nosuch") == DEFAULT_NAMESPACE
    custom_default = NamespaceOptions(allow_subscribe_for_client=True)
    assert _app({"": custom_default}).namespace_options("nosuch") is custom_default


def test_namespace_is_the_part_before_the_first_colon() -> None:
    """`public:a:b` is in `public`; a name without a colon is in the default namespace."""
    assert namespace_of("public:a:b") == "public"
    assert namespace_of("lobby") == ""
    assert namespace_of(":x") == ""
    assert namespace_of("chat:") == "chat"


def test_generated_apps_have_fresh_valid_keys() -> None:
    """Each app gets its own id and secrets; only the api key's hash and hint are kept."""
    (a, keys_a), (b, keys_b) = generate_app(name="a"), generate_app(name="b")
    assert APP_ID_PATTERN.match(a.app_id) and a.app_id != b.app_id
    assert a.app_secret != b.app_secret and a.client_api_key != b.client_api_key
    assert keys_a.api_key != keys_b.api_key
    assert a.api_key_hash == hash_key(keys_a.api_key) and a.api_key_hint == keys_a.api_key[-4:]
    assert keys_a.api_key not in (a.api_key_hash, a.app_secret, a.client_api_key)
    assert len(a.app_secret) >= 32


def test_generate_app_keeps_the_given_fields() -> None:
    """A given app_id, allowed domain and rate limit are kept as given."""
    app, _ = generate_app(
        name="n", app_id="my-app_1", allowed_domain="example.com", rate_limit=7, owner_id="o"
    )
    assert (app.app_id, app.allowed_domain, app.rate_limit, app.owner_id) == (
        "my-app_1",
        "example.com",
        7,
        "o",
    )
    assert app.status is True and app.namespaces == {}


def test_regenerating_the_api_key_changes_hash_and_nothing_else() -> None:
    """A new api key replaces the hash and hint; the app's secret stays."""
    app, keys = generate_app(name="r")
    new_app, new_keys = regenerate_api_key(app)
    assert new_keys.api_key != keys.api_key
    assert new_app.api_key_hash == hash_key(new_keys.api_key) != app.api_key_hash
    assert new_app.app_secret == app.app_secret and new_app.app_id == app.app_id


def test_keys_equal_compares_exactly() -> None:
    """Constant-time comparison still tells equal from different."""
    assert keys_equal("abc", "abc")
    assert not keys_equal("abc", "abd") and not keys_equal("abc", "abcd")


def test_app_id_pattern_refuses_a_trailing_newline() -> None:
    """`app_id` is a slug: a trailing newline is not part of the grammar."""
    assert APP_ID_PATTERN.match("ok-id_1")
    assert not APP_ID_PATTERN.match("ok\n") and not APP_ID_PATTERN.match("x" * 65)
