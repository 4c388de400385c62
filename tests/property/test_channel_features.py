"""Hypothesis on the channel features' decoders: arbitrary tags filters are either refused
with FilterError or evaluate without error, compressed client frames of any bytes are refused
only with a close code, and arbitrary fossil deltas only with DeltaError."""

from __future__ import annotations

import contextlib
import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from xshathra.protocol import fossil
from xshathra.protocol.filters import FilterError, check_filter, matches
from xshathra.protocol.messages import FilterNode
from xshathra.transports.frames import RSV1, TEXT, FrameReader, ProtocolViolation

words = st.sampled_from(["", "a", "b", "10", "-2.5", "1e3", "NaN", "inf", "x" * 40])
ops = st.sampled_from(["", "and", "or", "not", "xor"])
cmps = st.sampled_from(
    ["", "eq", "neq", "in", "nin", "ex", "nex", "sw", "ew", "ct", "gt", "gte", "lt", "lte", "?"]
)
leaves = st.builds(
    FilterNode,
    op=ops,
    key=words,
    cmp=cmps,
    val=words,
    vals=st.none() | st.lists(words, max_size=3),
)
filters = st.recursive(
    leaves,
    lambda children: st.builds(
        FilterNode,
        op=ops,
        key=words,
        cmp=cmps,
        val=words,
        vals=st.none() | st.lists(words, max_size=2),
        nodes=st.none() | st.lists(children, max_size=4),
    ),
    max_leaves=20,
)
tags = st.none() | st.dictionaries(words, words, max_size=4)


@settings(max_examples=400, deadline=None)
@given(filters, tags)
def test_any_filter_is_refused_or_evaluates(node: FilterNode, publication_tags: object) -> None:
    try:
        check_filter(node)
    except FilterError:
        return
    assert matches(node, publication_tags) in (True, False)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_any_compressed_frame_only_refuses(payload: bytes, fin: bool) -> None:
    """Whatever a client claims is deflate data: a message or a close code, nothing else."""
    key = os.urandom(4)
    n = len(payload)
    head = struct.pack("!BB", (0x80 if fin else 0) | RSV1 | TEXT, 0x80 | min(n, 126))
    if n >= 126:
        head += struct.pack("!H", n)
    wire = head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    try:
        FrameReader(max_size=1000, inflate=True).feed(wire)
    except ProtocolViolation as exc:
        assert exc.code in (1002, 1007, 1009)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=100), st.binary(max_size=200) | st.text(max_size=50).map(str.encode))
def test_any_delta_applies_or_raises_delta_error(source: bytes, delta: bytes) -> None:
    with contextlib.suppress(fossil.DeltaError):
        fossil.apply(source, delta)
