"""Project members in SQL: `SqlMemberStore` implements `tenancy.members.MemberStore`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from xshathra.storage.tables import project_members
from xshathra.tenancy.members import Member, MemberExistsError, Role


def _member(row: Any) -> Member:
    return Member(
        member_id=row.member_id,
        app_id=row.app_id,
        email=row.email,
        role=Role(row.role),
        account_id=row.account_id,
        created_at=row.created_at,
    )


class SqlMemberStore:
    """`MemberStore` on SQLite or PostgreSQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, member: Member, *, invitation_hash: str | None = None) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    project_members.insert().values(
                        member_id=member.member_id,
                        app_id=member.app_id,
                        account_id=member.account_id,
                        email=member.email,
                        role=member.role.value,
                        invitation_hash=invitation_hash,
                        created_at=member.created_at,
                    )
                )
        except IntegrityError:
            raise MemberExistsError(member.email) from None

    async def list_for_app(self, app_id: str) -> list[Member]:
        query = (
            select(project_members)
            .where(project_members.c.app_id == app_id)
            .order_by(project_members.c.created_at, project_members.c.member_id)
        )
        async with self._engine.connect() as conn:
            return [_member(r) for r in await conn.execute(query)]

    async def role(self, app_id: str, account_id: str) -> Role | None:
        query = select(project_members.c.role).where(
            project_members.c.app_id == app_id, project_members.c.account_id == account_id
        )
        async with self._engine.connect() as conn:
            found = (await conn.execute(query)).scalar()
        return Role(found) if found is not None else None

    async def roles_of(self, account_id: str) -> dict[str, Role]:
        query = select(project_members.c.app_id, project_members.c.role).where(
            project_members.c.account_id == account_id
        )
        async with self._engine.connect() as conn:
            return {r.app_id: Role(r.role) for r in await conn.execute(query)}

    async def set_role(self, app_id: str, member_id: str, role: Role) -> bool:
        query = (
            update(project_members)
            .where(project_members.c.app_id == app_id, project_members.c.member_id == member_id)
            .values(role=role.value)
        )
        async with self._engine.begin() as conn:
            return bool((await conn.execute(query)).rowcount)

    async def remove(self, app_id: str, member_id: str) -> bool:
        query = delete(project_members).where(
            project_members.c.app_id == app_id, project_members.c.member_id == member_id
        )
        async with self._engine.begin() as conn:
            return bool((await conn.execute(query)).rowcount)

    async def claim(self, invitation_hash: str, account_id: str, email: str) -> int:
        query = (
            update(project_members)
            .where(
                project_members.c.invitation_hash == invitation_hash,
                project_members.c.account_id.is_(None),
            )
            .values(account_id=account_id, invitation_hash=None)
        )
        async with self._engine.begin() as conn:
            return int((await conn.execute(query)).rowcount or 0)
