"""The engine's WebSocket endpoint, plugged into uvicorn as its `ws` protocol class.

uvicorn parses the HTTP request and, on an upgrade, hands the raw request bytes and the socket
to this class; from then on it only moves bytes. The handshake and incoming frames go through
websockets' sans-I/O `ServerProtocol`; outgoing data frames are framed here once per payload
and written straight to the transport, so fan-out pays no per-subscriber framework cost.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import TYPE_CHECKING, Any

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from xshathra.engine.client import ClientSession
from xshathra.engine.writer import OutgoingFrame
from xshathra.protocol.codes import DisconnectCode
from xshathra.protocol.json_codec import join_frames

if TYPE_CHECKING:
    from xshathra.engine.node import Node

log = logging.getLogger("xshathra.websocket")

ENGINE_PATHS = frozenset({"/realtime/connection/websocket", "/connection/websocket"})
NODE_STATE_KEY = "xshathra_node"
CLOSE_GRACE_SECONDS = 5.0


def ws_text_frame(payload: bytes) -> bytes:
    """An unmasked, final text frame (server-to-client frames are never masked)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class CentrifugeWebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection on an engine path. uvicorn constructs it with these arguments."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any]) -> None:
        self._server_state = server_state
        self._node: Node | None = app_state.get(NODE_STATE_KEY)
        max_size = self._node.settings.max_message_size if self._node is not None else 65536
        # No extensions: data frames are written here directly, uncompressed.
        self._ws = ServerProtocol(max_size=max_size)
        self._transport: asyncio.Transport | None = None
        self._session: ClientSession | None = None
        self._fragments: list[bytes] = []
        self._closing = False  # TCP close under way
        self._close_sent = False  # our Close frame is out: no more data frames
        self._abort_timer: asyncio.TimerHandle | None = None
        self.remote_ip = ""
        self.origin: str | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._server_state.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.remote_ip = peer[0] if isinstance(peer, tuple) and peer else ""

    def connection_lost(self, exc: Exception | None) -> None:
        self._server_state.connections.discard(self)
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        if self._session is not None:
            self._session.on_transport_closed()
            self._session = None

    def data_received(self, data: bytes) -> None:
        self._ws.receive_data(data)
        for event in self._ws.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._frame(event.opcode, bytes(event.data), event.fin)
        self._write_protocol_output()
        if self._ws.close_expected() and self._transport is not None and not self._closing:
            # The closing handshake is complete (or the peer broke the protocol).
            self._closing = True
            self._close_soon()

    def eof_received(self) -> bool | None:
        self._ws.receive_eof()
        self._write_protocol_output()
        return None

    # --- uvicorn hooks --------------------------------------------------------------------------

    def shutdown(self) -> None:
        """uvicorn is stopping: tell the client to reconnect elsewhere."""
        if self._session is not None:
            self._session.disconnect(DisconnectCode.SHUTDOWN)
        elif self._transport is not None:
            self._transport.close()

    # --- handshake and frames -------------------------------------------------------------------

    def _handshake(self, request: Request) -> None:
        path = request.path.split("?", 1)[0].rstrip("/") or "/"
        if path not in ENGINE_PATHS:
            self._ws.send_response(self._ws.reject(404, "Not Found\n"))
            self._closing = True
            self._write_protocol_output()
            self._close_soon()
            return
        if self._node is None:
            self._ws.send_response(self._ws.reject(503, "Service Unavailable\n"))
            self._closing = True
            self._write_protocol_output()
            self._close_soon()
            return
        response = self._ws.accept(request)
        self._ws.send_response(response)
        if response.status_code != 101:
            self._closing = True
            self._write_protocol_output()
            self._close_soon()
            return
        self.origin = request.headers.get("Origin")
        self._session = ClientSession(self._node, self)

    def _frame(self, opcode: Opcode, data: bytes, fin: bool) -> None:
        if opcode in (Opcode.TEXT, Opcode.BINARY):
            if fin:
                self._deliver(data)
            else:
                self._fragments = [data]
        elif opcode is Opcode.CONT:
            self._fragments.append(data)
            if fin:
                message, self._fragments = b"".join(self._fragments), []
                self._deliver(message)
        # PING, PONG and CLOSE are answered by the sans-I/O protocol itself.

    def _deliver(self, message: bytes) -> None:
        if self._session is not None:
            self._session.on_message(message)

    def _write_protocol_output(self) -> None:
        if self._transport is None:
            return
        for chunk in self._ws.data_to_send():
            if chunk:
                self._transport.write(chunk)
            elif not self._closing:
                # b"" is the sans-I/O signal to end our side of TCP. Half-close and keep reading
                # (the protocol discards what still arrives) until the client closes too:
                # closing outright with its bytes unread would reset the connection, and the
                # client would never read our close code.
                self._closing = True
                if self._transport.can_write_eof():
                    self._transport.write_eof()
                else:
                    self._transport.close()
                if self._abort_timer is not None:
                    self._abort_timer.cancel()
                loop = asyncio.get_running_loop()
                self._abort_timer = loop.call_later(CLOSE_GRACE_SECONDS, self._abort)

    def _close_soon(self) -> None:
        """Close after the buffer drains; abort if the peer does not read it in time."""
        if self._transport is None:
            return
        self._transport.close()
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        loop = asyncio.get_running_loop()
        self._abort_timer = loop.call_later(CLOSE_GRACE_SECONDS, self._abort)

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- ClientTransport (what the session sees) -------------------------------------------------

    def send_frames(self, frames: list[OutgoingFrame]) -> None:
        transport = self._transport
        if transport is None or self._closing or self._close_sent:
            return
        if len(frames) == 1:
            frame = frames[0]
            wire = frame.wire
            if wire is None:
                wire = frame.wire = ws_text_frame(frame.payload)
            transport.write(wire)
        else:
            # Several messages this tick: one frame, newline-joined, one write.
            transport.write(ws_text_frame(join_frames([f.payload for f in frames])))

    def buffered_bytes(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake. TCP is closed once the client answers with its own Close
        (RFC 6455 7.1.1): closing at once, with the client's bytes unread, would reset the
        connection and the client would never read the code. A silent client is cut off after
        CLOSE_GRACE_SECONDS."""
        if self._closing or self._close_sent or self._transport is None:
            return
        self._close_sent = True
        self._ws.send_close(code, reason)
        self._write_protocol_output()
        loop = asyncio.get_running_loop()
        self._abort_timer = loop.call_later(CLOSE_GRACE_SECONDS, self._abort)
