"""How a publication's data travels to a subscription with delta compression (`delta:
"fossil"`), per wire format.

In the JSON format such a subscription gets every publication's `data` as a JSON *string*: the
publication's JSON text when `delta` is false, the fossil delta's bytes when it is true (the
clients decode the string to UTF-8 bytes, apply the delta, then parse JSON). A binary format
carries the bytes as they are. Pure functions, no I/O.
"""

from __future__ import annotations

import msgspec

from xshathra.protocol import fossil

DELTA_TYPES = frozenset({"fossil"})

_encoder = msgspec.json.Encoder()


def carried(codec_name: str, payload: bytes) -> bytes | None:
    """`payload` (a full JSON document or a delta) as the `data` field of a delta
    subscription's publication in this format; None when the format cannot carry it (a
    delta that is not valid UTF-8 cannot be a JSON string: send the full data instead)."""
    if codec_name != "json":
        return payload
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        return None
    return _encoder.encode(text)


def fossil_delta(previous: bytes, current: bytes) -> bytes:
    """The fossil delta from the previous publication's data to this one's."""
    return fossil.encode(previous, current)
