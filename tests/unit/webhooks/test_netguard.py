"""The SSRF guard: which addresses count as public, including IPv6 forms that carry a private
IPv4 address (NAT64, 6to4, Teredo, IPv4-mapped/-compatible, SIIT)."""

from __future__ import annotations

import ipaddress

import pytest

from xshathra.outbound.netguard import UnsafeURLError, check_webhook_url, is_public_address


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "100.64.0.1",
        "169.254.169.254",
        "::1",
        "::",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "::127.0.0.1",  # IPv4-compatible (deprecated)
        "::10.0.0.1",
        "::ffff:0:7f00:1",  # SIIT translated
        "64:ff9b::7f00:1",  # NAT64 well-known prefix + 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 + 169.254.169.254
        "64:ff9b::c0a8:1",  # NAT64 + 192.168.0.1
        "64:ff9b:1::808:808",  # local-use NAT64 prefix: never public
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "2001:0:808:808:0:0:80ff:fffe",  # Teredo whose client is 127.0.0.1
        "ff02::1",
        "224.0.0.1",
    ],
)
def test_private_forms_are_refused(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"],
)
def test_public_forms_are_allowed(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "http://[64:ff9b::7f00:1]/h",
        "http://[2002:7f00:1::1]/h",
        "http://[::ffff:0:7f00:1]/h",
        "http://[::127.0.0.1]/h",
    ],
)
async def test_urls_with_private_ipv6_forms_are_refused(url: str) -> None:
    with pytest.raises(UnsafeURLError, match="private"):
        await check_webhook_url(url, allow_private=False)
