"""Dashboard accounts in SQL: `SqlAccountStore` implements `accounts.models.AccountStore`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from xshathra.accounts.models import (
    Account,
    AccountExistsError,
    AccountId,
    Invitation,
    InvitationInvalidError,
    Session,
)
from xshathra.storage.tables import (
    accounts,
    dashboard_sessions,
    invitations,
    server_state,
    sign_in_failures,
)

# The server_state row whose insert decides, across nodes, which account is the first.
_FIRST_ACCOUNT_KEY = "dashboard_first_account"


def _account_row(account: Account) -> dict[str, Any]:
    return {
        "account_id": account.account_id,
        "email": account.email,
        "password_hash": account.password_hash,
        "operator": account.operator,
        "disabled": account.disabled,
        "created_at": account.created_at,
        "updated_at": account.updated_at,
    }


def _account(row: Any) -> Account:
    return Account(
        account_id=AccountId(row.account_id),
        email=row.email,
        password_hash=row.password_hash,
        operator=bool(row.operator),
        disabled=bool(row.disabled),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _invitation(row: Any) -> Invitation:
    return Invitation(
        invitation_id=row.invitation_id,
        token_hash=row.token_hash,
        created_by=AccountId(row.created_by),
        created_at=row.created_at,
        expires_at=row.expires_at,
        used_at=row.used_at,
        used_by=AccountId(row.used_by) if row.used_by is not None else None,
    )


class SqlAccountStore:
    """`AccountStore` on SQLite or PostgreSQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # -- accounts -----------------------------------------------------------------------------

    async def create_account(self, account: Account, *, invitation_hash: str | None = None) -> None:
        try:
            async with self._engine.begin() as conn:
                if invitation_hash is not None:
                    # Consumed by a conditional update: of two sign-ups racing for one link,
                    # exactly one changes the row.
                    used = await conn.execute(
                        update(invitations)
                        .where(
                            invitations.c.token_hash == invitation_hash,
                            invitations.c.used_at.is_(None),
                            invitations.c.expires_at > account.created_at,
                        )
                        .values(used_at=account.created_at, used_by=account.account_id)
                    )
                    if not used.rowcount:
                        raise InvitationInvalidError()
                await conn.execute(accounts.insert().values(**_account_row(account)))
        except IntegrityError:
            # The transaction rolled back, the invitation with it: it stays usable.
            raise AccountExistsError(account.email) from None

    async def create_first_account(self, account: Account) -> bool:
        try:
            async with self._engine.begin() as conn:
                # The key is the primary key: one insert wins on every backend and node.
                await conn.execute(
                    server_state.insert().values(key=_FIRST_ACCOUNT_KEY, value=account.account_id)
                )
                await conn.execute(accounts.insert().values(**_account_row(account)))
        except IntegrityError:
            return False
        return True

    async def count_accounts(self) -> int:
        async with self._engine.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(accounts))).scalar_one()
            )

    async def get_account(self, account_id: str) -> Account | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(accounts).where(accounts.c.account_id == account_id))
            ).first()
        return _account(row) if row is not None else None

    async def find_account(self, email: str) -> Account | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.email == email))).first()
        return _account(row) if row is not None else None

    async def list_accounts(self) -> list[Account]:
        query = select(accounts).order_by(accounts.c.created_at, accounts.c.account_id)
        async with self._engine.connect() as conn:
            return [_account(r) for r in (await conn.execute(query)).all()]

    async def set_password(self, account_id: str, password_hash: str, at: datetime) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(accounts)
                .where(accounts.c.account_id == account_id)
                .values(password_hash=password_hash, updated_at=at)
            )
        return bool(result.rowcount)

    async def set_disabled(self, account_id: str, disabled: bool, at: datetime) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(accounts)
                .where(accounts.c.account_id == account_id)
                .values(disabled=disabled, updated_at=at)
            )
            if disabled:
                await conn.execute(
                    delete(dashboard_sessions).where(dashboard_sessions.c.account_id == account_id)
                )
        return bool(result.rowcount)

    # -- sessions -----------------------------------------------------------------------------

    async def create_session(self, session: Session) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                dashboard_sessions.insert().values(
                    id_hash=session.id_hash,
                    account_id=session.account_id,
                    csrf_token=session.csrf_token,
                    created_at=session.created_at,
                    expires_at=session.expires_at,
                )
            )

    async def get_session(self, id_hash: str, now: datetime) -> tuple[Session, Account] | None:
        # One indexed join per dashboard request: a disabled account or an ended session is
        # refused by whichever node the next request reaches.
        query = (
            select(dashboard_sessions, accounts)
            .join(accounts, accounts.c.account_id == dashboard_sessions.c.account_id)
            .where(
                dashboard_sessions.c.id_hash == id_hash,
                dashboard_sessions.c.expires_at > now,
                accounts.c.disabled.is_(False),
            )
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        session = Session(
            id_hash=row.id_hash,
            account_id=AccountId(row.account_id),
            csrf_token=row.csrf_token,
            created_at=row.created_at,
            expires_at=row.expires_at,
        )
        return session, _account(row)

    async def delete_session(self, id_hash: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(dashboard_sessions).where(dashboard_sessions.c.id_hash == id_hash)
            )

    async def delete_sessions(self, account_id: str, *, keep: str | None = None) -> int:
        query = delete(dashboard_sessions).where(dashboard_sessions.c.account_id == account_id)
        if keep is not None:
            query = query.where(dashboard_sessions.c.id_hash != keep)
        async with self._engine.begin() as conn:
            return int((await conn.execute(query)).rowcount)

    async def delete_expired_sessions(self, now: datetime) -> int:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(dashboard_sessions).where(dashboard_sessions.c.expires_at <= now)
            )
        return int(result.rowcount)

    # -- invitations --------------------------------------------------------------------------

    async def create_invitation(self, invitation: Invitation) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                invitations.insert().values(
                    invitation_id=invitation.invitation_id,
                    token_hash=invitation.token_hash,
                    created_by=invitation.created_by,
                    created_at=invitation.created_at,
                    expires_at=invitation.expires_at,
                    used_at=invitation.used_at,
                    used_by=invitation.used_by,
                )
            )

    async def list_invitations(self) -> list[Invitation]:
        query = select(invitations).order_by(
            invitations.c.created_at.desc(), invitations.c.invitation_id
        )
        async with self._engine.connect() as conn:
            return [_invitation(r) for r in (await conn.execute(query)).all()]

    async def revoke_invitation(self, invitation_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(invitations).where(
                    invitations.c.invitation_id == invitation_id, invitations.c.used_at.is_(None)
                )
            )
        return bool(result.rowcount)

    # -- sign-in failures ---------------------------------------------------------------------

    async def record_sign_in_failure(self, keys: list[str], at: datetime, forget: datetime) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(sign_in_failures).where(sign_in_failures.c.at < forget))
            await conn.execute(sign_in_failures.insert(), [{"key": k, "at": at} for k in keys])

    async def recent_sign_in_failures(
        self, key: str, since: datetime, limit: int
    ) -> list[datetime]:
        query = (
            select(sign_in_failures.c.at)
            .where(sign_in_failures.c.key == key, sign_in_failures.c.at > since)
            .order_by(sign_in_failures.c.at.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def clear_sign_in_failures(self, key: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(sign_in_failures).where(sign_in_failures.c.key == key))
