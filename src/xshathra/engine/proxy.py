"""What the engine needs to ask an application's backend (SPEC §9): one `ProxyCaller` the
composition root hands the node, and the translation of a backend's `error`/`disconnect`
answer into the engine's own errors. The HTTP side (signing, the address guard, timeouts,
per-app concurrency) is the caller's business: the engine never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from xshathra.engine.errors import ClientError, DisconnectError
from xshathra.protocol import proxy as p
from xshathra.protocol.codes import ErrorCode
from xshathra.tenancy.apps import Application
from xshathra.tenancy.proxies import ProxyTarget

R = TypeVar("R")
Headers = Sequence[tuple[str, str]]


class ProxyCaller(Protocol):
    async def call(
        self,
        app: Application,
        target: ProxyTarget,
        request: p.ProxyRequest,
        reply_type: type[R],
        client_headers: Headers | None = None,
    ) -> R | None:
        """POST `request` to `target` for `app` and decode the reply as `reply_type`. None when
        the backend could not answer in time or answered something else (a non-200 status, a
        body that is not a proxy reply) or the app has too many calls in flight: the engine
        answers those with 100 (temporary). Never raises for the backend's sake."""


class ProxyUnavailable(ClientError):
    """The backend failed, timed out, or the app is over its concurrency bound."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.INTERNAL, "backend proxy unavailable")


def refuse(error: p.Error | None, disconnect: p.Disconnect | None) -> None:
    """Raise what the backend's answer asks for, if it refused: `disconnect` ends the
    connection with its code, `error` answers the command with its code."""
    if disconnect is not None:
        raise DisconnectError(disconnect.code, disconnect.reason or None)
    if error is not None:
        raise ClientError(error.code, error.message or None, temporary=error.temporary)
