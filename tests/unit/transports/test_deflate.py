"""permessage-deflate frames (RFC 7692): compressed client messages, whole or fragmented, are
inflated within the size limit; RSV1 is refused where the extension was not negotiated or on a
frame that may not carry it; our compressed messages inflate alone."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.transports.test_frames import masked
from xshathra.transports.frames import (
    BINARY,
    CONTINUATION,
    PING,
    RSV1,
    TEXT,
    FrameReader,
    ProtocolViolation,
    deflate_message,
    inflate_message,
)


def deflated(payload: bytes) -> bytes:
    """What a client without context takeover sends: the flushed block, tail left off."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def inflate_alone(data: bytes) -> bytes:
    return zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff")


def test_compressed_message_is_inflated() -> None:
    reader = FrameReader(max_size=1000, inflate=True)
    body = b'{"id":1,"connect":{"token":"abc"}}'
    frames = masked(TEXT, deflated(body), rsv=RSV1) + masked(TEXT, b"plain")
    assert reader.feed(frames) == [(TEXT, body), (TEXT, b"plain")]


def test_fragmented_compressed_message_is_inflated_whole() -> None:
    """RSV1 on the first fragment only; the message is inflated once it is complete."""
    data = deflated(b"x" * 500 + b"y" * 500)
    reader = FrameReader(max_size=2000, inflate=True)
    wire = masked(TEXT, data[:5], fin=False, rsv=RSV1) + masked(CONTINUATION, data[5:])
    assert reader.feed(wire) == [(TEXT, b"x" * 500 + b"y" * 500)]


@pytest.mark.parametrize(
    ("inflate", "wire"),
    [
        (False, masked(TEXT, deflated(b"hi"), rsv=RSV1)),  # not negotiated
        (True, masked(PING, b"", rsv=RSV1)),  # control frames are never compressed
        (True, masked(TEXT, b"a", fin=False) + masked(CONTINUATION, b"b", rsv=RSV1)),
        (True, masked(TEXT, b"a", rsv=0x20)),  # RSV2 means nothing here
    ],
)
def test_misplaced_reserved_bits_are_a_protocol_error(inflate: bool, wire: bytes) -> None:
    with pytest.raises(ProtocolViolation) as err:
        FrameReader(max_size=100, inflate=inflate).feed(wire)
    assert err.value.code == 1002


def test_a_bomb_is_refused_past_the_size_limit() -> None:
    """A tiny compressed frame that inflates past max_size: 1009, without inflating it all."""
    bomb = deflated(b"\0" * 10_000_000)
    assert len(bomb) < 20_000
    with pytest.raises(ProtocolViolation) as err:
        FrameReader(max_size=65536, inflate=True).feed(masked(BINARY, bomb, rsv=RSV1))
    assert err.value.code == 1009


def test_garbage_is_1007() -> None:
    with pytest.raises(ProtocolViolation) as err:
        inflate_message(b"\xff\xff\xff garbage", 1000)
    assert err.value.code == 1007


@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=5), st.integers(1, 9))
def test_our_messages_inflate_each_alone(payloads: list[bytes], level: int) -> None:
    """However many went before through the shared compressor, each message inflates with a
    fresh inflater (no context takeover)."""
    for payload in payloads:
        assert inflate_alone(deflate_message(payload, level, 15)) == payload
