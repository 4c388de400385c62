"""uvicorn's httptools HTTP protocol with the request head bounded in size and in time.

uvicorn reads every connection with this class first, WebSocket upgrades included (it parses
the upgrade request before handing the socket to `transports.websocket`), so this is where a
request head is bounded. uvicorn itself has no such bounds with httptools: a header of any size
is buffered, and a connection that never completes a request head (or never sends one) stays
open for ever; uvicorn's keep-alive timer only runs after a response, and any byte resets it.

- A head (request line and headers) over `max_header_bytes` is answered 431 and the connection
  closed. Bytes are counted as they are fed to the parser while a head is incomplete, so what
  is buffered is at most the limit plus one read.
- A head must be complete within `header_timeout` of the connection opening, or of the previous
  response on a kept-alive connection; otherwise 408 (or, when nothing was sent, a plain close).
  It is a deadline, not an idle timer: trickling bytes does not extend it.

The deadline does not run while a request is being handled, so a slow handler is never cut.
This subclasses uvicorn internals (uvicorn is pinned; tests/unit/transports/test_http_seam.py
pins the names relied on).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from xshathra.protocol.json_codec import error_body
from xshathra.transports.streams import SCOPE_KEY as STREAM_SCOPE_KEY
from xshathra.transports.streams import StreamTransport

# The scope key under which a held-open response leaves what ends it as the server stops
# (written as a string: transports/ does not import the dashboard).
ON_SHUTDOWN_KEY = "xshathra.on_shutdown"

# After a refusal, how long what the client still sends is read and dropped before the
# connection is closed. Closing with its bytes unread would reset the connection, and the
# client might never read the answer (nginx's "lingering close").
LINGER_SECONDS = 2.0


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Per connection: a byte count and one timer while a request head is awaited."""

    max_header_bytes = 65536
    header_timeout = 10.0

    @classmethod
    def configured(
        cls, max_header_bytes: int, header_timeout: float
    ) -> type[BoundedHttpToolsProtocol]:
        """The class uvicorn gets (it builds one per connection with its own arguments)."""
        return type(
            cls.__name__,
            (cls,),
            {"max_header_bytes": max_header_bytes, "header_timeout": header_timeout},
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_head = True  # between requests, or inside an incomplete head
        self._head_bytes = 0  # fed to the parser since the head began to be awaited
        self._head_timer: asyncio.TimerHandle | None = None
        self._lingering = False  # refused: what still arrives is dropped until closing

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._awaiting_head
            and self._head_bytes > self.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse(431, "request header fields too large")

    # --- httptools parser callbacks -------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The next head may begin now; its deadline starts once this request is answered.
        self._awaiting_head = True
        self._head_bytes = 0

    # --- uvicorn's response callback -------------------------------------------------------------

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._awaiting_head and not self.transport.is_closing():
            self._arm_head_timer()

    def shutdown(self) -> None:
        """uvicorn is stopping. A held-open stream (SSE, HTTP streaming) would hold the
        shutdown for its whole grace period: its session is told to reconnect elsewhere,
        which ends the response."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            stream = cycle.scope.get(STREAM_SCOPE_KEY)
            if isinstance(stream, StreamTransport):
                stream.shutdown()
            # Another held-open response (the dashboard console's event stream) is asked to
            # end through a callable it left in its scope (dashboard/console_stream.py).
            on_shutdown = cycle.scope.get(ON_SHUTDOWN_KEY)
            if callable(on_shutdown):
                on_shutdown()
        super().shutdown()

    # --- internals --------------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._awaiting_head or self.transport.is_closing():
            return
        if self._head_bytes:
            self._refuse(408, "request header timeout")
        else:
            self.transport.close()  # an idle connection: nothing to answer

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` with the JSON error shape, then end the connection: the parser state
        is unusable. Half-close and drop what still comes for LINGER_SECONDS first."""
        self._awaiting_head = False
        self._lingering = True
        self._unset_keepalive_if_required()
        self._cancel_head_timer()
        body = error_body(message)
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        transport = self.transport
        transport.write(b"".join(content))
        if transport.can_write_eof():
            transport.write_eof()
            self._head_timer = self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()
