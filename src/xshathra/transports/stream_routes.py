"""The ASGI routes of the stream transports (transports.streams) and the emulation endpoint,
served ahead of the FastAPI app (see server.py). Errors are `{"error": "..."}`; the full list,
with CORS, is in docs/transports.md.

Routes (the `/realtime` prefix is optional, as for WebSocket):
- `POST /realtime/connection/http_stream`: body = the connect command (JSON protocol).
- `GET /realtime/connection/sse?cf_connect=<connect command>` (or POST with it as the body).
- `POST /realtime/emulation`: `{"node", "session", "data"}`: commands for a stream; 204.
- `GET /realtime/connection/uni_sse?cf_connect=<ConnectRequest>` (or POST body).
- `POST /realtime/connection/uni_http_stream`: body = a `ConnectRequest`.

Protobuf (centrifuge-js's protobuf build, on `http_stream` only): a request with
`Content-Type: application/octet-stream` (what centrifuge-js sends) or `?cf_protocol=protobuf`
(Centrifugo's query parameter) carries a length-delimited connect `Command` (the stream) or a
protobuf `EmulationRequest` (the emulation endpoint), and the stream speaks PROTOBUF_CODEC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from xshathra.engine.client import ClientSession
from xshathra.engine.node import EmulationOutcome
from xshathra.protocol.codec import ProtocolDecodeError
from xshathra.protocol.codes import DisconnectCode
from xshathra.protocol.json_codec import error_body
from xshathra.protocol.protobuf_codec import decode_emulation as decode_protobuf_emulation
from xshathra.protocol.uni_json_codec import connect_command, decode_emulation
from xshathra.transports.streams import (
    PROTOBUF_KINDS,
    SCOPE_KEY,
    STREAM_PATHS,
    StreamKind,
    StreamTransport,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from xshathra.engine.node import Node
    from xshathra.transports.streams import Receive, Send

log = logging.getLogger("xshathra.streams")

EMULATION_PATHS = frozenset({"/realtime/emulation", "/emulation"})
# Room around a command of the largest size in a request body (the envelope, escaping).
BODY_OVERHEAD = 4096


class StreamEndpoints:
    """The ASGI app of the stream routes and the emulation endpoint."""

    def __init__(self, node: Node, max_message_size: int) -> None:
        self.node = node
        self.max_body = max_message_size + BODY_OVERHEAD

    @staticmethod
    def handles(scope: Mapping[str, Any]) -> bool:
        if scope.get("type") != "http":
            return False
        path = scope.get("path", "").rstrip("/")
        return path in STREAM_PATHS or path in EMULATION_PATHS

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path = scope["path"].rstrip("/")
        method = scope["method"]
        origin = _header(scope, b"origin")
        if method == "OPTIONS":
            await _preflight(scope, send, origin)
            return
        if path in EMULATION_PATHS:
            if method != "POST":
                await _error(send, 405, "method not allowed", origin)
                return
            await self._emulation(receive, send, origin, _wants_protobuf(scope))
            return
        kind = STREAM_PATHS[path]
        if _wants_protobuf(scope):
            protobuf_kind = PROTOBUF_KINDS.get(kind.name)
            if protobuf_kind is None:  # SSE: an EventSource reads text; uni: JSON by design
                await _error(send, 400, f"protobuf is not supported over {kind.name}", origin)
                return
            kind = protobuf_kind
        await self._stream(kind, scope, receive, send, origin)

    # --- emulation ------------------------------------------------------------------------------

    async def _emulation(
        self, receive: Receive, send: Send, origin: str | None, protobuf: bool
    ) -> None:
        body = await _read_body(receive, self.max_body)
        if body is None:
            await _error(send, 413, "request body too large", origin)
            return
        try:
            # The commands inside are read by the session's codec, wherever it is: a protobuf
            # request's `data` is length-delimited Commands, a JSON one's newline-delimited.
            decode = decode_protobuf_emulation if protobuf else decode_emulation
            node_id, session, data = decode(body)
        except ProtocolDecodeError:
            await _error(send, 400, "malformed emulation request", origin)
            return
        try:
            outcome = await self.node.emulate(node_id, session, data, origin)
        except Exception as exc:  # the control bus (broker) is away: the client reconnects
            log.warning("emulation request not forwarded: %s", type(exc).__name__)
            await _error(send, 503, "emulation request could not be forwarded", origin)
            return
        if outcome is EmulationOutcome.ORIGIN_REFUSED:
            await _error(send, 403, "origin not allowed", None)
            return
        if outcome is EmulationOutcome.NO_NODE:
            # As Centrifugo: the stream's node is gone (restarted?); centrifuge-js reconnects.
            await _error(send, 404, "unknown node", origin)
            return
        # As Centrifugo: 204 whether the session is still there or not on a running node (a
        # closed session's client learns it from its stream, which has ended).
        await send({"type": "http.response.start", "status": 204, "headers": _cors(origin)})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # --- streams --------------------------------------------------------------------------------

    async def _stream(
        self,
        kind: StreamKind,
        scope: dict[str, Any],
        receive: Receive,
        send: Send,
        origin: str | None,
    ) -> None:
        method = scope["method"]
        sse = kind.framing == "sse"
        if method == "GET" and sse:
            request = _connect_param(scope)
            if request is None:
                await _error(send, 400, "cf_connect query parameter required", origin)
                return
            if len(request) > self.max_body:
                await _error(send, 413, "cf_connect too large", origin)
                return
        elif method == "POST":
            body = await _read_body(receive, self.max_body)
            if body is None:
                await _error(send, 413, "request body too large", origin)
                return
            request = body
        else:
            await _error(send, 405, "method not allowed", origin)
            return
        try:
            command = _first_command(kind, request)
        except ProtocolDecodeError:
            what = "cf_connect" if method == "GET" else "request body"
            await _error(send, 400, f"{what} is not a valid connect request", origin)
            return
        client = scope.get("client")
        transport = StreamTransport(kind, origin, str(client[0]) if client else "")
        transport.request_headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ())
        ]
        transport.query = scope.get("query_string", b"").decode("latin-1")
        headers = [
            (b"content-type", kind.content_type),
            (b"cache-control", b"private, no-cache, no-store, must-revalidate, max-age=0"),
            (b"x-accel-buffering", b"no"),
            *_cors(origin),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        scope[SCOPE_KEY] = transport
        try:
            if sse:  # an empty line first, as Centrifugo does, so proxies pass the headers on
                await send({"type": "http.response.body", "body": b"\r\n", "more_body": True})
            transport.go_direct(send)
            session = transport.session = ClientSession(self.node, transport)
            session.on_message(command)
            if transport.direct:
                await transport.hold(receive, send, self.max_body)
            else:
                await self._pumped(transport, receive, send)
        except OSError:
            pass  # the client went away while we wrote
        finally:
            transport.client_gone()

    async def _pumped(self, transport: StreamTransport, receive: Receive, send: Send) -> None:
        """Without the socket (another ASGI server): a task waits for the client to go away
        while the request's task writes the queue out."""
        watcher = asyncio.ensure_future(_watch_disconnect(receive, transport, self.max_body))
        try:
            await transport.pump(send, b"")
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _first_command(kind: StreamKind, request: bytes) -> bytes:
    """The connect command the session reads first; `ProtocolDecodeError` when the request is
    not a connect (a bidirectional stream's request is a protocol command, a uni one's a bare
    `ConnectRequest`)."""
    if kind.unidirectional:
        return connect_command(request)
    commands = kind.codec.decode_commands(request)  # JSON or protobuf
    if not commands or commands[0].connect is None:
        raise ProtocolDecodeError("the first command must be connect")
    return request


