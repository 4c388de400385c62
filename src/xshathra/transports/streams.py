"""Client sessions on a held-open HTTP response: Server-Sent Events and HTTP streaming, both
bidirectional-emulated (centrifuge-js's `sse` and `http_stream`) and unidirectional
(`uni_sse`, `uni_http_stream`), plus the emulation endpoint the emulated ones send commands to.

Each stream is a `Transport` (transports.base) served as a plain ASGI response, ahead of the
FastAPI app. Frames go through the same `Writer` as WebSocket ones, and `send_frame` never
awaits. Under uvicorn (always, in practice) a stream writes like a WebSocket does: once the
response head is out, each frame goes straight to the socket as one HTTP chunk (framed once per
fan-out, chunk header included), and `send_frame` returns the socket's unsent bytes, so a
client that stops reading is cut off as slow (3008) at `client_queue_max_bytes`. Fan-out thus
wakes no coroutine per subscriber. Only the response's end goes through uvicorn's `send` (its
last chunk). Where the socket cannot be reached (another ASGI server), frames are queued here
and written by the request's coroutine instead, within the same limit. One more task per stream
waits for the client to go away.

Framing, Centrifugo's:
- HTTP streaming: one JSON message per line (`\\n`-terminated).
- SSE: one event per message, `data: <json>\\n\\n`; an empty message (the uni_sse ping) is
  written `event: ping\\ndata:\\n\\n`.

A server disconnect cannot be a close frame here: it is written as a `disconnect` push, then
the response ends.

Routes (the `/realtime` prefix is optional, as for WebSocket):
- `POST /realtime/connection/http_stream`: body = the connect command (JSON protocol).
- `GET /realtime/connection/sse?cf_connect=<connect command>` (or POST with it as the body).
- `POST /realtime/emulation`: `{"node", "session", "data"}`: commands for a stream; 204.
- `GET /realtime/connection/uni_sse?cf_connect=<ConnectRequest>` (or POST body).
- `POST /realtime/connection/uni_http_stream`: body = a `ConnectRequest`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from xshathra.engine.client import ClientSession
from xshathra.engine.node import EmulationOutcome
from xshathra.engine.writer import OutgoingFrame
from xshathra.protocol import messages as m
from xshathra.protocol.codec import Codec, ProtocolDecodeError, WireFormat
from xshathra.protocol.codes import DisconnectCode, should_reconnect
from xshathra.protocol.json_codec import JSON_CODEC
from xshathra.protocol.uni_json_codec import (
    UNI_HTTP_STREAM_CODEC,
    UNI_SSE_CODEC,
    connect_command,
    decode_emulation,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from xshathra.engine.node import Node
    from xshathra.transports.base import Transport

    Receive = Callable[[], Awaitable[dict[str, Any]]]
    Send = Callable[[dict[str, Any]], Awaitable[None]]

log = logging.getLogger("xshathra.streams")

# Where uvicorn's HTTP protocol finds the stream of a request it is asked to shut down.
SCOPE_KEY = "xshathra.stream"
EMULATION_PATHS = frozenset({"/realtime/emulation", "/emulation"})
# Room around a command of the largest size in a request body (the envelope, escaping).
BODY_OVERHEAD = 4096
# How long a closed stream's last bytes may take to be read before the connection is cut.
CLOSE_GRACE_SECONDS = 5.0


def frame_http_stream(payload: bytes) -> bytes:
    """Newline-delimited messages: a tick's merged frame is already newline-joined."""
    return payload + b"\n"


def frame_sse(payload: bytes) -> bytes:
    """One event per message, so a plain EventSource's `data` is always one JSON value."""
    return b"".join(
        b"data: " + line + b"\n\n" if line else b"event: ping\ndata:\n\n"
        for line in payload.split(b"\n")
    )


