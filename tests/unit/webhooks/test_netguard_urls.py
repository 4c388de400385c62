"""Webhook URL checks: shape, then every resolved address must be public (unless allowed)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from xshathra.outbound.netguard import UnsafeURLError, check_webhook_url, parse_webhook_url

PUBLIC = "93.184.216.34"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/h",
        "not a url",
        "/relative/path",
        "https://user:pw@example.com/h",
        "https://example.com:99999/h",
        "https://" + "a" * 2050 + ".com/",
    ],
)
def test_malformed_urls(url: str) -> None:
    with pytest.raises(UnsafeURLError):
        parse_webhook_url(url)


def test_host_and_default_ports() -> None:
    assert parse_webhook_url("https://Hooks.Example.com./x") == ("hooks.example.com", 443)
    assert parse_webhook_url("http://example.com/x") == ("example.com", 80)
    assert parse_webhook_url("http://[2001:db8::1]:8080/") == ("2001:db8::1", 8080)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "[::1]",
        "[fe80::1]",
        "[fc00::1]",
        "[::ffff:127.0.0.1]",
        "[ff02::1]",
        "localhost",
        "metadata.google.internal",
    ],
)
async def test_private_targets_are_refused(host: str) -> None:
    with pytest.raises(UnsafeURLError, match="private or loopback"):
        await check_webhook_url(f"http://{host}/hook", allow_private=False)
    await check_webhook_url(f"http://{host}/hook", allow_private=True)


async def test_public_literal_is_accepted() -> None:
    await check_webhook_url(f"https://{PUBLIC}/hook", allow_private=False)


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in answers[host]
        ]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


async def test_names_are_judged_by_what_they_resolve_to(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(
        monkeypatch,
        {
            "ok.example": [PUBLIC],
            "inside.example": ["10.0.0.5"],
            "mixed.example": [PUBLIC, "127.0.0.1"],  # one private answer is enough to refuse
            "v6.example": ["::1"],
        },
    )
    await check_webhook_url("https://ok.example/h", allow_private=False)
    for host in ("inside.example", "mixed.example", "v6.example"):
        with pytest.raises(UnsafeURLError, match="private or loopback"):
            await check_webhook_url(f"https://{host}/h", allow_private=False)
    with pytest.raises(UnsafeURLError, match="does not resolve"):
        await check_webhook_url("https://nowhere.example/h", allow_private=False)
