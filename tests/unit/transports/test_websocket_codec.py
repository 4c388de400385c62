"""The WebSocket transport's choice of codec at the handshake: the `centrifuge-protobuf`
subprotocol or a `format` / `cf_protocol` query of `protobuf` mean protobuf; anything else,
JSON."""

from __future__ import annotations

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from xshathra.protocol.json_codec import JSON_CODEC
from xshathra.protocol.protobuf_codec import PROTOBUF_CODEC
from xshathra.transports.websocket import _codec_for, _select_subprotocol

PATH = "/realtime/connection/websocket"


def _request(path: str) -> Request:
    return Request(path, Headers())


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ([], None),
        (["something-else"], None),
        (["centrifuge-protobuf"], "centrifuge-protobuf"),
        (["x", "centrifuge-protobuf"], "centrifuge-protobuf"),
    ],
)
def test_subprotocol_selection_never_refuses(offered: list[str], chosen: str | None) -> None:
    """Only ours is ever chosen, and offering none of ours is no reason to refuse."""
    protocol = ServerProtocol()
    assert _select_subprotocol(protocol, [Subprotocol(o) for o in offered]) == chosen


@pytest.mark.parametrize(
    ("path", "subprotocol", "protobuf"),
    [
        (PATH, None, False),
        (PATH, "centrifuge-protobuf", True),
        (f"{PATH}?format=protobuf", None, True),
        (f"{PATH}?cf_protocol=protobuf", None, True),
        (f"{PATH}?a=1&format=protobuf", None, True),
        (f"{PATH}?format=json", None, False),
        (f"{PATH}?format=PROTOBUF%ZZ&&=", None, False),
        (f"{PATH}?protobuf", None, False),
    ],
)
def test_codec_for_the_handshake(path: str, subprotocol: str | None, protobuf: bool) -> None:
    expected = PROTOBUF_CODEC if protobuf else JSON_CODEC
    assert _codec_for(_request(path), subprotocol) is expected