def chunked(framer: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """`framer`'s output as one HTTP/1.1 chunk, as uvicorn would write it."""

    def frame(payload: bytes) -> bytes:
        body = framer(payload)
        return b"%x\r\n" % len(body) + body + b"\r\n"

    return frame


@dataclass(frozen=True, slots=True)
class StreamKind:
    name: str  # the transport's name, as Centrifuge spells it
    codec: Codec
    framing: str
    unidirectional: bool
    content_type: bytes

    @property
    def emulation(self) -> bool:
        return not self.unidirectional


_SSE_TYPE = b"text/event-stream; charset=utf-8"
KINDS: dict[str, StreamKind] = {
    "http_stream": StreamKind("http_stream", JSON_CODEC, "http_stream", False, b"application/json"),
    "sse": StreamKind("sse", JSON_CODEC, "sse", False, _SSE_TYPE),
    "uni_http_stream": StreamKind(
        "uni_http_stream", UNI_HTTP_STREAM_CODEC, "http_stream", True, b"application/json"
    ),
    "uni_sse": StreamKind("uni_sse", UNI_SSE_CODEC, "sse", True, _SSE_TYPE),
}
_FRAMERS = {
    "http_stream": frame_http_stream,
    "sse": frame_sse,
    # Written straight to the socket: the chunk header is part of the shared framed bytes.
    "http_stream+chunked": chunked(frame_http_stream),
    "sse+chunked": chunked(frame_sse),
}
STREAM_PATHS: dict[str, StreamKind] = {
    f"{prefix}/connection/{name}": kind
    for name, kind in KINDS.items()
    for prefix in ("/realtime", "")
}


class StreamTransport:
    """One client's held-open response. Frames are queued by the writer (never awaiting) and
    written by `pump`, the request's coroutine."""

    __slots__ = (
        "_chunks",
        "_closing",
        "_direct",
        "_framer",
        "_framing",
        "_gone",
        "_grace",
        "_inflight",
        "_kind",
        "_queued",
        "_raw",
        "_remote_ip",
        "_waiter",
        "origin",
        "session",
    )

    wire_format = WireFormat.TEXT

    def __init__(self, kind: StreamKind, origin: str | None, remote_ip: str) -> None:
        self._kind = kind
        self._framing = kind.framing
        self._framer = _FRAMERS[kind.framing]
        self._direct = False  # frames go straight to the socket (see go_direct)
        self.origin = origin
        self._remote_ip = remote_ip
        self._chunks: list[bytes] = []
        self._queued = 0  # bytes in _chunks
        self._inflight = 0  # bytes handed to uvicorn whose send has not returned yet
        self._closing = False  # the session is done: write what is queued, then end
        self._gone = False  # the client went away: write nothing more
        self._waiter: asyncio.Future[None] | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._raw: asyncio.Transport | None = None  # the socket, to cut a silent client off
        self.session: ClientSession | None = None

    # --- Transport ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._kind.name

    @property
    def codec(self) -> Codec:
        return self._kind.codec

    @property
    def framing(self) -> str:
        return self._framing

    @property
    def unidirectional(self) -> bool:
        return self._kind.unidirectional

    @property
    def emulation(self) -> bool:
        return self._kind.emulation

    @property
    def remote_ip(self) -> str:
        return self._remote_ip

    def send_frame(self, frame: OutgoingFrame) -> int:
        if self._closing or self._gone:
            return 0
        wire = frame.wire
        if wire is None:  # framed once, however many subscribers it goes to
            wire = frame.wire = self._framer(frame.payload)
        if self._direct:
            raw = self._raw
            assert raw is not None
            if raw.is_closing():
                return 0  # gone: the disconnect watcher is about to say so
            raw.write(wire)
            return raw.get_write_buffer_size()
        self._queue(wire)
        return self._queued + self._inflight

    def go_direct(self, send: Send) -> None:
        """Once the response head is out: write frames straight to the socket, when uvicorn's
        `send` leads to it and the response is chunked (it is, having no length). uvicorn's
        request cycle holds both (uvicorn is pinned; tests/unit/transports pins the names)."""
        cycle = getattr(send, "__self__", None)
        raw = getattr(cycle, "transport", None)
        if raw is None or not hasattr(raw, "get_write_buffer_size"):
            return
        self._raw = raw
        if getattr(cycle, "chunked_encoding", None) is True and not self._chunks:
            self._framing = self._kind.framing + "+chunked"
            self._framer = _FRAMERS[self._framing]
            self._direct = True

    def close(self, code: int, reason: str) -> None:
        """No close frame on a stream: a `disconnect` push (after what is queued), then the
        response ends."""
        if self._closing or self._gone:
            return
        if code == DisconnectCode.SLOW:
            # What it could not read is dropped (what is queued here; not what the socket
            # holds already): it reconnects and recovers from history.
            self._chunks.clear()
            self._queued = 0
        push = m.Push(
            disconnect=m.Disconnect(code=code, reason=reason, reconnect=should_reconnect(code))
        )
        last = self._framer(self.codec.encode_reply(m.Reply(push=push)))
        if self._direct and self._raw is not None and not self._raw.is_closing():
            self._raw.write(last)
        elif not self._direct:
            self._queue(last)
        self._closing = True
        self._wake()
        # A client that does not read its last bytes would hold the socket (and our buffer)
        # for ever: it is cut off after a grace period, as on WebSocket.
        self._grace = asyncio.get_running_loop().call_later(CLOSE_GRACE_SECONDS, self._abort)

    def _abort(self) -> None:
        self._grace = None
        if self._raw is not None and not self._gone:
            self._raw.abort()  # uvicorn sees the connection lost: the pump's send returns

    # --- the response ---------------------------------------------------------------------------

    def shutdown(self) -> None:
        """The server is stopping (uvicorn asks each connection): tell the client to come back."""
        if self.session is not None:
            self.session.disconnect(DisconnectCode.SHUTDOWN)

    def _queue(self, wire: bytes) -> None:
        self._chunks.append(wire)
        self._queued += len(wire)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def client_gone(self) -> None:
        self._gone = True
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        self._wake()
        session = self.session
        if session is not None:
            session.on_transport_closed()

    async def pump(self, send: Send, first: bytes) -> None:
        """Write queued frames (none when direct) until the session closes or the client goes
        away, then end the response. `first` goes out before anything else (with `go_direct`,
        before it)."""
        loop = asyncio.get_running_loop()
        if first:
            await send({"type": "http.response.body", "body": first, "more_body": True})
        while not self._gone:
            if not self._chunks:
                if self._closing:
                    break
                self._waiter = loop.create_future()
                await self._waiter
                self._waiter = None
                continue
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._queued = 0
            self._inflight = len(data)
            await send({"type": "http.response.body", "body": data, "more_body": True})
            self._inflight = 0
        if not self._gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


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
            await self._emulation(receive, send, origin)
            return
        kind = STREAM_PATHS[path]
        await self._stream(kind, scope, receive, send, origin)

    # --- emulation ------------------------------------------------------------------------------

    async def _emulation(self, receive: Receive, send: Send, origin: str | None) -> None:
        body = await _read_body(receive, self.max_body)
        if body is None:
            await _error(send, 413, "request body too large", origin)
            return
        try:
            node_id, session, data = decode_emulation(body)
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
        headers = [
            (b"content-type", kind.content_type),
            (b"cache-control", b"private, no-cache, no-store, must-revalidate, max-age=0"),
            (b"x-accel-buffering", b"no"),
            *_cors(origin),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        scope[SCOPE_KEY] = transport
        watcher = asyncio.ensure_future(_watch_disconnect(receive, transport, self.max_body))
        try:
            if sse:  # an empty line first, as Centrifugo does, so proxies pass the headers on
                await send({"type": "http.response.body", "body": b"\r\n", "more_body": True})
            transport.go_direct(send)
            session = transport.session = ClientSession(self.node, transport)
            session.on_message(command)
            await transport.pump(send, b"")
        except OSError:
            pass  # the client went away while we wrote
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            transport.client_gone()


if TYPE_CHECKING:

    def _implements_transport(t: StreamTransport) -> Transport:
        return t


# --- helpers ------------------------------------------------------------------------------------


def _first_command(kind: StreamKind, request: bytes) -> bytes:
    """The connect command the session reads first; `ProtocolDecodeError` when the request is
    not a connect (a bidirectional stream's request is a protocol command, a uni one's a bare
    `ConnectRequest`)."""
    if kind.unidirectional:
        return connect_command(request)
    commands = JSON_CODEC.decode_commands(request)
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
    body = b'{"error":"' + message.encode() + b'"}'
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *_cors(origin),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
