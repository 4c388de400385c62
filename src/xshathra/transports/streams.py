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
- HTTP streaming, protobuf (centrifuge-js's protobuf build): the codec's varint
  length-delimited `Reply`s as they are, self-delimiting. SSE has no protobuf form: an
  EventSource reads text.

A server disconnect cannot be a close frame here: it is written as a `disconnect` push, then
the response ends.

The routes that serve these streams, and the emulation endpoint: transports/stream_routes.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xshathra.engine.client import ClientSession
from xshathra.engine.writer import OutgoingFrame
from xshathra.protocol import messages as m
from xshathra.protocol.codec import Codec, WireFormat
from xshathra.protocol.codes import DisconnectCode, should_reconnect
from xshathra.protocol.json_codec import JSON_CODEC
from xshathra.protocol.protobuf_codec import PROTOBUF_CODEC
from xshathra.protocol.uni_json_codec import (
    UNI_HTTP_STREAM_CODEC,
    UNI_SSE_CODEC,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from xshathra.transports.base import Transport

    Receive = Callable[[], Awaitable[dict[str, Any]]]
    Send = Callable[[dict[str, Any]], Awaitable[None]]


# Where uvicorn's HTTP protocol finds the stream of a request it is asked to shut down.
SCOPE_KEY = "xshathra.stream"
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


def frame_protobuf(payload: bytes) -> bytes:
    """Length-delimited replies delimit themselves: nothing to add."""
    return payload


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
# The protobuf form of a kind, asked for by the connect request (see stream_routes). Not a
# path of its own: Centrifugo serves both formats on one endpoint.
PROTOBUF_KINDS: dict[str, StreamKind] = {
    "http_stream": StreamKind(
        "http_stream", PROTOBUF_CODEC, "protobuf", False, b"application/octet-stream"
    ),
}
_FRAMERS = {
    "http_stream": frame_http_stream,
    "sse": frame_sse,
    "protobuf": frame_protobuf,
    # Written straight to the socket: the chunk header is part of the shared framed bytes.
    "http_stream+chunked": chunked(frame_http_stream),
    "sse+chunked": chunked(frame_sse),
    "protobuf+chunked": chunked(frame_protobuf),
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
        "_holder",
        "_inflight",
        "_kind",
        "_queued",
        "_raw",
        "_remote_ip",
        "_waiter",
        "origin",
        "query",
        "request_headers",
        "session",
    )

    def __init__(self, kind: StreamKind, origin: str | None, remote_ip: str) -> None:
        self._kind = kind
        self._framing = kind.framing
        self._framer = _FRAMERS[kind.framing]
        self._direct = False  # frames go straight to the socket (see go_direct)
        self._holder: asyncio.Task[Any] | None = None  # the request's task, in `hold`
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
        # The opening request, for backend proxies (set by the route; see ClientTransport).
        self.request_headers: Sequence[tuple[str, str]] | None = None
        self.query = ""

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
    def wire_format(self) -> WireFormat:
        return self._kind.codec.wire_format

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

    @property
    def direct(self) -> bool:
        return self._direct

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
        holder = self._holder
        if holder is not None and holder is not asyncio.current_task():
            holder.cancel()  # wakes `hold`, which ends the response (its own call: it sees it)
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

    async def hold(self, receive: Receive, send: Send, limit: int) -> None:
        """When direct: the request's own task waits, with nothing to write, until the client
        goes away or the session ends the stream (`close` cancels the wait), then ends the
        response. One task per stream, no more. A request body the client still sends is read
        and dropped, up to `limit` bytes: past that it is disconnected (3501)."""
        task = self._holder = asyncio.current_task()
        assert task is not None
        extra = 0
        try:
            while not self._closing:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.client_gone()
                    return
                extra += len(message.get("body", b""))
                if extra > limit and self.session is not None:
                    self.session.disconnect(DisconnectCode.BAD_REQUEST, "request body too large")
        except asyncio.CancelledError:
            # Ours (from `close`) is taken back; any other (server shutdown) goes on.
            if not self._closing or task.uncancel() > 0:
                raise
        finally:
            self._holder = None
        if not self._gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

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


if TYPE_CHECKING:

    def _implements_transport(t: StreamTransport) -> Transport:
        return t
