"""What the engine needs to ask an application's backend (SPEC §9): one `ProxyCaller` the
composition root hands the node, and the translation of a backend's `error`/`disconnect`
answer into the engine's own errors. The HTTP side (signing, the address guard, timeouts,
per-app concurrency) is the caller's business: the engine never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

import msgspec

from xshathra.engine.errors import ClientError, DisconnectError
from xshathra.protocol import proxy as p
from xshathra.protocol.codes import ErrorCode
from xshathra.tenancy.apps import Application
from xshathra.tenancy.proxies import ProxyTarget

R = TypeVar("R")
ResultT = TypeVar("ResultT")
ResultT_co = TypeVar("ResultT_co", covariant=True)
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


class Answer(Protocol[ResultT_co]):
    """A proxy reply that carries a result (all but send's)."""

    @property
    def result(self) -> ResultT_co | None: ...


def result_of(reply: Answer[ResultT]) -> ResultT:
    """A reply's result. One with no result (nor an error or disconnect, which `refuse` has
    raised) is a backend that did not answer properly: 100, as if it had not answered."""
    if reply.result is None:
        raise ProxyUnavailable()
    return reply.result


def answered(raw: msgspec.Raw, b64: str, binary: bool = False) -> bytes | None:
    """A payload of a reply (`proxy.payload`); one that does not decode is the backend's
    failure: 100."""
    try:
        return p.payload(raw, b64, binary)
    except p.ProxyDecodeError:
        raise ProxyUnavailable() from None
