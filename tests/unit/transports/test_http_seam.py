"""The seam between uvicorn's httptools protocol and `BoundedHttpToolsProtocol`.

The subclass hooks uvicorn internals (uvicorn is pinned): these tests fail on an upgrade that
renames or drops what it relies on, and check that `create_server` really uses it.
"""

from __future__ import annotations

import inspect

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from xshathra.server import create_server
from xshathra.settings import Settings
from xshathra.transports.http import BoundedHttpToolsProtocol


def test_uvicorn_still_has_the_hooks_the_subclass_overrides() -> None:
    for name in (
        "connection_made",
        "connection_lost",
        "data_received",
        "on_headers_complete",
        "on_message_complete",
        "on_response_complete",
        "_unset_keepalive_if_required",
    ):
        assert callable(getattr(HttpToolsProtocol, name, None)), name
    init = inspect.signature(HttpToolsProtocol.__init__).parameters
    assert list(init)[:4] == ["self", "config", "server_state", "app_state"]
    assert STATUS_LINE[431].startswith(b"HTTP/1.1 431 ")
    assert STATUS_LINE[408].startswith(b"HTTP/1.1 408 ")
    # The attributes read on the instance: set in uvicorn's __init__ / connection_made.
    source = inspect.getsource(HttpToolsProtocol)
    for attribute in ("self.transport =", "self.loop =", "self.server_state ="):
        assert attribute in source, attribute


def test_create_server_uses_the_bounded_protocol_with_the_settings() -> None:
    server = create_server(Settings(max_header_bytes=1234, header_timeout=2.5))
    protocol = server.config.http
    assert isinstance(protocol, type) and issubclass(protocol, BoundedHttpToolsProtocol)
    assert protocol.max_header_bytes == 1234
    assert protocol.header_timeout == 2.5
    server.config.load()
    assert server.config.http_protocol_class is protocol


def test_uvicorn_request_cycle_has_what_the_streams_rely_on() -> None:
    """transports.streams reaches the socket through `send.__self__.transport` (to cut off a
    client that does not read) and `shutdown` finds a stream through `cycle.scope`."""
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    source = inspect.getsource(RequestResponseCycle)
    for attribute in ("self.transport =", "self.scope =", "self.response_complete ="):
        assert attribute in source, attribute
    assert callable(RequestResponseCycle.send)
    # A stream's writer stops on OSError when the client is gone mid-write.
    from uvicorn.protocols.utils import ClientDisconnected

    assert issubclass(ClientDisconnected, OSError)
    assert callable(getattr(HttpToolsProtocol, "shutdown", None))
    assert "self.cycle" in inspect.getsource(HttpToolsProtocol.shutdown)
