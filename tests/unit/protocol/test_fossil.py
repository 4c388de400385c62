"""Our fossil delta encoder against centrifuge-python's decoder (what clients run), and our
decoder's refusals."""

from __future__ import annotations

import json

import pytest
from centrifuge.fossil import apply_delta
from hypothesis import given, settings
from hypothesis import strategies as st

from xshathra.protocol import fossil


def _doc(i: int) -> bytes:
    return json.dumps(
        {"user": "alice", "items": [{"n": k, "on": k % 3 == i % 3} for k in range(30)]}
    ).encode()


@given(st.binary(max_size=600), st.binary(max_size=600))
@settings(max_examples=300, deadline=None)
def test_any_pair_round_trips_through_the_client_decoder(source: bytes, target: bytes) -> None:
    """Whatever the bytes, the client rebuilds the target exactly."""
    delta = fossil.encode(source, target)
    assert bytes(apply_delta(source, delta)) == target
    assert fossil.apply(source, delta) == target


@given(st.binary(min_size=20, max_size=400), st.integers(0, 400), st.binary(max_size=40))
@settings(max_examples=200, deadline=None)
def test_edits_of_a_document_round_trip(source: bytes, at: int, insert: bytes) -> None:
    target = source[:at] + insert + source[at + len(insert) :]
    assert bytes(apply_delta(source, fossil.encode(source, target))) == target


def test_similar_documents_give_small_deltas() -> None:
    """Successive versions of a JSON document share most bytes: the delta is a fraction."""
    source, target = _doc(1), _doc(2)
    delta = fossil.encode(source, target)
    assert len(delta) < len(target) / 2
    assert bytes(apply_delta(source, delta)) == target


def test_known_encoding_of_integers_and_checksum() -> None:
    """The format's header and trailer: base-64 length, checksum of big-endian words."""
    delta = fossil.encode(b"", b"abc")
    assert delta.startswith(b"3\n3:abc")
    assert fossil.checksum(b"abcd") == int.from_bytes(b"abcd", "big")
    assert fossil.checksum(b"abcde") == (int.from_bytes(b"abcd", "big") + (ord("e") << 24))


@pytest.mark.parametrize(
    "delta",
    [b"", b"3", b"3\n", b"3\n3:ab", b"3\n9@0,", b"3\n3:abcX;", b"3\n3:abc0;", b"3\n3!abc"],
)
def test_broken_deltas_are_refused(delta: bytes) -> None:
    with pytest.raises(fossil.DeltaError):
        fossil.apply(b"abc", delta)


# Characters that share a lead byte (é ê ë: C3 A9/AA/AB): a match can end mid-character.
TEXT = st.text(alphabet="aéêë b€", max_size=300)


@given(TEXT, st.text(alphabet="xéêë", max_size=8), st.integers(0, 300))
@settings(max_examples=300, deadline=None)
def test_deltas_of_text_are_text(base: str, insert: str, at: int) -> None:
    """Between two UTF-8 texts the delta is UTF-8 too: copies never split a character, so a
    JSON subscriber can be sent any delta as a string."""
    source = (base * 3).encode()
    target = (base[:at] + insert + base[at:] + base * 2).encode()
    delta = fossil.encode(source, target)
    delta.decode()  # raises if a literal holds part of a character
    assert bytes(apply_delta(source, delta)) == target
