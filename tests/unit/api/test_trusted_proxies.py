"""XSHATHRA_TRUSTED_PROXIES: read strictly, and handed to uvicorn so that forwarded headers are
believed from those peers only (none by default: uvicorn alone would trust loopback)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from xshathra.server import create_server
from xshathra.settings import Settings


def test_no_proxy_is_trusted_by_default() -> None:
    config = create_server(Settings(_env_file=None)).config
    assert config.proxy_headers is False


def test_configured_proxies_are_the_only_ones_trusted() -> None:
    settings = Settings(_env_file=None, trusted_proxies=" 10.0.0.5, 192.168.0.0/16 ,::1")
    config = create_server(settings).config
    assert config.proxy_headers is True
    assert config.forwarded_allow_ips == ["10.0.0.5", "192.168.0.0/16", "::1"]


def test_a_bad_entry_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="'nginx' is not an IP address or CIDR"):
        Settings(_env_file=None, trusted_proxies="10.0.0.5,nginx")
