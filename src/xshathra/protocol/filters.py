"""Publication tags filters (`tf` of a subscribe request, client.proto's `FilterNode`): checking
one, its canonical key, and matching a publication's tags against it.

Semantics as Centrifuge documents them: a leaf compares one tag (`eq`, `neq`, `in`, `nin`,
`ex`, `nex`, `sw`, `ew`, `ct`, and the numeric `gt`, `gte`, `lt`, `lte`, false when either side
is not a number); `and`, `or` combine children, `not` negates its one child. A filter is
checked once at subscribe (`check_filter` raises `FilterError` naming the fault) and is then assumed
valid; `filter_key` is its canonical bytes, so that subscribers with equal filters share one
evaluation per publication. Pure functions, no I/O.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import msgspec

from xshathra.protocol.messages import FilterNode

# Bounds of one filter: it is evaluated for every publication of the channel.
MAX_FILTER_NODES = 64
MAX_FILTER_DEPTH = 8
MAX_FILTER_VALUES = 100
MAX_FILTER_BYTES = 4096

_VALUE_CMPS = frozenset({"eq", "neq", "sw", "ew", "ct", "gt", "gte", "lt", "lte"})
_SET_CMPS = frozenset({"in", "nin"})
_EXIST_CMPS = frozenset({"ex", "nex"})
_NUMERIC_CMPS = frozenset({"gt", "gte", "lt", "lte"})

_key_encoder = msgspec.json.Encoder(order="deterministic")


class FilterError(ValueError):
    """The filter is malformed; the message says how."""


def check_filter(node: FilterNode) -> None:
    """Raise FilterError unless `node` is a well-formed filter within the bounds."""
    _check(node, 1, [0])
    if len(filter_key(node)) > MAX_FILTER_BYTES:
        raise FilterError(f"tags filter larger than {MAX_FILTER_BYTES} bytes")


def _check(node: FilterNode, depth: int, seen: list[int]) -> None:
    if depth > MAX_FILTER_DEPTH:
        raise FilterError(f"tags filter nested deeper than {MAX_FILTER_DEPTH}")
    seen[0] += 1
    if seen[0] > MAX_FILTER_NODES:
        raise FilterError(f"tags filter has more than {MAX_FILTER_NODES} nodes")
    if node.op == "":
        if node.nodes:
            raise FilterError("a comparison node must not have child nodes")
        cmp = node.cmp
        if not cmp:
            raise FilterError("a comparison node needs cmp")
        if cmp in _VALUE_CMPS:
            if not node.val:
                raise FilterError(f"comparison {cmp} needs val")
            if node.vals:
                raise FilterError(f"comparison {cmp} takes val, not vals")
        elif cmp in _SET_CMPS:
            if not node.vals:
                raise FilterError(f"comparison {cmp} needs a non-empty vals")
            if len(node.vals) > MAX_FILTER_VALUES:
                raise FilterError(f"comparison {cmp} takes at most {MAX_FILTER_VALUES} vals")
            if node.val:
                raise FilterError(f"comparison {cmp} takes vals, not val")
        elif cmp in _EXIST_CMPS:
            if node.val or node.vals:
                raise FilterError(f"comparison {cmp} takes neither val nor vals")
        else:
            raise FilterError(f"unknown comparison '{cmp[:16]}'")
        if not node.key:
            raise FilterError("a comparison node needs key")
        if cmp in _NUMERIC_CMPS and _number(node.val) is None:
            raise FilterError(f"comparison {cmp} needs a numeric val")
        return
    if node.key or node.cmp or node.val or node.vals:
        raise FilterError(f"a logical node ({node.op[:8]}) takes only nodes")
    if node.op in ("and", "or"):
        if not node.nodes:
            raise FilterError(f"{node.op} needs at least one node")
    elif node.op == "not":
        if not node.nodes or len(node.nodes) != 1:
            raise FilterError("not needs exactly one node")
    else:
        raise FilterError(f"unknown op '{node.op[:16]}'")
    for child in node.nodes:
        _check(child, depth + 1, seen)


def filter_key(node: FilterNode) -> bytes:
    """The filter's canonical bytes: equal filters, equal keys."""
    return _key_encoder.encode(node)


def _number(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def matches(node: FilterNode, tags: dict[str, str] | None) -> bool:
    """Whether a publication with these tags passes the (checked) filter."""
    op = node.op
    if op == "":
        found = tags.get(node.key) if tags else None
        cmp = node.cmp
        if cmp == "eq":
            return found == node.val
        if cmp == "neq":
            return found != node.val
        if cmp == "in":
            return found is not None and found in (node.vals or ())
        if cmp == "nin":
            return found is None or found not in (node.vals or ())
        if cmp == "ex":
            return found is not None
        if cmp == "nex":
            return found is None
        if found is None:
            return False
        if cmp == "sw":
            return found.startswith(node.val)
        if cmp == "ew":
            return found.endswith(node.val)
        if cmp == "ct":
            return node.val in found
        left, right = _number(found), _number(node.val)
        if left is None or right is None:
            return False
        if cmp == "gt":
            return left > right
        if cmp == "gte":
            return left >= right
        if cmp == "lt":
            return left < right
        return left <= right  # lte
    children = node.nodes or []
    if op == "and":
        return all(matches(child, tags) for child in children)
    if op == "or":
        return any(matches(child, tags) for child in children)
    return not matches(children[0], tags)  # not
