"""Who an app refuses even with a valid token: blocked users, revoked tokens (by `jti`) and a
user's tokens issued before a moment (`iat`), as Centrifugo PRO's `block_user`,
`revoke_token` and `invalidate_user_tokens` set them.

As in Centrifugo PRO, `revoke_token` names a `jti` of either kind of token (a connection's or a
subscription's), and `invalidate_user_tokens` without `channel` refuses the user's connection
tokens issued before the moment, with `channel` only the user's subscription tokens for that
channel issued before it.

Entries may expire (`expire_at`, unix seconds; 0 never): a revoked token needs no entry once
the token itself has expired. The rules are stored (they survive restarts) and every node keeps
a copy of each app's in memory, so the check on connect costs no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from xshathra.model import AppId


@dataclass(frozen=True, slots=True)
class AccessRules:
    """One app's rules: user -> expire_at; jti -> expire_at; user -> (issued_before,
    expire_at) for connection tokens; (user, channel) -> (issued_before, expire_at) for
    subscription tokens."""

    blocked: dict[str, int] = field(default_factory=dict)
    revoked: dict[str, int] = field(default_factory=dict)
    invalidated: dict[str, tuple[int, int]] = field(default_factory=dict)
    channel_invalidated: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    def refusal(self, user: str, token_id: str, issued_at: int | None, now: float) -> str | None:
        """Why a connection of `user` with a token (`jti`, `iat`) is refused, or None."""
        until = self.blocked.get(user)
        if until is not None and _live(until, now):
            return "user is blocked"
        if token_id:
            until = self.revoked.get(token_id)
            if until is not None and _live(until, now):
                return "token revoked"
        entry = self.invalidated.get(user)
        # A token without `iat` cannot prove it came after: it is refused too.
        if (
            entry is not None
            and _live(entry[1], now)
            and (issued_at is None or issued_at < entry[0])
        ):
            return "token revoked"
        return None

    def subscription_refusal(
        self, user: str, channel: str, token_id: str, issued_at: int | None, now: float
    ) -> str | None:
        """Why a subscription token (`jti`, `iat`) of `user` for `channel` is refused, or None.
        A blocked user's connection is refused as a whole, not here."""
        if token_id:
            until = self.revoked.get(token_id)
            if until is not None and _live(until, now):
                return "token revoked"
        entry = self.channel_invalidated.get((user, channel))
        if (
            entry is not None
            and _live(entry[1], now)
            and (issued_at is None or issued_at < entry[0])
        ):
            return "token revoked"
        return None


def _live(expire_at: int, now: float) -> bool:
    return expire_at == 0 or expire_at > now


class AccessStore(Protocol):
    """Persistent access rules. Implementation: `storage.access.SqlAccessStore`. Expired entries
    are never returned (and may be deleted on any write)."""

    async def load_rules(self, app_id: AppId) -> AccessRules: ...

    async def block_user(self, app_id: AppId, user: str, expire_at: int) -> None: ...

    async def unblock_user(self, app_id: AppId, user: str) -> None: ...

    async def revoke_token(self, app_id: AppId, token_id: str, expire_at: int) -> None: ...

    async def invalidate_user_tokens(
        self, app_id: AppId, user: str, issued_before: int, expire_at: int, channel: str = ""
    ) -> None:
        """The user's connection tokens issued before `issued_before`, or with `channel` their
        subscription tokens for that channel."""
