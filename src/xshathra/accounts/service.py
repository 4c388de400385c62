"""The account service: every rule about accounts, whoever asks (the dashboard, the CLI).

Sign-up policy, password rules, sign-in throttling, session lifetime and invitations live here;
the store only keeps rows. Errors are exceptions that say what to fix, naming the form field
they belong to, so a page can show them beside that field.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from xshathra.accounts import passwords
from xshathra.accounts.models import (
    Account,
    AccountExistsError,
    AccountId,
    AccountStore,
    Invitation,
    InvitationInvalidError,
    Session,
)

EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+\Z")
MAX_EMAIL = 254
MIN_PASSWORD = 10
MAX_PASSWORD = 256  # hashing a megabyte of "password" is free work for an attacker

# Sign-in throttling (per account, per client IP), over a sliding window.
THROTTLE_WINDOW = timedelta(minutes=15)
ACCOUNT_FAILURES = 5
IP_FAILURES = 20
_HASH_SLOTS = 2  # argon2id hashes running at once per process (each ~64 MiB)


class SignupPolicy(StrEnum):
    OPEN = "open"  # anyone may create an account
    INVITE = "invite"  # only with an invitation link from the operator
    CLOSED = "closed"  # only the first account, then the CLI


class FieldError(Exception):
    """A value the person must fix; `field` names the form field it belongs to."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ThrottledError(Exception):
    """Too many failed sign-ins; `retry_at` says when the next try will be heard."""

    def __init__(self, message: str, retry_at: datetime) -> None:
        super().__init__(message)
        self.message = message
        self.retry_at = retry_at


class SignupRefusedError(Exception):
    """Sign-up is not open to this person (the message says why and what to do)."""


