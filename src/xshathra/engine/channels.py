"""Channels inside tenants: the name grammar and the namespace rule. The typed channel key,
`ChannelRef`, is in `xshathra.model`."""

from __future__ import annotations

import re

MAX_CHANNEL_LENGTH = 255
NAMESPACE_SEPARATOR = ":"
# Printable ASCII without space, quotes, backslash and angle brackets: safe in URLs, logs,
# Redis keys and NATS subjects once escaped by the backend.
_CHANNEL_RE = re.compile(r"[A-Za-z0-9_\-.:@=,;/!~*+#|$%&^()\[\]{}?]{1,255}")


def is_valid_channel(name: str) -> bool:
    # fullmatch, not match with "$": "$" would accept a trailing newline.
    return _CHANNEL_RE.fullmatch(name) is not None


def namespace_of(name: str) -> str:
    """`public:lobby` -> `public`; `lobby` -> `` (the default namespace)."""
    head, sep, _ = name.partition(NAMESPACE_SEPARATOR)
    return head if sep else ""
