"""The one executor behind every HTTP surface: the Centrifugo-compatible server API, the seed
endpoints (`/api/broadcast`, `/api/realtime/publish`), the dashboard and the CLI.

It works on an already-authenticated `Application`; it knows nothing of HTTP. Requests and
results are msgspec structs named and shaped as Centrifugo's server API names them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from xshathra.protocol.codes import ErrorCode

if TYPE_CHECKING:
    from xshathra.engine.node import Node
    from xshathra.tenancy.apps import Application


class ApiError(Exception):
    """A Centrifugo API error: `{"error": {"code": ..., "message": ...}}`."""

    def __init__(self, code: ErrorCode, message: str | None = None) -> None:
        super().__init__(message or code.name.lower().replace("_", " "))
        self.code = code
        self.message = message or code.name.lower().replace("_", " ")


class PublishRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    channel: str
    data: msgspec.Raw
    skip_history: bool = False
    tags: dict[str, str] | None = None
    idempotency_key: str = ""


class PublishResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    offset: int = 0
    epoch: str = ""


class PublishOutcome(msgspec.Struct, kw_only=True):
    """What a publish did, for the seed endpoints: the wire result plus the subscriber count."""

    result: PublishResult
    subscriber_count: int


class Executor:
    """Runs server API commands for one application at a time."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def publish(
        self, app: Application, request: PublishRequest, *, origin: str = "api"
    ) -> PublishOutcome:
        """Publish `request.data` (raw JSON bytes, never parsed) to a channel of `app`.

        `origin` is "api" for HTTP publishes (counted as broadcasts in analytics), "client" for
        client-side publishes.
        """
        return await self._node.api_publish(app, request, origin=origin)
