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
- SSE and HTTP streaming (`transports/streams.py`, docs/transports.md): `StreamTransport`,
  one class for the four kinds (`sse`, `http_stream` emulated; `uni_sse`, `uni_http_stream`),
  a held-open ASGI response. Under uvicorn it writes each frame straight to the socket as one
  HTTP chunk, as the WebSocket transport writes a frame, so the writer and the slow-consumer
  limit work unchanged; its `framing` ("sse+chunked", "http_stream+chunked") names what the
  shared framed bytes hold.
- Unidirectional (uni SSE, uni HTTP streaming, `uni_websocket`): the transport reads the
  connect request from the HTTP request (query, body or first message), turns it into a connect
  command (`protocol/uni_json_codec.py`) and hands it to the session as its first message; its
  codec writes bare pushes. The engine, keyed on `unidirectional`, sends the connect result as
  a `connect` push (a refusal as a disconnect) and awaits no pong after a ping.
- Bidirectional emulation (`emulation`): the session gets an emulation session id at connect;
  the emulation endpoint hands later commands to it by that id, over the control bus when the
  request reached another node (`Node.emulate`).
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
