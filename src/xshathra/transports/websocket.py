"""The engine's WebSocket endpoint, plugged into uvicorn as its `ws` protocol class.

uvicorn parses the HTTP request and, on an upgrade, hands the raw request bytes and the socket
to this class; from then on it only moves bytes. websockets' sans-I/O `ServerProtocol` checks
the handshake and writes the response, and is then dropped: frames are parsed by `FrameReader`
(transports.frames), which keeps a few fields per connection instead of a protocol object, a
generator and the handshake request. Outgoing data frames are framed here once per payload and
written straight to the transport, so fan-out pays no per-subscriber framework cost. It is a
`Transport` (transports.base): bidirectional, with the codec chosen at the handshake: JSON in
text frames, or protobuf in binary frames when the client asks for the `centrifuge-protobuf`
subprotocol (centrifuge-js's and centrifuge-python's way) or `?format=protobuf` (Centrifugo's
query parameter; `?cf_protocol=protobuf` is the centrifuge library's spelling of it).

Every write is bounded (issue 11, H3). Reading stops while the connection's unsent output is
above a high-water mark (the transport's `pause_writing` / `resume_writing`, called only when
the mark is crossed, so fan-out pays nothing per delivery): a client that sends faster than it
reads, pings included, is slowed to its own reading pace instead of growing our memory, and
past `client_queue_max_bytes` it is cut off as slow (3008). Before `connect`, a connection has
a small budget of bytes in and out; the session's connect deadline closes it with 3502.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, parse_qsl

from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from xshathra.engine.client import ClientSession, State
from xshathra.engine.writer import OutgoingFrame
from xshathra.protocol import messages as m
from xshathra.protocol.codec import Codec, ProtocolDecodeError, WireFormat
from xshathra.protocol.codes import DisconnectCode, should_reconnect
from xshathra.protocol.json_codec import JSON_CODEC
from xshathra.protocol.protobuf_codec import PROTOBUF_CODEC
from xshathra.protocol.uni_json_codec import UNI_WEBSOCKET_CODEC, connect_command
from xshathra.transports.frames import (
    BINARY,
    CLOSE,
    PING,
    RSV1,
    TEXT,
    FrameReader,
    ProtocolViolation,
    close_code,
    close_frame,
    deflate_message,
    pong_frame,
    ws_frame,
)

if TYPE_CHECKING:
    from xshathra.engine.node import Node
    from xshathra.transports.base import Transport

log = logging.getLogger("xshathra.websocket")

UNI_PATHS = frozenset({"/realtime/connection/uni_websocket", "/connection/uni_websocket"})
ENGINE_PATHS = frozenset({"/realtime/connection/websocket", "/connection/websocket"}) | UNI_PATHS
PUSHER_PATH_PREFIX = "/app/"  # Pusher's `/app/{key}` (transports.pusher)
NODE_STATE_KEY = "xshathra_node"
CLOSE_GRACE_SECONDS = 5.0
MAX_HANDSHAKE_BYTES = 64 * 1024
# Unsent output above which a connection is no longer read from (and below which it is again):
# a quarter of the slow-consumer limit, at most this much.
MAX_HIGH_WATER = 256 * 1024
# The first byte of a final, unmasked data frame of each wire format.
_DATA_FRAME = {WireFormat.TEXT: 0x80 | TEXT, WireFormat.BINARY: 0x80 | BINARY}
# The subprotocol of the binary format. JSON clients ask for none.
PROTOBUF_SUBPROTOCOL = Subprotocol("centrifuge-protobuf")
# Query parameters that name the format, as Centrifugo (`format`) and the centrifuge library
# (`cf_protocol`) read them.
_FORMAT_PARAMS = ("format", "cf_protocol")


def _select_subprotocol(
    protocol: ServerProtocol, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """`centrifuge-protobuf` when the client offers it; otherwise none, whatever else it
    offers (websockets' default would refuse a client that offers none of ours: every JSON
    client)."""
    return PROTOBUF_SUBPROTOCOL if PROTOBUF_SUBPROTOCOL in offered else None


def _codec_for(request: Request, subprotocol: str | None) -> Codec:
    """The session's codec: protobuf when the subprotocol or the query asks for it."""
    if subprotocol == PROTOBUF_SUBPROTOCOL:
        return PROTOBUF_CODEC
    _, _, query = request.path.partition("?")
    if query:
        for key, value in parse_qsl(query):
            if key in _FORMAT_PARAMS and value == "protobuf":
                return PROTOBUF_CODEC
    return JSON_CODEC


