"""Shell-style patterns (`*`, `?`, `[...]`, `[!...]`) for the server API's `channels` method,
matched in time linear in the name, with nothing cached between calls.

`fnmatch` compiles each pattern to a regular expression and keeps up to 32,768 of them: a
300 KB pattern took the event loop ~1.5 s to compile, and distinct patterns grew the cache
without bound in practice. Here a pattern becomes a list of one-character tokens and the set of
places a `*` may repeat; a name is run through that as a bit-parallel automaton (bit i set:
the first i tokens match the name so far), a few integer operations per character whatever
the pattern, no backtracking. The semantics are `fnmatch.fnmatchcase`'s, which this project
has always used, including its reading of malformed classes (property-tested against it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_PATTERN_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class _Class:
    """One character: in `ranges` (inclusive pairs), or not in them when `negate`."""

    ranges: tuple[tuple[str, str], ...]
    negate: bool = False

    def accepts(self, char: str) -> bool:
        inside = any(lo <= char <= hi for lo, hi in self.ranges)
        return inside != self.negate


_ANY = _Class((), negate=True)
_NEVER = _Class(())


@dataclass(slots=True)
class Glob:
    """A parsed pattern. Build one per call (`Glob(pattern)`): it keeps a small per-character
    table, bounded by the characters of the names it is asked about."""

    pattern: str
    _tokens: list[_Class | str] = field(init=False)
    _loops: int = field(init=False)  # bit i: a `*` follows the first i tokens
    _masks: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._tokens, self._loops = _parse(self.pattern)

    def _mask(self, char: str) -> int:
        """Bit i + 1 for every token i that accepts `char`."""
        mask = 0
        for i, token in enumerate(self._tokens):
            if token == char if isinstance(token, str) else token.accepts(char):
                mask |= 2 << i
        self._masks[char] = mask
        return mask

    def matches(self, name: str) -> bool:
        tokens = len(self._tokens)
        if tokens > len(name):
            return False  # every token takes exactly one character
        if not self._loops and tokens != len(name):
            return False
        loops, masks = self._loops, self._masks
        state = 1
        for char in name:
            mask = masks.get(char)
            if mask is None:
                mask = self._mask(char)
            state = ((state << 1) & mask) | (state & loops)
            if not state:
                return False
        return bool(state >> tokens & 1)


def _parse(pattern: str) -> tuple[list[_Class | str], int]:
    """Tokens and star loops, reading the pattern as `fnmatch.translate` (Python 3.11) does."""
    tokens: list[_Class | str] = []
    loops = 0
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            loops |= 1 << len(tokens)
        elif c == "?":
            tokens.append(_ANY)
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                tokens.append("[")
            else:
                tokens.append(_bracket(pattern, i, j))
                i = j + 1
        else:
            tokens.append(c)
    return tokens, loops


def _bracket(pattern: str, i: int, j: int) -> _Class:
    """The class `pattern[i:j]` (between `[` and `]`). fnmatch turns it into the body of a
    regex set (splitting it at range hyphens, dropping empty ranges, escaping the rest); the
    same body is built here and read as `re` reads a set, without compiling anything."""
    stuff = pattern[i:j]
    if "-" not in stuff:
        stuff = stuff.replace("\\", r"\\")
    else:
        chunks = []
        k = i + 2 if pattern[i] == "!" else i + 1
        while True:
            k = pattern.find("-", k, j)
            if k < 0:
                break
            chunks.append(pattern[i:k])
            i = k + 1
            k = k + 3
        chunk = pattern[i:j]
        if chunk:
            chunks.append(chunk)
        else:
            chunks[-1] += "-"
        for k in range(len(chunks) - 1, 0, -1):
            if chunks[k - 1][-1] > chunks[k][0]:
                chunks[k - 1] = chunks[k - 1][:-1] + chunks[k][1:]
                del chunks[k]
        stuff = "-".join(c.replace("\\", r"\\").replace("-", r"\-") for c in chunks)
    if not stuff:
        return _NEVER
    if stuff == "!":
        return _ANY
    negate = stuff[0] == "!"
    return _Class(_set_items(stuff[1:] if negate else stuff), negate)


def _set_items(body: str) -> tuple[tuple[str, str], ...]:
    """The ranges of a regex set body as fnmatch writes one: literals, `\\x` escapes (always
    of punctuation) and `a-b` ranges; a `-` before the end of the set is a literal. A leading
    `^` or `[` is escaped by fnmatch, and `]` can only come first, where it is a literal."""
    items: list[tuple[str, str]] = []
    pos, n = 0, len(body)

    def take() -> str:
        nonlocal pos
        if body[pos] == "\\" and pos + 1 < n:
            pos += 2
            return body[pos - 1]
        pos += 1
        return body[pos - 1]

    while pos < n:
        lo = take()
        if pos < n and body[pos] == "-":
            pos += 1
            if pos == n:  # "x-" then the end of the set: two literals
                items += [(lo, lo), ("-", "-")]
                break
            hi = take()
            if lo <= hi:  # fnmatch drops empty ranges before `re` would refuse them
                items.append((lo, hi))
        else:
            items.append((lo, lo))
    return tuple(items)
