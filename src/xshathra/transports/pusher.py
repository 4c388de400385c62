"""The Pusher WebSocket endpoint `/app/{key}`: the engine's WebSocket connection, speaking Pusher.

It is the same connection class as the Centrifuge endpoint (uvicorn hands every upgrade to
that one); at the handshake a request for `/app/{key}` becomes a `PusherWebSocketProtocol`,
which differs only in its codec and its framing: Pusher allows one message per WebSocket
message, so a tick's frames, newline-joined by the codec, go out as one text message each.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote

from websockets.http11 import Request
from websockets.server import ServerProtocol

from xshathra.engine.writer import OutgoingFrame
from xshathra.protocol.codec import Codec
from xshathra.protocol.pusher import PUSHER_CODEC
from xshathra.pusher.session import PusherSession
from xshathra.transports.frames import TEXT, FrameReader, ws_frame
from xshathra.transports.websocket import CentrifugeWebSocketProtocol

if TYPE_CHECKING:
    from xshathra.transports.base import Transport

from xshathra.transports.websocket import PUSHER_PATH_PREFIX

_TEXT_FRAME = 0x80 | TEXT
# Sessions being opened (their app looked up): held so the tasks are not collected.
_opening: set[asyncio.Task[None]] = set()


class PusherWebSocketProtocol(CentrifugeWebSocketProtocol):
    """A Centrifuge WebSocket connection turned Pusher at its handshake: no slots of its own,
    so that an instance can change class in place."""

    __slots__ = ()

    name = "pusher"
    framing = "pusher"
    codec: Codec = PUSHER_CODEC

    def send_frame(self, frame: OutgoingFrame) -> int:
        transport = self._transport
        if transport is None or self._closing or self._close_sent:
            return 0
        wire = frame.wire
        if wire is None:  # framed once, however many subscribers it goes to
            wire = frame.wire = b"".join(
                ws_frame(_TEXT_FRAME, line) for line in frame.payload.split(b"\n") if line
            )
        transport.write(wire)
        return transport.get_write_buffer_size()


def open_pusher(
    ws_protocol: CentrifugeWebSocketProtocol, ws: ServerProtocol, request: Request
) -> None:
    """Accept a handshake for `/app/{key}` and start the Pusher session on it."""
    node = ws_protocol._node
    assert node is not None
    response = ws.accept(request)
    ws.send_response(response)
    if response.status_code != 101:
        ws_protocol._refuse(ws)
        return
    ws_protocol._write_all(ws)
    ws_protocol._ws = None
    ws_protocol.__class__ = PusherWebSocketProtocol
    ws_protocol._reader = FrameReader(ws_protocol._max_size())
    ws_protocol.origin = request.headers.get("Origin")
    path, _, query = request.path.partition("?")
    key = unquote(path[len(PUSHER_PATH_PREFIX) :].rstrip("/"))
    session = PusherSession(node, ws_protocol)
    ws_protocol._session = session
    task = node.loop.create_task(session.open(key, dict(parse_qsl(query))))
    _opening.add(task)
    task.add_done_callback(_opening.discard)


if TYPE_CHECKING:

    def _implements_transport(ws: PusherWebSocketProtocol) -> Transport:
        return ws
