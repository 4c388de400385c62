"""Proxy configuration (SPEC §9): Centrifugo v6's shape, checked with messages that name the
field, and resolved into where each kind of request goes."""

from __future__ import annotations

import pytest

from xshathra.tenancy.proxies import ProxyConfigError, parse_duration, parse_proxy_config

BASE = {
    "proxies": [
        {
            "name": "auth",
            "endpoint": "https://backend/centrifugo",
            "timeout": "250ms",
            "http_headers": ["Cookie"],
            "http": {"static_headers": {"X-Origin": "xs"}},
        }
    ],
    "client": {
        "proxy": {
            "connect": {"enabled": True, "endpoint": "https://backend/connect", "timeout": "2s"},
            "refresh": {"enabled": True, "proxy_name": "auth"},
        }
    },
    "rpc": {"namespaces": [{"name": "calc", "proxy_enabled": True, "proxy_name": "auth"}]},
}


def test_targets_resolve_per_kind() -> None:
    config = parse_proxy_config(BASE)
    connect = config.client_target("connect")
    assert connect is not None and connect.endpoint == "https://backend/connect"
    assert connect.timeout == 2.0
    refresh = config.client_target("refresh")
    assert refresh is not None and refresh.endpoint == "https://backend/centrifugo"
    assert refresh.timeout == 0.25 and refresh.http_headers == ("Cookie",)
    assert refresh.static_headers == (("X-Origin", "xs"),)
    assert config.client_target("send") is None
    assert config.rpc_target("calc:sum") == refresh
    assert config.rpc_target("other:sum") is None and config.rpc_target("sum") is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"proxies": [{"name": "a b", "endpoint": "http://x"}]}, "proxies.proxies[0].name"),
        ({"proxies": [{"name": "a", "endpoint": "x"}]}, "proxies.proxies[0].endpoint"),
        ({"proxies": [{"name": "a", "endpoint": "http://x", "timeout": "31s"}]}, "at most 30s"),
        (
            {
                "proxies": [
                    {"name": "a", "endpoint": "http://x", "http_headers": ["X-Xshathra-Signature"]}
                ]
            },
            "cannot be set",
        ),
        ({"client": {"proxy": {"refresh": {"enabled": True, "proxy_name": "nope"}}}}, "nope"),
        ({"rpc": {"namespaces": [{"name": "c", "proxy_enabled": True}]}}, "'default'"),
        ({"unknown": True}, "unknown"),
        (
            {
                "proxies": [
                    {
                        "name": "a",
                        "endpoint": "http://x",
                        "http": {"static_headers": {"X-A": "1\r\nX-B: 2"}},
                    }
                ]
            },
            "on one line",
        ),
    ],
)
def test_bad_configuration_is_refused_naming_the_field(
    change: dict[str, object], words: str
) -> None:
    with pytest.raises(ProxyConfigError) as refused:
        parse_proxy_config(change)
    assert words in str(refused.value)


def test_durations() -> None:
    """Centrifugo's duration strings, more than 0 and at most 30 s."""
    assert parse_duration("1s", "t") == 1.0 and parse_duration("1.5s", "t") == 1.5
    assert parse_duration("500ms", "t") == 0.5
    for bad in ("0s", "1m", "1", "soon"):
        with pytest.raises(ProxyConfigError):
            parse_duration(bad, "t")
