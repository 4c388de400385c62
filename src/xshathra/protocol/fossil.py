"""Fossil deltas (the format of the Fossil SCM's delta encoding, which Centrifuge clients apply
to publications of subscriptions with `delta: "fossil"`): an encoder, written from the format's
documentation, and the decoder that checks it.

A delta is: the target's length as a base-64 integer and "\\n"; then segments, each either a
copy from the source (`LEN@OFFSET,`) or literal bytes (`LEN:` then LEN bytes); then the
target's checksum and ";". Integers use the digits 0-9A-Z_a-z~, most significant first.

No maintained Python library of this format exists on PyPI (the two there are unmaintained C
wrappers from 2017/2018), so this is ours. The encoder indexes the source by 16-byte blocks and
scans the target for them with dictionary look-ups (no per-byte rolling hash in Python), which
finds the long shared runs that successive versions of a JSON document have. Pure functions,
no I/O.
"""

from __future__ import annotations

_DIGITS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
_VALUES = {d: i for i, d in enumerate(_DIGITS)}
BLOCK = 16  # bytes per indexed source block: shorter matches are not worth a copy segment


class DeltaError(ValueError):
    """A delta that does not apply to this source (malformed, or a checksum mismatch)."""


def _int(n: int) -> bytes:
    if n < 64:
        return _DIGITS[n : n + 1]
    out = bytearray()
    while n:
        out.append(_DIGITS[n & 63])
        n >>= 6
    out.reverse()
    return bytes(out)


def checksum(data: bytes) -> int:
    """The format's checksum: the sum of the data's big-endian 32-bit words (the last one
    padded with zero bytes), modulo 2**32. Summed by byte position within the word, each a
    C-speed sum over a strided slice: the same total, without a Python integer per word."""
    total = (sum(data[0::4]) << 24) + (sum(data[1::4]) << 16) + (sum(data[2::4]) << 8)
    return (total + sum(data[3::4])) & 0xFFFFFFFF


def _common_prefix(a: bytes, ai: int, b: bytes, bi: int, limit: int) -> int:
    """How many bytes a[ai:] and b[bi:] share, up to `limit`: a few bytes one by one (most
    runs end soon), then growing slices, then a binary search of the slice that differs."""
    n = 0
    while n < limit and n < 8:
        if a[ai + n] != b[bi + n]:
            return n
        n += 1
    step = 8
    while n < limit:
        size = min(step, limit - n)
        if a[ai + n : ai + n + size] != b[bi + n : bi + n + size]:
            lo, hi = n, n + size  # equal before lo; a difference before hi
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if a[ai + lo : ai + mid] == b[bi + lo : bi + mid]:
                    lo = mid
                else:
                    hi = mid
            return lo
        n += size
        step *= 2
    return n


def _common_suffix(a: bytes, b: bytes, limit: int) -> int:
    """How many bytes a and b share at their ends, up to `limit` (as _common_prefix)."""
    la, lb = len(a), len(b)
    n = 0
    while n < limit and n < 8:
        if a[la - 1 - n] != b[lb - 1 - n]:
            return n
        n += 1
    step = 8
    while n < limit:
        size = min(step, limit - n)
        if a[la - n - size : la - n] != b[lb - n - size : lb - n]:
            lo, hi = n, n + size  # the last lo bytes are equal; a difference before hi
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if a[la - mid : la - lo] == b[lb - mid : lb - lo]:
                    lo = mid
                else:
                    hi = mid
            return lo
        n += size
        step *= 2
    return n


def _continues(data: bytes, at: int) -> bool:
    """Whether data[at] is inside a UTF-8 character (a continuation byte)."""
    return at < len(data) and 0x80 <= data[at] < 0xC0