class NotAllowedError(Exception):
    """The action is not allowed for this account."""


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A new session: `session_id` goes into the cookie and is kept nowhere else."""

    session_id: str
    session: Session
    account: Account


def hash_token(token: str) -> str:
    """SHA-256 of a session id or invitation token (256-bit random: no slow hash needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def normalise_email(email: str) -> str:
    return email.strip().lower()


def check_email(email: str) -> str:
    email = normalise_email(email)
    if not email:
        raise FieldError("email", "Enter your email address.")
    if len(email) > MAX_EMAIL or not EMAIL_PATTERN.match(email):
        raise FieldError("email", "Enter an email address like name@example.com.")
    return email


def check_new_password(password: str, field: str = "password") -> str:
    if len(password) < MIN_PASSWORD:
        raise FieldError(field, f"Use at least {MIN_PASSWORD} characters.")
    if len(password) > MAX_PASSWORD:
        raise FieldError(field, f"Use at most {MAX_PASSWORD} characters.")
    return password


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AccountService:
    def __init__(
        self,
        store: AccountStore,
        *,
        signup: SignupPolicy = SignupPolicy.INVITE,
        session_ttl: timedelta = timedelta(days=7),
        invitation_ttl: timedelta = timedelta(days=7),
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.store = store
        self.signup = signup
        self.session_ttl = session_ttl
        self.invitation_ttl = invitation_ttl
        self._clock = clock
        self._hash_slots = asyncio.Semaphore(_HASH_SLOTS)

    # -- passwords (CPU-bound: in a worker thread, a few at a time) ---------------------------

    async def _hash(self, password: str) -> str:
        async with self._hash_slots:
            return await asyncio.to_thread(passwords.hash_password, password)

    async def _verify(self, password_hash: str | None, password: str) -> bool:
        async with self._hash_slots:
            return await asyncio.to_thread(passwords.verify_password, password_hash, password)

    # -- accounts -----------------------------------------------------------------------------

    async def _new_account(self, email: str, password: str, *, operator: bool) -> Account:
        now = self._clock()
        return Account(
            account_id=AccountId("acc_" + secrets.token_hex(12)),
            email=email,
            password_hash=await self._hash(password),
            operator=operator,
            disabled=False,
            created_at=now,
            updated_at=now,
        )

    async def signup_open(self) -> bool:
        """Whether a person without an invitation may sign up now."""
        return self.signup is SignupPolicy.OPEN or await self.store.count_accounts() == 0

    async def sign_up(self, email: str, password: str, invitation: str | None = None) -> SignedIn:
        """Create an account and sign it in. The deployment's first account is always
        allowed and becomes the operator; later ones follow the sign-up policy."""
        email = check_email(email)
        check_new_password(password)
        if await self.store.count_accounts() == 0:
            first = await self._new_account(email, password, operator=True)
            if await self.store.create_first_account(first):
                return await self._start_session(first)
        if self.signup is SignupPolicy.CLOSED:
            raise SignupRefusedError(
                "Sign-up is closed on this server. Ask its operator to create your account."
            )
        if self.signup is SignupPolicy.INVITE and not invitation:
            raise SignupRefusedError(
                "This server signs people up by invitation. Ask its operator for an "
                "invitation link."
            )
        if await self.store.find_account(email) is not None:
            raise FieldError("email", "An account with this email exists. Sign in instead.")
        account = await self._new_account(email, password, operator=False)
        try:
            await self.store.create_account(
                account, invitation_hash=hash_token(invitation) if invitation else None
            )
        except AccountExistsError:
            raise FieldError(
                "email", "An account with this email exists. Sign in instead."
            ) from None
        except InvitationInvalidError:
            raise SignupRefusedError(
                "This invitation link is used, revoked or expired. Ask the operator for a new one."
            ) from None
        return await self._start_session(account)

    async def create_account(self, email: str, password: str, *, operator: bool) -> Account:
        """For the shell: create an account whatever the sign-up policy."""
        email = check_email(email)
        check_new_password(password)
        account = await self._new_account(email, password, operator=True)
        if not await self.store.create_first_account(account):
            account = replace(account, operator=operator)
            try:
                await self.store.create_account(account)
            except AccountExistsError:
                raise FieldError("email", f"an account with email {email} exists") from None
        return account

    async def get_account(self, account_id: str) -> Account | None:
        return await self.store.get_account(account_id)

    async def find_account(self, email: str) -> Account | None:
        return await self.store.find_account(normalise_email(email))

    async def list_accounts(self) -> list[Account]:
        return await self.store.list_accounts()

    async def set_disabled(self, actor: Account, account_id: str, disabled: bool) -> Account:
        """Operator only. Disabling ends the account's sessions at once, on every node."""
        if not actor.operator:
            raise NotAllowedError("Only the operator can disable or enable accounts.")
        if account_id == actor.account_id and disabled:
            raise NotAllowedError("You cannot disable your own account.")
        if not await self.store.set_disabled(account_id, disabled, self._clock()):
            raise NotAllowedError("No such account.")
        account = await self.store.get_account(account_id)
        assert account is not None
        return account

    # -- passwords of existing accounts --------------------------------------------------------

    async def change_password(
        self, account: Account, current: str, new: str, confirm: str, *, keep_session: str
    ) -> int:
        """Change the password after checking the current one; ends every other session.
        Returns how many sessions were ended."""
        if not await self._verify(account.password_hash, current):
            raise FieldError("current_password", "This is not your current password.")
        check_new_password(new, "new_password")
        if new != confirm:
            raise FieldError("confirm_password", "Type the same new password twice.")
        await self.store.set_password(account.account_id, await self._hash(new), self._clock())
        return await self.store.delete_sessions(account.account_id, keep=hash_token(keep_session))

    async def reset_password(self, email: str, password: str) -> int:
        """For the shell: set a new password and end every session of the account."""
        account = await self.store.find_account(normalise_email(email))
        if account is None:
            raise FieldError("email", f"no account with email {normalise_email(email)}")
        check_new_password(password)
        await self.store.set_password(account.account_id, await self._hash(password), self._clock())
        return await self.store.delete_sessions(account.account_id)

    # -- sessions -----------------------------------------------------------------------------

    async def _start_session(self, account: Account) -> SignedIn:
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(
            id_hash=hash_token(session_id),
            account_id=account.account_id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + self.session_ttl,
        )
        await self.store.create_session(session)
        # Expired sessions go as new ones come: the table stays the size of the live ones,
        # with no sweeper to run on some node.
        await self.store.delete_expired_sessions(now)
        return SignedIn(session_id, session, account)

    async def sign_in(self, email: str, password: str, ip: str) -> SignedIn:
        """Check the password, throttled per account and per client IP."""
        email = normalise_email(email)
        if not email:
            raise FieldError("email", "Enter your email address.")
        if not password:
            raise FieldError("password", "Enter your password.")
        now = self._clock()
        account_key, ip_key = f"account:{email}", f"ip:{ip or 'unknown'}"
        await self._check_throttle(
            account_key, ACCOUNT_FAILURES, now, "Too many failed sign-ins for this account."
        )
        await self._check_throttle(
            ip_key, IP_FAILURES, now, "Too many failed sign-ins from your network."
        )
        account = await self.store.find_account(email)
        ok = await self._verify(account.password_hash if account else None, password)
        if account is None or not ok:
            await self.store.record_sign_in_failure(
                [account_key, ip_key], now, forget=now - THROTTLE_WINDOW
            )
            raise FieldError(
                "password", "The email or password is wrong. Check both and try again."
            )
        if account.disabled:
            raise FieldError("email", "This account is disabled. Ask the operator to enable it.")
        await self.store.clear_sign_in_failures(account_key)
        if passwords.needs_rehash(account.password_hash):
            await self.store.set_password(account.account_id, await self._hash(password), now)
        return await self._start_session(account)

    async def _check_throttle(self, key: str, limit: int, now: datetime, what: str) -> None:
        failures = await self.store.recent_sign_in_failures(key, now - THROTTLE_WINDOW, limit)
        if len(failures) >= limit:
            # Heard again once the oldest of the last `limit` failures leaves the window.
            retry_at = failures[-1] + THROTTLE_WINDOW
            minutes = max(1, -(-int((retry_at - now).total_seconds()) // 60))
            raise ThrottledError(
                f"{what} Try again in {minutes} minute{'s' if minutes != 1 else ''} "
                f"(at {retry_at:%H:%M} UTC).",
                retry_at,
            )

    async def session(self, session_id: str) -> tuple[Session, Account] | None:
        """The signed-in session for a cookie value, or None (unknown, expired, disabled)."""
        if not session_id or len(session_id) > 128:
            return None
        return await self.store.get_session(hash_token(session_id), self._clock())

    async def sign_out(self, session_id: str) -> None:
        await self.store.delete_session(hash_token(session_id))

    async def sign_out_others(self, account: Account, session_id: str) -> int:
        return await self.store.delete_sessions(account.account_id, keep=hash_token(session_id))

    # -- invitations --------------------------------------------------------------------------

    async def create_invitation(
        self, actor: Account, *, for_project: bool = False
    ) -> tuple[Invitation, str]:
        """A single-use invitation; the token is returned once, kept hashed. The operator's
        let anyone sign up; a project owner's (`for_project`) sign up the person they added to
        their project (the caller binds the membership to the token)."""
        if not actor.operator and not for_project:
            raise NotAllowedError("Only the operator can invite people.")
        token = secrets.token_urlsafe(32)
        now = self._clock()
        invitation = Invitation(
            invitation_id="inv_" + secrets.token_hex(8),
            token_hash=hash_token(token),
            created_by=actor.account_id,
            created_at=now,
            expires_at=now + self.invitation_ttl,
        )
        await self.store.create_invitation(invitation)
        return invitation, token

    async def list_invitations(self) -> list[Invitation]:
        return await self.store.list_invitations()

    async def revoke_invitation(self, actor: Account, invitation_id: str) -> None:
        if not actor.operator:
            raise NotAllowedError("Only the operator can revoke invitations.")
        if not await self.store.revoke_invitation(invitation_id):
            raise NotAllowedError("This invitation is used or no longer exists.")

    def now(self) -> datetime:
        return self._clock()
