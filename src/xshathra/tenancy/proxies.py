"""An application's backend proxy configuration (SPEC §9), in the shape of Centrifugo v6's
configuration sections: named proxies, the client's connect/refresh/send proxies and RPC
namespaces. Per-channel-namespace switches live on `NamespaceOptions`.

It owns the schema and its checks and resolves what the engine asks ("where does this app's
subscribe for namespace X go?") into a `ProxyTarget`; it performs no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec

MAX_PROXIES = 32
MAX_RPC_NAMESPACES = 64
MAX_HEADERS = 32
MAX_TIMEOUT = 30.0  # seconds: longer would hold a client's command (and a concurrency slot)
DEFAULT_TIMEOUT = 1.0
DEFAULT_PROXY_NAME = "default"
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
_RPC_NS_RE = re.compile(r"^[A-Za-z0-9_-]{0,64}\Z")
_HEADER_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}\Z")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)\Z")
# Headers a backend must not be handed from the client, nor have set statically: they belong
# to the request the server makes (length, signature, host).
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "x-xshathra-signature",
        "x-xshathra-timestamp",
    }
)
_OPTS = {"kw_only": True, "forbid_unknown_fields": True, "omit_defaults": True}


class ProxyConfigError(ValueError):
    """A configuration that is refused; the message names the field and never a secret."""


def parse_duration(text: str, field: str) -> float:
    """Centrifugo's durations: "500ms", "1s", "1.5s", "1m"; up to 30 s."""
    match = _DURATION_RE.match(text.strip())
    if match is None:
        raise ProxyConfigError(f'{field} must be a duration such as "1s" or "500ms"')
    value = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2)]
    if not 0 < value <= MAX_TIMEOUT:
        raise ProxyConfigError(f"{field} must be more than 0 and at most {MAX_TIMEOUT:g}s")
    return value


def _check_headers(names: list[str], field: str) -> None:
    if len(names) > MAX_HEADERS:
        raise ProxyConfigError(f"{field} may name at most {MAX_HEADERS} headers")
    for name in names:
        if not _HEADER_RE.match(name):
            raise ProxyConfigError(f"{field}: '{name[:64]}' is not a header name")
        if name.lower() in _RESERVED_HEADERS:
            raise ProxyConfigError(f"{field}: '{name}' cannot be set")


def _check_static(http: HttpOptions, field: str) -> None:
    _check_headers(list(http.static_headers), field)
    for name, value in http.static_headers.items():
        # A line break would let a value start another header (or a second request).
        if len(value) > 4096 or any(c in value for c in "\r\n\0"):
            raise ProxyConfigError(f"{field}.{name}: at most 4096 characters, on one line")


def _check_endpoint(endpoint: str, field: str) -> None:
    # The shape only; where it points is checked by the caller's network guard (and, as a
    # courtesy, by the application service when the configuration is saved).
    if not endpoint.startswith(("http://", "https://")) or len(endpoint) > 2048:
        raise ProxyConfigError(f"{field} must be an http:// or https:// URL")


class HttpOptions(msgspec.Struct, **_OPTS):
    static_headers: dict[str, str] = msgspec.field(default_factory=dict)


class NamedProxy(msgspec.Struct, **_OPTS):
    name: str
    endpoint: str
    timeout: str = "1s"
    http_headers: list[str] = msgspec.field(default_factory=list)
    http: HttpOptions = msgspec.field(default_factory=HttpOptions)


class ClientProxy(msgspec.Struct, **_OPTS):
    """One of the client's connect/refresh/send proxies: its own endpoint, or a named proxy."""

    enabled: bool = False
    endpoint: str = ""
    proxy_name: str = ""
    timeout: str = "1s"
    http_headers: list[str] = msgspec.field(default_factory=list)
    http: HttpOptions = msgspec.field(default_factory=HttpOptions)


class ClientProxies(msgspec.Struct, **_OPTS):
    connect: ClientProxy = msgspec.field(default_factory=ClientProxy)
    refresh: ClientProxy = msgspec.field(default_factory=ClientProxy)
    send: ClientProxy = msgspec.field(default_factory=ClientProxy)


class ClientSection(msgspec.Struct, **_OPTS):
    proxy: ClientProxies = msgspec.field(default_factory=ClientProxies)


class RpcNamespace(msgspec.Struct, **_OPTS):
    name: str
    proxy_enabled: bool = False
    proxy_name: str = DEFAULT_PROXY_NAME


class RpcSection(msgspec.Struct, **_OPTS):
    namespaces: list[RpcNamespace] = msgspec.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ProxyTarget:
    """Where one kind of request goes, resolved: what the HTTP caller needs."""

    endpoint: str
    timeout: float
    http_headers: tuple[str, ...]  # forwarded from the client's upgrade request, if present
    static_headers: tuple[tuple[str, str], ...]


