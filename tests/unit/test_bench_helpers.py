"""The benchmark's pure helpers that its storm and large-N figures rest on: frame splitting
with close frames, and source addresses past one address's ports. (bench.run is left out: it
reaches the chart module, whose matplotlib is the `bench` extra's, not the dev one's.)"""

from __future__ import annotations

import struct

from bench.stacks import PER_SOURCE, source_address, sources_for
from bench.wsclient import CLOSE, split_frames


def test_split_frames_keeps_opcodes_and_the_incomplete_rest() -> None:
    text = bytes((0x81, 2)) + b"{}"
    close = bytes((0x88, 4)) + struct.pack("!H", 3502) + b"no"
    frames, rest = split_frames(text + close + b"\x81\x05ab")
    assert frames == [(0x1, b"{}"), (CLOSE, struct.pack("!H", 3502) + b"no")]
    assert rest == b"\x81\x05ab"


def test_source_addresses_only_past_one_address_worth_of_ports() -> None:
    assert sources_for(PER_SOURCE) == 1
    assert source_address(7, PER_SOURCE) is None
    assert sources_for(100_000) == 4
    assert [source_address(i, 100_000) for i in range(5)] == [
        ("127.0.0.1", 0),
        ("127.0.0.2", 0),
        ("127.0.0.3", 0),
        ("127.0.0.4", 0),
        ("127.0.0.1", 0),
    ]