def _release_http_protocol(transport: asyncio.BaseTransport, successor: object) -> None:
    """uvicorn's HTTP protocol, which hands the connection over to us, and its request parser
    refer to each other; uvicorn breaks that cycle when a connection is lost, never when it is
    upgraded, so each WebSocket would leave a few kilobytes to the cyclic garbage collector,
    fragmenting the heap between collections. The protocol is never used again: break it."""
    previous = transport.get_protocol()
    if previous is not successor and getattr(previous, "parser", None) is not None:
        previous.parser = None  # type: ignore[attr-defined]


class CentrifugeWebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection on an engine path. uvicorn constructs it with these arguments."""

    # Transport (transports.base): class attributes, nothing per connection, but the codec.
    name = "websocket"
    unidirectional = False
    emulation = False

    __slots__ = (
        "_abort_timer",
        "_budget",
        "_close_sent",
        "_closing",
        "_codec",
        "_deflate_bits",
        "_discarding",
        "_handshake_bytes",
        "_max_buffered",
        "_node",
        "_reader",
        "_server_state",
        "_session",
        "_transport",
        "_ws",
        "origin",
        "query",
        "request_headers",
    )

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any]) -> None:
        self._server_state = server_state
        self._node: Node | None = app_state.get(NODE_STATE_KEY)
        # Only until the handshake is answered. permessage-deflate is offered only when
        # configured, and then with no context takeover either way (see transports.frames).
        compress = self._node is not None and self._node.options.websocket_compression
        self._ws: ServerProtocol | None = ServerProtocol(
            max_size=self._max_size(),
            select_subprotocol=_select_subprotocol,
            extensions=[
                ServerPerMessageDeflateFactory(
                    server_no_context_takeover=True, client_no_context_takeover=True
                )
            ]
            if compress
            else None,
        )
        # The window of our compressed messages, once negotiated; 0: none are compressed.
        self._deflate_bits = 0
        self._codec: Codec = JSON_CODEC  # until the handshake chooses
        self._handshake_bytes = b""  # the request, until its blank line has arrived
        self._reader: FrameReader | None = None  # once open
        self._transport: asyncio.Transport | None = None
        self._session: ClientSession | None = None
        self._closing = False  # TCP close under way
        self._close_sent = False  # our Close frame is out: no more data frames
        self._discarding = False  # failed: what still arrives is read and dropped
        self._abort_timer: asyncio.TimerHandle | None = None
        # Bytes this connection may still send and be sent before its `connect` succeeds; None
        # once connected.
        self._budget: int | None = self._preconnect_budget()
        self._max_buffered = (
            self._node.options.client_queue_max_bytes if self._node is not None else 1 << 20
        )
        self.origin: str | None = None
        self.request_headers: Sequence[tuple[str, str]] | None = None
        self.query = ""

    @property
    def codec(self) -> Codec:
        """The wire format this session speaks, chosen at the handshake. Read per subscribe and
        per merged write, never per fanned-out delivery."""
        return self._codec

    @property
    def wire_format(self) -> WireFormat:
        return self._codec.wire_format

    @property
    def framing(self) -> str:
        """Connections that compress (with one window size) frame alike, apart from the rest:
        a fanned-out frame is compressed once for all of them. Read when a subscription is
        made or dropped, never per delivery."""
        return f"websocket+deflate{self._deflate_bits}" if self._deflate_bits else "websocket"

    @property
    def remote_ip(self) -> str:
        """Asked for rarely: not kept per connection."""
        peer = self._transport.get_extra_info("peername") if self._transport else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else ""

    def _max_size(self) -> int:
        return self._node.options.max_message_size if self._node is not None else 65536

    def _handshake_limit(self) -> int:
        """uvicorn has parsed the request within the head limit: this is generous."""
        if self._node is None:
            return MAX_HANDSHAKE_BYTES
        return max(MAX_HANDSHAKE_BYTES, self._node.options.max_header_bytes + 4096)

    def _preconnect_budget(self) -> int:
        """Room for one connect command of the largest size, at least."""
        if self._node is None:
            return 0
        options = self._node.options
        return max(options.preconnect_max_bytes, options.max_message_size + 4096)

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _release_http_protocol(transport, self)
        self._transport = transport  # type: ignore[assignment]
        high = min(MAX_HIGH_WATER, self._max_buffered // 4)
        transport.set_write_buffer_limits(high=high, low=high // 4)  # type: ignore[attr-defined]
        self._server_state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server_state.connections.discard(self)
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        if self._session is not None:
            self._session.on_transport_closed()
            self._session = None

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._reader is None:  # the handshake is bounded by the HTTP layer's head limit
            self._handshake_data(data)
            return
        if self._budget is not None and self._spend(len(data)):
            return
        try:
            messages = self._reader.feed(data)
        except ProtocolViolation as exc:
            self._fail(exc.code, exc.reason)
            return
        for opcode, payload in messages:
            if opcode in (TEXT, BINARY):
                if not self._close_sent and self._session is not None:
                    if self.unidirectional:
                        self._uni_message(self._session, payload)
                    else:
                        self._session.on_message(payload)
            elif opcode == PING:
                if not self._close_sent and self._pong(payload):
                    return
            elif opcode == CLOSE:
                self._close_received(payload)
                return
            # PONG: nothing to answer (the engine's own ping is an application message), but
            # parsing a flood of them is work like any other frame's.
            elif self._session is not None and not self._session.control_frame_allowed():
                self._session.disconnect(DisconnectCode.TOO_MANY_REQUESTS)
                return

    def eof_received(self) -> bool | None:
        return None  # the client is gone: let the transport close

    def pause_writing(self) -> None:
        """Unsent output passed the high-water mark: stop reading this client until it has
        read its replies, so it cannot make us buffer more of them."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def resume_writing(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    # --- bounds ---------------------------------------------------------------------------------

    def _spend(self, n: int) -> bool:
        """Count `n` bytes against the pre-connect budget; True when the connection is done
        for (its budget ran out, and it is being closed)."""
        session = self._session
        if session is not None and session.state is State.CONNECTED:
            self._budget = None
            return False
        budget = self._budget = (self._budget or 0) - n
        if budget >= 0:
            return False
        self._discarding = True
        if session is not None:
            session.disconnect(DisconnectCode.BAD_REQUEST, "too much data before connect")
        else:
            self._close_soon()
        # Nothing it sends matters now: leave it unread (its sends stall) until the close
        # grace ends or it closes.
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()
        return True

    def _pong(self, payload: bytes) -> bool:
        """Answer a ping, within the same bounds as any other write; True when the connection
        is being closed instead (pings count against the command rate: they are work)."""
        session, transport = self._session, self._transport
        if session is None or transport is None:
            return True
        if not session.control_frame_allowed():
            session.disconnect(DisconnectCode.TOO_MANY_REQUESTS)
            return True
        frame = pong_frame(payload)
        if self._budget is not None and self._spend(len(frame)):
            return True
        transport.write(frame)
        if transport.get_write_buffer_size() > self._max_buffered:
            session.writer_slow()
            return True
        return False

    # --- uvicorn hooks --------------------------------------------------------------------------

    def shutdown(self) -> None:
        """uvicorn is stopping: tell the client to reconnect elsewhere."""
        if self._session is not None:
            self._session.disconnect(DisconnectCode.SHUTDOWN)
        elif self._transport is not None:
            self._transport.close()

    # --- handshake --------------------------------------------------------------------------------

    def _handshake_data(self, data: bytes) -> None:
        """Feed websockets exactly the HTTP request; bytes after it are already frames."""
        buffered = self._handshake_bytes + data
        end = buffered.find(b"\r\n\r\n")
        if end < 0:
            if len(buffered) > self._handshake_limit():
                self._discarding = True
                self._close_soon()
                return
            self._handshake_bytes = buffered
            return
        self._handshake_bytes = b""
        request_bytes, rest = buffered[: end + 4], buffered[end + 4 :]
        ws = self._ws
        assert ws is not None
        ws.receive_data(request_bytes)
        for event in ws.events_received():
            if isinstance(event, Request):
                self._handshake(ws, event)
                break
        else:  # not a valid request: websockets has answered it
            self._refuse(ws)
            return
        if self._reader is not None and rest:
            self.data_received(rest)

    def _handshake(self, ws: ServerProtocol, request: Request) -> None:
        path = request.path.split("?", 1)[0].rstrip("/") or "/"
        if path.startswith(PUSHER_PATH_PREFIX) and self._node is not None:
            # Pusher clients (SPEC §10): imported here, since that module builds on this one.
            from xshathra.transports.pusher import open_pusher

            open_pusher(self, ws, request)
            return
        if path not in ENGINE_PATHS:
            ws.send_response(ws.reject(404, "Not Found\n"))
            self._refuse(ws)
            return
        if self._node is None:
            ws.send_response(ws.reject(503, "Service Unavailable\n"))
            self._refuse(ws)
            return
        response = ws.accept(request)
        ws.send_response(response)
        if response.status_code != 101:
            self._refuse(ws)
            return
        self._codec = _codec_for(request, ws.subprotocol)
        self._write_all(ws)
        self._ws = None  # open now: websockets' part is done
        for extension in ws.extensions:
            if isinstance(extension, PerMessageDeflate):
                self._deflate_bits = extension.local_max_window_bits
        self._reader = FrameReader(self._max_size(), inflate=bool(self._deflate_bits))
        self.origin = request.headers.get("Origin")
        self.request_headers = list(request.headers.raw_items())
        self.query = request.path.partition("?")[2]
        if path in UNI_PATHS:
            # Same slots, other class attributes (framing, unidirectional): nothing per
            # connection for the bidirectional majority. JSON only, as Centrifugo's.
            self.__class__ = UniWebSocketProtocol
            self._codec = UNI_WEBSOCKET_CODEC
        session = self._session = ClientSession(self._node, self)
        if self.unidirectional:
            request_param = _connect_param(request.path)
            if request_param is not None:
                self._uni_message(session, request_param)

    def _uni_message(self, session: ClientSession, payload: bytes) -> None:
        """A unidirectional client's messages: the first is its connect request (unless the
        URL carried it as `cf_connect`); later ones are read and ignored, as Centrifugo does,
        within the command rate."""
        if session.awaiting_connect:
            try:
                command = connect_command(payload)
            except ProtocolDecodeError:
                session.disconnect(DisconnectCode.BAD_REQUEST, "malformed connect request")
                return
            session.on_message(command)
        elif not session.control_frame_allowed():
            session.disconnect(DisconnectCode.TOO_MANY_REQUESTS)

    def _refuse(self, ws: ServerProtocol) -> None:
        self._closing = self._discarding = True
        self._write_all(ws)
        self._ws = None
        self._close_soon()

    def _write_all(self, ws: ServerProtocol) -> None:
        if self._transport is None:
            return
        for chunk in ws.data_to_send():
            if chunk:  # b"" is websockets' end-of-stream signal; closing is ours to do
                self._transport.write(chunk)

    # --- closing --------------------------------------------------------------------------------

    def _close_received(self, payload: bytes) -> None:
        """The client's Close: answer it (unless it answers ours), then end TCP; after the
        closing handshake the server closes the connection first (RFC 6455 7.1.1)."""
        if not self._close_sent and self._transport is not None:
            self._close_sent = True
            code = close_code(payload)
            self._transport.write(close_frame(1000 if code == 1005 else code))
        self._discarding = True
        if not self._closing:
            self._closing = True
            self._close_soon()

    def _fail(self, code: int, reason: str) -> None:
        """The client broke the protocol: send Close with `code`, then half-close and keep
        reading (dropping it) until the client closes too. Closing outright with its bytes
        unread would reset the connection, and the client would never read the code."""
        transport = self._transport
        self._discarding = True
        if transport is None or self._closing:
            return
        if not self._close_sent:
            self._close_sent = True
            transport.write(close_frame(code, reason))
        self._closing = True
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()
        self._start_abort_timer()

    def _close_soon(self) -> None:
        """Close after the buffer drains; abort if the peer does not read it in time."""
        if self._transport is None:
            return
        self._transport.close()
        self._start_abort_timer()

    def _start_abort_timer(self) -> None:
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        loop = asyncio.get_running_loop()
        self._abort_timer = loop.call_later(CLOSE_GRACE_SECONDS, self._abort)

    def _abort(self) -> None:
        self._abort_timer = None
        if self._transport is not None:
            self._transport.abort()

    # --- ClientTransport (what the session sees) -------------------------------------------------

    def send_frame(self, frame: OutgoingFrame) -> int:
        transport = self._transport
        if transport is None or self._closing or self._close_sent:
            return 0
        wire = frame.wire
        if wire is None:  # framed once, however many subscribers it goes to
            first, payload = _DATA_FRAME[self._codec.wire_format], frame.payload
            if self._deflate_bits:
                options = self._node.options  # type: ignore[union-attr]
                if len(payload) >= options.websocket_compression_min_size:
                    # Compressed once too: the frame goes to connections of this framing only.
                    first |= RSV1
                    payload = deflate_message(
                        payload, options.websocket_compression_level, self._deflate_bits
                    )
            wire = frame.wire = ws_frame(first, payload)
        transport.write(wire)
        return transport.get_write_buffer_size()

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake. TCP is closed once the client answers with its own Close
        (RFC 6455 7.1.1): closing at once, with the client's bytes unread, would reset the
        connection and the client would never read the code. A silent client is cut off after
        CLOSE_GRACE_SECONDS."""
        if self._closing or self._close_sent or self._transport is None:
            return
        self._close_sent = True
        self._transport.write(close_frame(code, reason))
        self._start_abort_timer()


class UniWebSocketProtocol(CentrifugeWebSocketProtocol):
    """A `uni_websocket` connection (the handshake switches a connection to this class): the
    client sends one connect request and then only reads, getting bare pushes, one per text
    message, and `{}` as the ping. A server disconnect is a `disconnect` push, then the close
    frame with the same code (Centrifugo's default since 6.5.1)."""

    __slots__ = ()

    name = "uni_websocket"
    framing = "uni_websocket"  # one push per message: framed apart from bidirectional ones
    unidirectional = True

    def send_frame(self, frame: OutgoingFrame) -> int:
        transport = self._transport
        if transport is None or self._closing or self._close_sent:
            return 0
        wire = frame.wire
        if wire is None:  # a tick's merged pushes: each its own message
            wire = frame.wire = b"".join(
                ws_frame(_DATA_FRAME[WireFormat.TEXT], line) for line in frame.payload.split(b"\n")
            )
        transport.write(wire)
        return transport.get_write_buffer_size()

    def close(self, code: int, reason: str) -> None:
        transport = self._transport
        if self._closing or self._close_sent or transport is None:
            return
        push = m.Push(
            disconnect=m.Disconnect(code=code, reason=reason, reconnect=should_reconnect(code))
        )
        payload = self.codec.encode_reply(m.Reply(push=push))
        transport.write(ws_frame(_DATA_FRAME[WireFormat.TEXT], payload))
        super().close(code, reason)


def _connect_param(target: str) -> bytes | None:
    """`cf_connect` of a request target, if any (Centrifugo 6.3's alternative to a first
    message)."""
    if "?" not in target:
        return None
    params = parse_qs(target.split("?", 1)[1], keep_blank_values=True, errors="replace")
    values = params.get("cf_connect")
    return values[0].encode("utf-8", "replace") if values else None


if TYPE_CHECKING:
    # Checked by mypy only: the class implements Transport (subclassing the Protocol would give
    # every connection a __dict__).
    def _implements_transport(ws: CentrifugeWebSocketProtocol) -> Transport:
        return ws
