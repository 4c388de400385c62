"""The AccountStore contract and the account service's rules, identical on SQLite and
PostgreSQL: argon2id hashes, the first account, invitations used once, session expiry, ending
sessions, and sign-in throttling."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from xshathra.accounts.service import (
    ACCOUNT_FAILURES,
    AccountService,
    FieldError,
    SignupPolicy,
    SignupRefusedError,
    ThrottledError,
)
from xshathra.storage.database import Database, open_database


class Clock:
    """A settable clock, so expiry is tested by moving time, not by waiting."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(database: Database, clock: Clock) -> AccountService:
    return AccountService(
        database.accounts,
        signup=SignupPolicy.INVITE,
        session_ttl=timedelta(hours=1),
        invitation_ttl=timedelta(days=1),
        clock=clock,
    )


PASSWORD = "correct horse battery"


async def test_first_account_is_operator_and_password_is_argon2id(
    service: AccountService, database: Database
) -> None:
    """The first sign-up is allowed in invite mode, becomes operator; its hash is argon2id."""
    signed = await service.sign_up(" Owner@Example.com ", PASSWORD)
    assert signed.account.operator and signed.account.email == "owner@example.com"
    stored = await database.accounts.find_account("owner@example.com")
    assert stored is not None and stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash
    with pytest.raises(SignupRefusedError, match="invitation"):
        await service.sign_up("second@example.com", PASSWORD)


async def test_first_account_race_has_one_operator(database: Database, database_url: str) -> None:
    """Two nodes signing up their first account at once: one operator, the other refused."""
    other_db = await open_database(database_url)
    try:
        services = [
            AccountService(db.accounts, signup=SignupPolicy.OPEN) for db in (database, other_db)
        ]
        results = await asyncio.gather(
            *(s.sign_up(f"p{i}@example.com", PASSWORD) for i, s in enumerate(services))
        )
        assert sorted(r.account.operator for r in results) == [False, True]
    finally:
        await other_db.close()


async def test_invitation_is_single_use_and_expires(service: AccountService, clock: Clock) -> None:
    """An invitation signs up one account; reused or expired it is refused."""
    owner = (await service.sign_up("owner@example.com", PASSWORD)).account
    _, token = await service.create_invitation(owner)
    member = await service.sign_up("member@example.com", PASSWORD, token)
    assert not member.account.operator
    with pytest.raises(SignupRefusedError, match="used, revoked or expired"):
        await service.sign_up("third@example.com", PASSWORD, token)
    _, late = await service.create_invitation(owner)
    clock.now += timedelta(days=2)
    with pytest.raises(SignupRefusedError):
        await service.sign_up("late@example.com", PASSWORD, late)
    # A taken email does not consume the invitation.
    _, fresh = await service.create_invitation(owner)
    with pytest.raises(FieldError) as taken:
        await service.sign_up("member@example.com", PASSWORD, fresh)
    assert taken.value.field == "email"
    assert (await service.sign_up("fourth@example.com", PASSWORD, fresh)).account


async def test_session_expires_and_sign_out_ends_it(service: AccountService, clock: Clock) -> None:
    """A session lives for the session lifetime; sign-out ends it at once."""
    signed = await service.sign_up("owner@example.com", PASSWORD)
    assert (await service.session(signed.session_id)) is not None
    clock.now += timedelta(minutes=59)
    assert (await service.session(signed.session_id)) is not None
    clock.now += timedelta(minutes=2)
    assert await service.session(signed.session_id) is None
    again = await service.sign_in("owner@example.com", PASSWORD, "10.0.0.1")
    await service.sign_out(again.session_id)
    assert await service.session(again.session_id) is None
    assert await service.session("") is None


async def test_password_change_and_disable_end_sessions(service: AccountService) -> None:
    """Changing the password ends the other sessions; disabling ends all and refuses sign-in."""
    owner = await service.sign_up("owner@example.com", PASSWORD)
    other = await service.sign_in("owner@example.com", PASSWORD, "10.0.0.1")
    with pytest.raises(FieldError) as wrong:
        await service.change_password(
            owner.account, "nope", "new password 1", "new password 1", keep_session=owner.session_id
        )
    assert wrong.value.field == "current_password"
    ended = await service.change_password(
        owner.account, PASSWORD, "new password 1", "new password 1", keep_session=owner.session_id
    )
    assert ended == 1
    assert await service.session(other.session_id) is None
    assert await service.session(owner.session_id) is not None

    _, token = await service.create_invitation(owner.account)
    member = await service.sign_up("member@example.com", PASSWORD, token)
    await service.set_disabled(owner.account, member.account.account_id, True)
    assert await service.session(member.session_id) is None
    with pytest.raises(FieldError, match="disabled"):
        await service.sign_in("member@example.com", PASSWORD, "10.0.0.2")
    await service.set_disabled(owner.account, member.account.account_id, False)
    assert await service.sign_in("member@example.com", PASSWORD, "10.0.0.2")


async def test_sign_in_is_throttled_per_account_and_per_ip(
    service: AccountService, clock: Clock
) -> None:
    """5 failures lock the account for 15 minutes, whatever the IP; 20 lock an IP."""
    await service.sign_up("owner@example.com", PASSWORD)
    for i in range(ACCOUNT_FAILURES):
        with pytest.raises(FieldError):
            await service.sign_in("owner@example.com", "wrong", f"10.0.0.{i}")
    with pytest.raises(ThrottledError, match="Try again in 15 minutes") as throttled:
        await service.sign_in("owner@example.com", PASSWORD, "10.9.9.9")
    assert throttled.value.retry_at == clock.now + timedelta(minutes=15)
    clock.now += timedelta(minutes=15, seconds=1)
    assert await service.sign_in("owner@example.com", PASSWORD, "10.9.9.9")

    for i in range(20):
        with pytest.raises(FieldError):
            await service.sign_in(f"nobody{i}@example.com", "wrong", "10.1.1.1")
    with pytest.raises(ThrottledError, match="your network"):
        await service.sign_in("owner@example.com", PASSWORD, "10.1.1.1")
    assert await service.sign_in("owner@example.com", PASSWORD, "10.1.1.2")
