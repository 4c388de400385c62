"""The transport seam: what every way of holding a client session declares and does. A transport
moves bytes for the codec it chose and frames them its own way; it knows no channel rule.

The engine sees a transport only as `ClientTransport` (engine/client.py): a sink for encoded
frames that names its `codec` and `framing`, plus `close`, `origin`, `remote_ip`, and the
opening HTTP request's `request_headers` and `query` (backend proxies read them). `Transport`
adds what the composition root and the HTTP side need to know of it: its name, the wire format
of the frames it writes, and whether the client can send on it at all.

How the coming transports and codecs plug in, touching `transports/` and `protocol/` only:

- Protobuf over WebSocket (done): `protocol/protobuf_codec.py`; the WebSocket transport picks
  it at the handshake (subprotocol `centrifuge-protobuf`, or `?format=protobuf`), keeps it per
  connection, and frames its output as binary messages by `codec.wire_format`. The hub groups
  those subscribers apart by (codec, framing), so each publication is encoded once per format.
- SSE and HTTP-streaming: a class per transport in `transports/`, an ASGI route or protocol
  that holds the response open, with `framing = "sse"` (each frame written as `data: ...\n\n`
  into `OutgoingFrame.wire`) or `"http_stream"` (length- or newline-delimited, as the codec
  requires), `unidirectional = True`, `wire_format` TEXT for SSE. Its `send_frame` returns the
  bytes the socket has not taken yet, as the WebSocket one does, so the slow-consumer limit
  holds unchanged.
- Uni-directional (SSE, HTTP-streaming, uni WebSocket): the transport reads the connect request
  from the HTTP request (query, body or first message), builds the `Command` itself and hands it
  to the session as the session's first message (`ClientSession.on_message` with the command
  encoded by the transport's codec). What the engine must honour for such a transport, keyed on
  `unidirectional`: the connect result goes out as a `connect` push, and no pong is awaited
  after a ping (the client cannot answer). Those two switches are the engine's part still to
  do; nothing else in the engine depends on the transport.
"""

from __future__ import annotations

from typing import Protocol

from xshathra.engine.client import ClientTransport
from xshathra.protocol.codec import WireFormat


class Transport(ClientTransport, Protocol):
    """One client connection on some transport, as the engine's session is given it."""

    @property
    def name(self) -> str:
        """The transport's name as Centrifuge spells it: "websocket", "sse", "http_stream"."""

    @property
    def wire_format(self) -> WireFormat:
        """The frames it writes: text or binary (its codec's, where it can carry either)."""

    @property
    def unidirectional(self) -> bool:
        """True when the client cannot send on it after the connect request (SSE,
        HTTP-streaming, uni-directional WebSocket): it gets pushes only."""
