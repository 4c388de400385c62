"""The `channels` pattern matcher against `fnmatch.fnmatchcase`, whose semantics it keeps
(malformed classes included), and its cost on patterns built to make a regex backtrack."""

from __future__ import annotations

import fnmatch
import re
import time
import warnings

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from xshathra.api.globmatch import MAX_PATTERN_LENGTH, Glob

# The characters that mean something to fnmatch or to `re` inside a set, and a few letters.
ALPHABET = "ab-z!]^[\\*?&~|:"


def fnmatch_says(name: str, pattern: str) -> bool | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # re's "possible nested set" FutureWarnings
        try:
            return fnmatch.fnmatchcase(name, pattern)
        except re.error:
            return None  # a pattern fnmatch itself cannot read: nothing to agree with


@settings(max_examples=3000, deadline=None)
@given(
    st.text(ALPHABET, max_size=14),
    st.lists(st.text(ALPHABET, max_size=10), min_size=1, max_size=6),
)
def test_same_answers_as_fnmatch(pattern: str, names: list[str]) -> None:
    glob = Glob(pattern)
    for name in names:
        expected = fnmatch_says(name, pattern)
        assume(expected is not None)
        assert glob.matches(name) == expected, (pattern, name)


@settings(max_examples=300, deadline=None)
@given(st.text(ALPHABET, max_size=8))
def test_names_drawn_from_the_pattern_itself(pattern: str) -> None:
    """Names close to the pattern exercise the classes and the literal brackets."""
    glob = Glob(pattern)
    for name in {pattern, pattern.replace("*", ""), pattern.replace("?", "a"), pattern[1:]}:
        expected = fnmatch_says(name, pattern)
        if expected is not None:
            assert glob.matches(name) == expected, (pattern, name)


def test_backtracking_patterns_cost_linear_time() -> None:
    """The longest allowed pattern, with a star before every token, against a thousand names
    of the longest channel length that almost match: well under a second in all."""
    pattern = ("*a" * (MAX_PATTERN_LENGTH // 2))[: MAX_PATTERN_LENGTH - 1] + "b"
    names = [("a" * 254) + chr(0x63 + i % 20) for i in range(1000)]
    glob = Glob(pattern)
    started = time.perf_counter()
    assert not any(glob.matches(name) for name in names)
    short = Glob("*a*a*a*a*a*a*a*a*a*a*b")
    assert not any(short.matches(name) for name in names)
    assert time.perf_counter() - started < 1.0
