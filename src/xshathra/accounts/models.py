"""Account, session and invitation records and the `AccountStore` contract. No I/O here.

Secrets that let someone in (session ids, invitation tokens) are stored only as SHA-256
hashes: a copy of the database does not open anyone's session.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NewType, Protocol

AccountId = NewType("AccountId", str)


class AccountExistsError(Exception):
    """An account with this email exists."""


class InvitationInvalidError(Exception):
    """The invitation is unknown, used, revoked or expired."""


@dataclass(frozen=True, slots=True)
class Account:
    account_id: AccountId
    email: str  # normalised: stripped, lower case
    password_hash: str  # argon2id, in the PHC string format
    operator: bool
    disabled: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Session:
    id_hash: str  # SHA-256 of the id in the cookie
    account_id: AccountId
    csrf_token: str  # sent back in every form; never leaves the signed-in person's pages
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Invitation:
    invitation_id: str  # public, for listing and revoking; the token itself is not kept
    token_hash: str
    created_by: AccountId
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    used_by: AccountId | None = None


class AccountStore(Protocol):
    """Accounts, sessions, invitations and sign-in failures, shared by every node."""

    async def create_account(self, account: Account, *, invitation_hash: str | None = None) -> None:
        """Insert `account`. With `invitation_hash`, consume that invitation in the same
        transaction (InvitationInvalidError if it is not usable, and nothing is written).
        AccountExistsError if the email is taken."""

    async def create_first_account(self, account: Account) -> bool:
        """Insert `account` only if it is the deployment's first (atomically, across nodes);
        False, writing nothing, when another account came first."""

    async def count_accounts(self) -> int: ...

    async def get_account(self, account_id: str) -> Account | None: ...

    async def find_account(self, email: str) -> Account | None: ...

    async def list_accounts(self) -> list[Account]: ...

    async def set_password(self, account_id: str, password_hash: str, at: datetime) -> bool: ...

    async def set_disabled(self, account_id: str, disabled: bool, at: datetime) -> bool:
        """Disable or enable; disabling also deletes the account's sessions."""

    async def create_session(self, session: Session) -> None: ...

    async def get_session(self, id_hash: str, now: datetime) -> tuple[Session, Account] | None:
        """The live session and its account; None if unknown, expired or the account is
        disabled."""

    async def delete_session(self, id_hash: str) -> None: ...

    async def delete_sessions(self, account_id: str, *, keep: str | None = None) -> int:
        """End every session of the account except the one whose hash is `keep`."""

    async def delete_expired_sessions(self, now: datetime) -> int: ...

    async def create_invitation(self, invitation: Invitation) -> None: ...

    async def list_invitations(self) -> list[Invitation]: ...

    async def revoke_invitation(self, invitation_id: str) -> bool:
        """Delete an unused invitation; False if unknown or already used."""

    async def record_sign_in_failure(self, keys: list[str], at: datetime, forget: datetime) -> None:
        """Count one failed sign-in under each key; drop failures older than `forget`."""

    async def recent_sign_in_failures(
        self, key: str, since: datetime, limit: int
    ) -> list[datetime]:
        """The newest failures under `key` after `since`, newest first, at most `limit`."""

    async def clear_sign_in_failures(self, key: str) -> None: ...
