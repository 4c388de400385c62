"""Publication tags filters: Centrifuge's comparison semantics, checking and canonical keys."""

from __future__ import annotations

import msgspec
import pytest

from xshathra.protocol.filters import FilterError, check_filter, filter_key, matches
from xshathra.protocol.messages import FilterNode


def leaf(key: str, cmp: str, val: str = "", vals: list[str] | None = None) -> FilterNode:
    return FilterNode(key=key, cmp=cmp, val=val, vals=vals)


@pytest.mark.parametrize(
    ("node", "tags", "expected"),
    [
        (leaf("a", "eq", "1"), {"a": "1"}, True),
        (leaf("a", "eq", "1"), {}, False),
        (leaf("a", "neq", "1"), {}, True),
        (leaf("a", "neq", "1"), {"a": "1"}, False),
        (leaf("a", "in", vals=["x", "y"]), {"a": "y"}, True),
        (leaf("a", "in", vals=["x", "y"]), {}, False),
        (leaf("a", "nin", vals=["x"]), {"a": "y"}, True),
        (leaf("a", "nin", vals=["x"]), {}, True),
        (leaf("a", "ex"), {"a": ""}, True),
        (leaf("a", "nex"), {"a": ""}, False),
        (leaf("a", "sw", "ab"), {"a": "abc"}, True),
        (leaf("a", "ew", "bc"), {"a": "abc"}, True),
        (leaf("a", "ct", "b"), {"a": "abc"}, True),
        (leaf("a", "ct", "z"), {"a": "abc"}, False),
        (leaf("a", "gt", "10"), {"a": "10.5"}, True),
        (leaf("a", "gt", "10"), {"a": "9"}, False),  # numeric, not "9" > "10" as text
        (leaf("a", "gte", "10"), {"a": "10"}, True),
        (leaf("a", "lt", "10"), {"a": "-1e3"}, True),
        (leaf("a", "lte", "10"), {"a": "abc"}, False),  # not a number: no match
        (leaf("a", "lt", "10"), {"a": "NaN"}, False),
        (FilterNode(op="and", nodes=[leaf("a", "ex"), leaf("b", "ex")]), {"a": "1"}, False),
        (FilterNode(op="or", nodes=[leaf("a", "ex"), leaf("b", "ex")]), {"a": "1"}, True),
        (FilterNode(op="not", nodes=[leaf("a", "ex")]), None, True),
    ],
)
def test_semantics(node: FilterNode, tags: dict[str, str] | None, expected: bool) -> None:
    check_filter(node)
    assert matches(node, tags) is expected


def test_equal_filters_have_equal_keys() -> None:
    one = msgspec.json.decode(b'{"cmp":"eq","key":"k","val":"v"}', type=FilterNode)
    two = msgspec.json.decode(b'{"val":"v","key":"k","cmp":"eq"}', type=FilterNode)
    assert filter_key(one) == filter_key(two)
    assert filter_key(one) != filter_key(leaf("k", "eq", "w"))


@pytest.mark.parametrize(
    ("node", "reason"),
    [
        (leaf("", "eq", "1"), "needs key"),
        (leaf("a", ""), "needs cmp"),
        (leaf("a", "in"), "non-empty vals"),
        (leaf("a", "in", "x", ["x"]), "not val"),
        (leaf("a", "ex", "x"), "neither"),
        (FilterNode(op="and"), "at least one"),
        (FilterNode(op="and", key="a", nodes=[leaf("a", "ex")]), "only nodes"),
        (FilterNode(key="a", cmp="ex", nodes=[leaf("a", "ex")]), "child nodes"),
        (FilterNode(op="or", nodes=[leaf("a", "ex")] * 70), "more than 64"),
        (leaf("a", "in", vals=["x"] * 101), "at most 100"),
    ],
)
def test_malformed_filters_are_refused(node: FilterNode, reason: str) -> None:
    with pytest.raises(FilterError, match=reason):
        check_filter(node)