def encode(source: bytes, target: bytes) -> bytes:
    """A delta that turns `source` into `target`."""
    out = [_int(len(target)), b"\n"]
    if len(source) >= BLOCK and len(target) >= BLOCK:
        literal_from = 0  # start of the target bytes not yet written
        # The usual update leaves most of a document as it was at both ends: those are one
        # copy each, found in C-speed slice comparisons, and only the middle is scanned.
        shortest = min(len(source), len(target))
        head = _common_prefix(source, 0, target, 0, shortest)
        while head and _continues(target, head):
            head -= 1
        if head >= BLOCK:
            out += (_int(head), b"@0,")
            literal_from = head
        tail = _common_suffix(source, target, shortest - literal_from)
        while tail and _continues(target, len(target) - tail):
            tail -= 1
        if tail < BLOCK:
            tail = 0
        stop = len(target) - tail  # the scan and its copies end here; the tail is one copy
        pos = literal_from
        last = stop - BLOCK
        index: dict[bytes, int] = {}
        if pos <= last:  # a middle to scan: index the source by blocks
            for offset in range(0, len(source) - BLOCK + 1, BLOCK):
                index.setdefault(source[offset : offset + BLOCK], offset)
        while pos <= last:
            found = index.get(target[pos : pos + BLOCK])
            if found is None:
                pos += 1
                continue
            # Grow the match backwards into the pending literal, then forwards.
            back = 0
            while (
                back < pos - literal_from
                and back < found
                and source[found - back - 1] == target[pos - back - 1]
            ):
                back += 1
            start, src = pos - back, found - back
            length = BLOCK + back
            length += _common_prefix(
                source,
                found + BLOCK,
                target,
                pos + BLOCK,
                min(len(source) - found - BLOCK, stop - pos - BLOCK),
            )
            # Copies start and end on UTF-8 character boundaries of the target, so that the
            # literals hold whole characters: a delta of UTF-8 text is UTF-8 text itself, as
            # the JSON format needs (it carries deltas as strings).
            end = start + length
            while start < end and 0x80 <= target[start] < 0xC0:
                start += 1
                src += 1
            while start < end < len(target) and 0x80 <= target[end] < 0xC0:
                end -= 1
            length = end - start
            if length < BLOCK:
                pos += 1
                continue
            if start > literal_from:
                out += (_int(start - literal_from), b":", target[literal_from:start])
            out += (_int(length), b"@", _int(src), b",")
            pos = literal_from = start + length
        if literal_from < stop:
            out += (_int(stop - literal_from), b":", target[literal_from:stop])
        if tail:
            out += (_int(tail), b"@", _int(len(source) - tail), b",")
    elif target:
        out += (_int(len(target)), b":", target)
    out += (_int(checksum(target)), b";")
    return b"".join(out)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def integer(self) -> int:
        value, start = 0, self.pos
        while self.pos < len(self.data) and (digit := _VALUES.get(self.data[self.pos])) is not None:
            value = (value << 6) | digit
            self.pos += 1
        if self.pos == start:
            raise DeltaError("expected an integer")
        return value

    def char(self) -> int:
        if self.pos >= len(self.data):
            raise DeltaError("unexpected end of delta")
        self.pos += 1
        return self.data[self.pos - 1]


def apply(source: bytes, delta: bytes) -> bytes:
    """The target that `delta` makes of `source`; DeltaError if it does not apply."""
    reader = _Reader(delta)
    size = reader.integer()
    if reader.char() != ord("\n"):
        raise DeltaError("size not terminated")
    out = bytearray()
    while reader.pos < len(delta):
        count = reader.integer()
        op = reader.char()
        if op == ord("@"):
            offset = reader.integer()
            if reader.char() != ord(","):
                raise DeltaError("copy not terminated")
            if offset + count > len(source):
                raise DeltaError("copy beyond the source")
            out += source[offset : offset + count]
        elif op == ord(":"):
            if reader.pos + count > len(delta):
                raise DeltaError("literal beyond the delta")
            out += delta[reader.pos : reader.pos + count]
            reader.pos += count
        elif op == ord(";"):
            if len(out) != size:
                raise DeltaError("size mismatch")
            if count != checksum(bytes(out)):
                raise DeltaError("checksum mismatch")
            return bytes(out)
        else:
            raise DeltaError("unknown segment")
        if len(out) > size:
            raise DeltaError("target longer than declared")
    raise DeltaError("delta not terminated")
