"""Webhook URL safety: refuse targets on loopback, private, link-local, multicast, reserved or
cloud-metadata addresses (after DNS resolution), unless private targets are explicitly allowed."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


class UnsafeURLError(ValueError):
    """The URL is malformed or points somewhere webhooks must not go."""


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally routable unicast only: `is_global` already excludes private, loopback,
    link-local (cloud metadata lives at 169.254.169.254), reserved and unspecified ranges."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def parse_webhook_url(url: str) -> tuple[str, int]:
    """Check the URL's shape; return (host, port)."""
    if not isinstance(url, str) or len(url) > 2048:
        raise UnsafeURLError("url must be an http(s) URL of at most 2048 characters")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURLError("url must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise UnsafeURLError("url must not contain credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeURLError("url has an invalid port") from None
    return parts.hostname.lower().rstrip("."), port


async def check_webhook_url(url: str, *, allow_private: bool) -> None:
    """Raise `UnsafeURLError` unless every address the host resolves to is public."""
    host, port = parse_webhook_url(url)
    if allow_private:
        return
    if host in METADATA_HOSTS or host.endswith(".internal") or host == "localhost":
        raise UnsafeURLError("url points to a private or loopback address")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise UnsafeURLError("url host does not resolve") from None
    for info in infos:
        address = str(info[4][0])
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not _is_public(ip):
            raise UnsafeURLError("url points to a private or loopback address")