async def _watch_disconnect(receive: Receive, transport: StreamTransport, limit: int) -> None:
    """Until the client goes away (uvicorn answers `http.disconnect` then). A client that goes
    on sending a request body has it read and dropped, up to `limit` bytes: past that it is
    disconnected (3501), not read for ever."""
    extra = 0
    while (message := await receive())["type"] != "http.disconnect":
        extra += len(message.get("body", b""))
        if extra > limit and transport.session is not None:
            transport.session.disconnect(DisconnectCode.BAD_REQUEST, "request body too large")
            break
    else:
        transport.client_gone()


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None once it passes `limit` bytes (the rest is left unread)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def _wants_protobuf(scope: dict[str, Any]) -> bool:
    """Whether the request speaks protobuf: centrifuge-js's protobuf build says so by its
    Content-Type (the connect request and every emulation request), Centrifugo also by
    `cf_protocol=protobuf`."""
    content_type = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
    if content_type == "application/octet-stream":
        return True
    query = scope.get("query_string", b"").decode("latin-1")
    return "protobuf" in parse_qs(query, errors="replace").get("cf_protocol", ())


def _connect_param(scope: dict[str, Any]) -> bytes | None:
    query = scope.get("query_string", b"").decode("latin-1")
    params = parse_qs(query, keep_blank_values=True, errors="replace")
    # `connect` is the parameter's older name in Centrifugo.
    values = params.get("cf_connect") or params.get("connect")
    return values[0].encode("utf-8", "replace") if values else None


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _cors(origin: str | None) -> list[tuple[bytes, bytes]]:
    """A browser page on another origin may read the stream and the emulation answers: the
    app's `allowed_domain` is enforced by the session (connect refuses an origin the app does
    not allow, and a session ignores emulation requests from one)."""
    if origin is None:
        return []
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
    ]


async def _preflight(scope: dict[str, Any], send: Send, origin: str | None) -> None:
    headers = [
        *_cors(origin),
        (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
        (b"access-control-max-age", b"600"),
    ]
    requested = _header(scope, b"access-control-request-headers")
    if requested and requested != "null":
        headers.append((b"access-control-allow-headers", requested.encode("latin-1")))
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _error(send: Send, status: int, message: str, origin: str | None) -> None:
    """The project's JSON error shape, `{"error": "..."}`."""
    body = error_body(message)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *_cors(origin),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
