"""Outbound URL safety (SSRF guard) for every request the server makes on a tenant's behalf.

Refuses targets on loopback, private, link-local, multicast, reserved or cloud-metadata
addresses, also when written in an IPv6 form that embeds such an IPv4 address (IPv4-mapped and
-compatible, SIIT, NAT64, 6to4, Teredo), unless private targets are explicitly allowed.

Checking a name and then letting the HTTP client resolve it again is open to DNS rebinding (the
second answer may be 127.0.0.1). `GuardedNetworkBackend` closes that: it is the httpcore network
backend of `guarded_transport`, resolves once, checks every address and connects to a checked
one, while httpcore keeps the Host header and the TLS SNI and certificate check on the original
host name. Webhooks and backend proxies use it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

import httpcore
import httpx

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses to try, in order, as text.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_PRIVATE_MESSAGE = "url points to a private or loopback address"
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: local use, never public
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated; also holds :: and ::1
_SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")  # IPv4-translated (RFC 2765)


class UnsafeURLError(ValueError):
    """The URL is malformed or points somewhere webhooks must not go."""


def _public_v4(ip: ipaddress.IPv4Address) -> bool:
    # `is_global` excludes private, loopback, link-local (cloud metadata at 169.254.169.254),
    # shared (100.64/10), reserved and unspecified ranges.
    return ip.is_global and not ip.is_multicast


def is_public_address(ip: IPAddress) -> bool:
    """Globally routable unicast only, looking through IPv6 forms that carry an IPv4 address
    (Python 3.11 calls e.g. 64:ff9b::7f00:1 and 2002:7f00:1:: global)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _public_v4(ip)
    if ip in _IPV4_COMPATIBLE or ip in _SIIT or ip in _NAT64_LOCAL or ip.teredo is not None:
        return False
    embedded: ipaddress.IPv4Address | None = ip.ipv4_mapped or ip.sixtofour
    if ip in _NAT64_WELL_KNOWN:
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if embedded is not None:
        return _public_v4(embedded)
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


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answer (the event loop's getaddrinfo), duplicates removed."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve_checked(
    host: str, port: int, *, allow_private: bool, resolver: Resolver = system_resolver
) -> list[str]:
    """Resolve `host` once; raise `UnsafeURLError` unless every address is allowed. The caller
    must connect only to the addresses returned (that is what makes the check hold)."""
    host = host.lower().rstrip(".")
    if not allow_private and (
        host in METADATA_HOSTS or host.endswith(".internal") or host == "localhost"
    ):
        raise UnsafeURLError(_PRIVATE_MESSAGE)
    try:
        addresses = await resolver(host, port)
    except OSError:
        raise UnsafeURLError("url host does not resolve") from None
    if not addresses:
        raise UnsafeURLError("url host does not resolve")
    if not allow_private:
        for address in addresses:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                raise UnsafeURLError("url host does not resolve") from None
            if not is_public_address(ip):
                raise UnsafeURLError(_PRIVATE_MESSAGE)
    return addresses


async def check_webhook_url(
    url: str, *, allow_private: bool, resolver: Resolver = system_resolver
) -> None:
    """Raise `UnsafeURLError` unless the URL is well formed and every address is public. A
    registration-time courtesy only: requests go through `guarded_transport`, which checks the
    address it actually connects to."""
    host, port = parse_webhook_url(url)
    if allow_private:
        return
    await resolve_checked(host, port, allow_private=False, resolver=resolver)


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses it resolved and checked."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allow_private = allow_private
        self._resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await resolve_checked(
                    host, port, allow_private=self._allow_private, resolver=self._resolver
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout("name resolution timed out") from None
        error: Exception | None = None
        # Connect to the checked address itself; httpcore still sends `Host: <host>` and runs
        # TLS with server_hostname=<host>, so certificates are verified against the name.
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeURLError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """`httpx.AsyncHTTPTransport` whose connections go through `GuardedNetworkBackend`.

    httpx does not take a network backend as an argument, so the pool it built is replaced with
    one that has the same settings and our backend; request handling stays httpx's own.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = system_resolver,
        limits: httpx.Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        limits = limits or httpx.Limits()
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=GuardedNetworkBackend(allow_private=allow_private, resolver=resolver),
        )


def guarded_client(
    *,
    allow_private: bool,
    timeout: httpx.Timeout,
    resolver: Resolver = system_resolver,
    limits: httpx.Limits | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """An HTTP client for tenant-chosen URLs: guarded connections, no redirects (a redirect
    would be a second, unchecked target choice), no proxy or settings from the environment."""
    return httpx.AsyncClient(
        transport=GuardedTransport(
            allow_private=allow_private, resolver=resolver, limits=limits, ssl_context=ssl_context
        ),
        follow_redirects=False,
        trust_env=False,
        timeout=timeout,
    )
