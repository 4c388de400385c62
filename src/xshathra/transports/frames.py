"""RFC 6455 frames after the opening handshake: parsing what a client sends, framing what the
server sends.

websockets does the opening handshake; once a connection is open, all it needs is a byte
buffer and a few fields, which is all `FrameReader` keeps (websockets' sans-I/O protocol holds
a generator, a stream reader and the handshake request for the connection's lifetime, a few
kilobytes per idle connection). Masks are removed by websockets' C helper.

permessage-deflate (RFC 7692) is negotiated with no context takeover in either direction, so
that every message is compressed and decompressed alone: a compressed frame can be shared by
every subscriber it goes to, and no connection keeps a zlib state between messages.
"""

from __future__ import annotations

import struct
import zlib

try:
    from websockets.speedups import apply_mask
except ImportError:  # pure-Python build of websockets
    from websockets.utils import apply_mask

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1 = 0x40  # set on the first frame of a compressed message (RFC 7692 6)
_DEFLATE_TAIL = b"\x00\x00\xff\xff"  # ends every flushed block; left off on the wire (7.2.1)

# Close codes a peer may send (RFC 6455 7.4.1 and the IANA registry); 3000-4999 are free.
_VALID_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


class ProtocolViolation(Exception):
    """The client broke RFC 6455: close the connection with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def ws_frame(first_byte: int, payload: bytes) -> bytes:
    """An unmasked, final frame (server-to-client frames are never masked)."""
    n = len(payload)
    if n < 126:
        return bytes((first_byte, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", first_byte, 126, n) + payload
    return struct.pack("!BBQ", first_byte, 127, n) + payload


# One compressor per (level, window bits) for the whole process: each message ends with a
# full flush, which leaves nothing of it for the next message to refer to, so messages stay
# independent (no context takeover) without a zlib object built per message.
_compressors: dict[tuple[int, int], zlib._Compress] = {}


def deflate_message(payload: bytes, level: int, window_bits: int) -> bytes:
    """`payload` compressed as one permessage-deflate message, independent of any other."""
    key = (level, window_bits)
    compressor = _compressors.get(key)
    if compressor is None:
        compressor = _compressors[key] = zlib.compressobj(level, zlib.DEFLATED, -window_bits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_FULL_FLUSH)
    return data[:-4] if data.endswith(_DEFLATE_TAIL) else data


def inflate_message(data: bytes, max_size: int) -> bytes:
    """A compressed message from a client (which takes over no context), at most `max_size`
    bytes once inflated: 1009 past it, 1007 for data that is not deflate."""
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(data + _DEFLATE_TAIL, max_size + 1)
    except zlib.error:
        raise ProtocolViolation(1007, "invalid compressed data") from None
    if len(out) > max_size:
        raise ProtocolViolation(1009, "message too big")
    return out


def ws_text_frame(payload: bytes) -> bytes:
    return ws_frame(0x80 | TEXT, payload)


def close_frame(code: int, reason: str = "") -> bytes:
    # A control frame carries at most 125 bytes: 2 for the code, the rest for the reason.
    encoded = reason.encode()[:123]
    while encoded:
        try:
            encoded.decode()
            break
        except UnicodeDecodeError:  # cut inside a character
            encoded = encoded[:-1]
    return ws_frame(0x80 | CLOSE, code.to_bytes(2, "big") + encoded)


def pong_frame(payload: bytes) -> bytes:
    return ws_frame(0x80 | PONG, payload)


def close_code(payload: bytes) -> int:
    """The code of a Close frame the reader accepted (1005 when it had none)."""
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005


def _check_close(payload: bytes) -> None:
    if not payload:
        return
    if len(payload) == 1:
        raise ProtocolViolation(1002, "close frame too short")
    code = int.from_bytes(payload[:2], "big")
    if code not in _VALID_CLOSE_CODES and not 3000 <= code < 5000:
        raise ProtocolViolation(1002, "invalid close code")
    _check_utf8(payload[2:])


def _check_utf8(data: bytes) -> None:
    if not data.isascii():  # ASCII, the common case, is valid UTF-8 without decoding
        try:
            data.decode()
        except UnicodeDecodeError:
            raise ProtocolViolation(1007, "invalid UTF-8") from None


class FrameReader:
    """Turns the bytes a client sends into whole messages and control frames.

    `feed` returns (opcode, payload) pairs: TEXT or BINARY with every fragment of a message
    joined, and CLOSE, PING, PONG as they come. It raises ProtocolViolation with the close
    code the connection must end with: 1002 for a protocol error, 1007 for invalid UTF-8 in
    text, 1009 for a message over `max_size` (checked against each frame's declared length,
    before any of it is buffered).
    """

    __slots__ = ("_buffer", "_compressed", "_fragments", "_kind", "_size", "inflate", "max_size")

    def __init__(self, max_size: int, *, inflate: bool = False) -> None:
        self.max_size = max_size
        # permessage-deflate was negotiated: data messages may come compressed (RSV1).
        self.inflate = inflate
        self._compressed = False  # the message being assembled is
        self._buffer = b""
        self._fragments: list[bytes] | None = None  # the message being assembled
        self._kind = TEXT  # opcode of the message being assembled
        self._size = 0  # its bytes so far

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buffer + data if self._buffer else data
        out: list[tuple[int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            fin, opcode = first & 0x80, first & 0x0F
            if first & 0x70 and (
                first & 0x70 != RSV1 or not self.inflate or opcode not in (TEXT, BINARY)
            ):
                raise ProtocolViolation(1002, "reserved bits must be 0")
            if not second & 0x80:
                raise ProtocolViolation(1002, "client frames must be masked")
            length, head = second & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if opcode >= CLOSE:
                if opcode > PONG:
                    raise ProtocolViolation(1002, "unknown opcode")
                if not fin or length > 125:
                    raise ProtocolViolation(1002, "invalid control frame")
            elif opcode > BINARY:
                raise ProtocolViolation(1002, "unknown opcode")
            elif self._size + length > self.max_size:
                raise ProtocolViolation(1009, "message too big")
            start = pos + head + 4
            if end < start + length:
                break
            payload = apply_mask(buf[start : start + length], buf[pos + head : start])
            pos = start + length
            if opcode >= CLOSE:
                if opcode == CLOSE:
                    _check_close(payload)
                out.append((opcode, payload))
            else:
                if opcode != CONTINUATION:
                    self._compressed = bool(first & RSV1)
                message = self._data(opcode, bool(fin), payload)
                if message is not None:
                    out.append(message)
        self._buffer = buf[pos:] if pos < end else b""
        return out

    def _data(self, opcode: int, fin: bool, payload: bytes) -> tuple[int, bytes] | None:
        if opcode == CONTINUATION:
            if self._fragments is None:
                raise ProtocolViolation(1002, "unexpected continuation frame")
            self._fragments.append(payload)
            self._size += len(payload)
            if not fin:
                return None
            kind, payload = self._kind, b"".join(self._fragments)
            self._fragments, self._size = None, 0
        else:
            if self._fragments is not None:
                raise ProtocolViolation(1002, "expected a continuation frame")
            if not fin:
                self._fragments, self._kind, self._size = [payload], opcode, len(payload)
                return None
            kind = opcode
        if self._compressed:
            payload = inflate_message(payload, self.max_size)
        if kind == TEXT:
            _check_utf8(payload)
        return kind, payload
