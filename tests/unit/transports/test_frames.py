"""RFC 6455 frames from clients: parsed across any split, fragments joined, every protocol
violation answered with the close code the RFC names."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xshathra.transports.frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    FrameReader,
    ProtocolViolation,
    close_code,
    close_frame,
    ws_text_frame,
)

# A fixed masking key (RFC 6455's example): the frames are test ids too, and pytest-xdist's
# workers must collect the same ids. What is tested is the unmasking, not the key's randomness.
MASK_KEY = bytes((0x37, 0xFA, 0x21, 0x3D))


def masked(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """A frame as a client sends it."""
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        head = bytes((first, (0x80 if mask else 0) | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, n)
    else:
        head = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, n)
    if not mask:
        return head + payload
    key = MASK_KEY
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_messages_and_control_frames_in_one_read() -> None:
    reader = FrameReader(max_size=1 << 20)
    data = masked(TEXT, b'{"id":1}') + masked(PING, b"p") + masked(BINARY, b"\x00\xff")
    assert reader.feed(data) == [(TEXT, b'{"id":1}'), (PING, b"p"), (BINARY, b"\x00\xff")]


@given(st.binary(max_size=70_000), st.integers(min_value=1, max_value=97))
def test_any_split_gives_the_same_message(payload: bytes, step: int) -> None:
    """Byte by byte or in chunks: lengths of 7, 16 and 64 bits all reassemble."""
    wire = masked(BINARY, payload)
    reader = FrameReader(max_size=1 << 20)
    got = []
    for i in range(0, len(wire), step):
        got += reader.feed(wire[i : i + step])
    assert got == [(BINARY, payload)]


def test_fragments_join_with_control_frames_between() -> None:
    reader = FrameReader(max_size=100)
    data = (
        masked(TEXT, b"hel", fin=False)
        + masked(PING, b"")
        + masked(CONTINUATION, b"lo", fin=False)
        + masked(CONTINUATION, b"!")
    )
    assert reader.feed(data) == [(PING, b""), (TEXT, b"hello!")]


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (masked(TEXT, b"x", mask=False), 1002),  # clients must mask
        (masked(TEXT, b"x", rsv=0x40), 1002),  # no extension was negotiated
        (masked(0x3, b"x"), 1002),  # reserved data opcode
        (masked(0xB, b"x"), 1002),  # reserved control opcode
        (masked(PING, b"x", fin=False), 1002),  # control frames are never fragmented
        (masked(PING, b"x" * 126), 1002),  # nor longer than 125 bytes
        (masked(CONTINUATION, b"x"), 1002),  # nothing to continue
        (masked(TEXT, b"a", fin=False) + masked(TEXT, b"b"), 1002),  # continuation expected
        (masked(TEXT, b"\xff\xfe"), 1007),  # text must be UTF-8
        (masked(TEXT, "é".encode()[:1], fin=False) + masked(CONTINUATION, b""), 1007),
        (masked(CLOSE, b"\x03"), 1002),  # a close code is two bytes
        (masked(CLOSE, struct.pack("!H", 1005)), 1002),  # never sent on the wire
        (masked(CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007),
    ],
)
def test_violations_carry_their_close_code(wire: bytes, code: int) -> None:
    with pytest.raises(ProtocolViolation) as violation:
        FrameReader(max_size=1000).feed(wire)
    assert violation.value.code == code


def test_oversize_is_refused_from_the_header_alone() -> None:
    """A frame announcing more than max_size is refused before its payload is buffered."""
    header = masked(BINARY, b"x" * 2000)[:4]  # 16-bit length only
    with pytest.raises(ProtocolViolation) as violation:
        FrameReader(max_size=1000).feed(header)
    assert violation.value.code == 1009


def test_oversize_counts_every_fragment() -> None:
    reader = FrameReader(max_size=10)
    reader.feed(masked(TEXT, b"123456", fin=False))
    with pytest.raises(ProtocolViolation) as violation:
        reader.feed(masked(CONTINUATION, b"123456"))
    assert violation.value.code == 1009


def test_valid_close_and_pong_pass_through() -> None:
    reader = FrameReader(max_size=100)
    close = struct.pack("!H", 4001) + "bye é".encode()
    assert reader.feed(masked(PONG, b"") + masked(CLOSE, close)) == [(PONG, b""), (CLOSE, close)]
    assert close_code(close) == 4001 and close_code(b"") == 1005


def test_server_frames() -> None:
    assert ws_text_frame(b"{}") == b"\x81\x02{}"
    assert ws_text_frame(b"x" * 300)[:4] == b"\x81\x7e\x01\x2c"
    frame = close_frame(3001, "é" * 100)  # reason cut to fit 125 bytes, never mid-character
    assert frame[0] == 0x88 and frame[1] <= 125
    frame[4:].decode()