class ProxyConfig(msgspec.Struct, frozen=True, **_OPTS):
    """The app's `proxies` section. Checked by `validate` before it is stored."""

    proxies: list[NamedProxy] = msgspec.field(default_factory=list)
    client: ClientSection = msgspec.field(default_factory=ClientSection)
    rpc: RpcSection = msgspec.field(default_factory=RpcSection)

    def validate(self) -> None:
        """Raise `ProxyConfigError` for the first problem, naming the field."""
        if len(self.proxies) > MAX_PROXIES:
            raise ProxyConfigError(f"proxies.proxies may hold at most {MAX_PROXIES} proxies")
        seen: set[str] = set()
        for i, proxy in enumerate(self.proxies):
            where = f"proxies.proxies[{i}]"
            if not _NAME_RE.match(proxy.name):
                raise ProxyConfigError(f"{where}.name must match [A-Za-z0-9_-]{{1,64}}")
            if proxy.name in seen:
                raise ProxyConfigError(f"{where}.name '{proxy.name}' is used twice")
            seen.add(proxy.name)
            _check_endpoint(proxy.endpoint, f"{where}.endpoint")
            parse_duration(proxy.timeout, f"{where}.timeout")
            _check_headers(proxy.http_headers, f"{where}.http_headers")
            _check_static(proxy.http, f"{where}.http.static_headers")
        for kind in ("connect", "refresh", "send"):
            client: ClientProxy = getattr(self.client.proxy, kind)
            where = f"proxies.client.proxy.{kind}"
            if client.proxy_name and client.endpoint:
                raise ProxyConfigError(f"{where}: give endpoint or proxy_name, not both")
            if client.proxy_name and client.proxy_name not in seen:
                raise ProxyConfigError(f"{where}.proxy_name '{client.proxy_name}' is not defined")
            if client.enabled and not client.proxy_name and not client.endpoint:
                raise ProxyConfigError(f"{where} is enabled but has no endpoint")
            if client.endpoint:
                _check_endpoint(client.endpoint, f"{where}.endpoint")
            parse_duration(client.timeout, f"{where}.timeout")
            _check_headers(client.http_headers, f"{where}.http_headers")
            _check_static(client.http, f"{where}.http.static_headers")
        if len(self.rpc.namespaces) > MAX_RPC_NAMESPACES:
            raise ProxyConfigError(
                f"proxies.rpc.namespaces may hold at most {MAX_RPC_NAMESPACES} namespaces"
            )
        names: set[str] = set()
        for i, ns in enumerate(self.rpc.namespaces):
            where = f"proxies.rpc.namespaces[{i}]"
            if not _RPC_NS_RE.match(ns.name) or ns.name in names:
                raise ProxyConfigError(f"{where}.name must be unique and match [A-Za-z0-9_-]")
            names.add(ns.name)
            if ns.proxy_enabled:
                self.check_name(ns.proxy_name, f"{where}.proxy_name")

    def check_name(self, name: str, field: str) -> None:
        if self.named(name) is None:
            raise ProxyConfigError(f"{field} '{name[:64]}' is not a proxy in proxies.proxies")

    def named(self, name: str) -> NamedProxy | None:
        for proxy in self.proxies:
            if proxy.name == name:
                return proxy
        return None

    def target(self, name: str) -> ProxyTarget | None:
        """The named proxy, resolved."""
        proxy = self.named(name)
        if proxy is None:
            return None
        return _target(proxy.endpoint, proxy.timeout, proxy.http_headers, proxy.http)

    def client_target(self, kind: str) -> ProxyTarget | None:
        """The client's `connect`, `refresh` or `send` proxy if enabled."""
        client: ClientProxy = getattr(self.client.proxy, kind)
        if not client.enabled:
            return None
        if client.proxy_name:
            return self.target(client.proxy_name)
        return _target(client.endpoint, client.timeout, client.http_headers, client.http)

    def rpc_target(self, method: str) -> ProxyTarget | None:
        """The proxy of the RPC namespace of `method` (`calc:sum` -> `calc`; a method without
        a colon belongs to the namespace named "")."""
        namespace = method.split(":", 1)[0] if ":" in method else ""
        for ns in self.rpc.namespaces:
            if ns.name == namespace:
                return self.target(ns.proxy_name) if ns.proxy_enabled else None
        return None


def _target(endpoint: str, timeout: str, headers: list[str], http: HttpOptions) -> ProxyTarget:
    try:
        seconds = parse_duration(timeout, "timeout")
    except ProxyConfigError:  # stored before a bound changed: the default, not a broken app
        seconds = DEFAULT_TIMEOUT
    return ProxyTarget(
        endpoint=endpoint,
        timeout=seconds,
        http_headers=tuple(headers),
        static_headers=tuple(http.static_headers.items()),
    )


NO_PROXIES = ProxyConfig()
_decoder = msgspec.json.Decoder(ProxyConfig)
_encoder = msgspec.json.Encoder()


def parse_proxy_config(raw: object) -> ProxyConfig:
    """A configuration from JSON-like input (the API body), checked; `ProxyConfigError`
    with a field-naming message otherwise."""
    try:
        config = msgspec.convert(raw, ProxyConfig)
    except msgspec.ValidationError as exc:
        raise ProxyConfigError(f"proxies: {exc}") from None
    config.validate()
    return config


def decode_proxy_config(text: str | None) -> ProxyConfig:
    """As stored (not re-validated: a stored value was valid when written)."""
    if not text:
        return NO_PROXIES
    return _decoder.decode(text)


def encode_proxy_config(config: ProxyConfig) -> str:
    return _encoder.encode(config).decode()


def to_builtins(config: ProxyConfig) -> dict[str, object]:
    """For the API's answers."""
    out: dict[str, object] = msgspec.to_builtins(config)
    return out
