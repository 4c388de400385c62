"""Project members: who besides an application's owner may use it in the dashboard, and with
which role. The record and the store contract; no I/O here (SQL in `storage.members`).

An application's `owner_id` (the account that made it) is always its owner; these rows add
other people. A row either names an account, or waits for one: a person invited by email who
had no account yet gets a sign-up link, and the row is bound to the account that signs up with
that link (never to whoever later signs up with the same email address, which nobody checked).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class Role(StrEnum):
    OWNER = "owner"  # everything
    DEVELOPER = "developer"  # everything but members and deletion
    VIEWER = "viewer"  # read-only, never sees a secret

    @property
    def sees_secrets(self) -> bool:
        return self is not Role.VIEWER

    @property
    def can_change(self) -> bool:
        """Settings, keys, namespaces, webhooks, publishing a test message."""
        return self is not Role.VIEWER

    @property
    def manages(self) -> bool:
        """Members and deleting the project."""
        return self is Role.OWNER


@dataclass(frozen=True, slots=True)
class Member:
    member_id: str
    app_id: str
    email: str
    role: Role
    account_id: str | None  # None while the invitation waits for its sign-up
    created_at: datetime


class MemberExistsError(Exception):
    """This email is already a member of the project."""


class MemberStore(Protocol):
    """Project memberships. Deleting an application or an account deletes its rows."""

    async def add(self, member: Member, *, invitation_hash: str | None = None) -> None:
        """Insert; `MemberExistsError` if the email is already on the project."""

    async def list_for_app(self, app_id: str) -> list[Member]:
        """The project's members, oldest first."""

    async def role(self, app_id: str, account_id: str) -> Role | None: ...

    async def roles_of(self, account_id: str) -> dict[str, Role]:
        """app_id -> role for every project the account is a member of."""

    async def set_role(self, app_id: str, member_id: str, role: Role) -> bool: ...

    async def remove(self, app_id: str, member_id: str) -> bool: ...

    async def claim(self, invitation_hash: str, account_id: str, email: str) -> int:
        """Bind the rows waiting for this invitation to the account that used it; how many."""
