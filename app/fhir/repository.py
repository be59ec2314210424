"""All SQL of the generic FHIR store (SQLAlchemy Core: the write path is hot)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, and_, delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.fhir.models import Resource, ResourceVersion, SearchToken

resource_table = cast(Table, Resource.__table__)
version_table = cast(Table, ResourceVersion.__table__)
token_table = cast(Table, SearchToken.__table__)


def as_utc(value: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; everything stored is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One stored version of a resource, as the database holds it."""

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    content: bytes | None
    method: str = ""


@dataclass(frozen=True, slots=True)
class TokenRow:
    param: str
    system: str
    code: str


class ResourceRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.is_postgres = conn.dialect.name == "postgresql"

    async def current(
        self, resource_type: str, resource_id: str, *, for_update: bool = False
    ) -> StoredVersion | None:
        stmt = select(
            resource_table.c.version_id,
            resource_table.c.last_updated,
            resource_table.c.deleted,
            resource_table.c.content,
        ).where(
            resource_table.c.resource_type == resource_type,
            resource_table.c.id == resource_id,
        )
        if for_update and self.is_postgres:
            stmt = stmt.with_for_update()
        row = (await self.conn.execute(stmt)).first()
        if row is None:
            return None
        return StoredVersion(resource_type, resource_id, row[0], as_utc(row[1]), row[2], row[3])

    async def version(
        self, resource_type: str, resource_id: str, version_id: int
    ) -> StoredVersion | None:
        stmt = select(
            version_table.c.last_updated,
            version_table.c.deleted,
            version_table.c.content,
            version_table.c.method,
        ).where(
            version_table.c.resource_type == resource_type,
            version_table.c.id == resource_id,
            version_table.c.version_id == version_id,
        )
        row = (await self.conn.execute(stmt)).first()
        if row is None:
            return None
        return StoredVersion(
            resource_type, resource_id, version_id, as_utc(row[0]), row[1], row[2], row[3]
        )

    async def insert_new(self, stored: StoredVersion) -> None:
        await self.conn.execute(
            insert(resource_table),
            {
                "resource_type": stored.resource_type,
                "id": stored.id,
                "version_id": stored.version_id,
                "last_updated": stored.last_updated,
                "deleted": stored.deleted,
                "content": stored.content,
            },
        )
        await self._insert_version(stored)

    async def replace(self, stored: StoredVersion, *, previous_version: int) -> bool:
        """Write a new current version; False when someone else wrote first."""
        result = await self.conn.execute(
            update(resource_table)
            .where(
                resource_table.c.resource_type == stored.resource_type,
                resource_table.c.id == stored.id,
                resource_table.c.version_id == previous_version,
            )
            .values(
                version_id=stored.version_id,
                last_updated=stored.last_updated,
                deleted=stored.deleted,
                content=stored.content,
            )
        )
        if result.rowcount != 1:
            return False
        await self._insert_version(stored)
        return True

    async def _insert_version(self, stored: StoredVersion) -> None:
        await self.conn.execute(
            insert(version_table),
            {
                "resource_type": stored.resource_type,
                "id": stored.id,
                "version_id": stored.version_id,
                "last_updated": stored.last_updated,
                "deleted": stored.deleted,
                "method": stored.method,
                "content": stored.content,
            },
        )

    async def history(
        self,
        resource_type: str,
        resource_id: str | None,
        *,
        since: datetime | None,
        limit: int,
    ) -> Sequence[StoredVersion]:
        """Newest first, as FHIR's history interaction returns them."""
        conditions = [version_table.c.resource_type == resource_type]
        if resource_id is not None:
            conditions.append(version_table.c.id == resource_id)
        if since is not None:
            conditions.append(version_table.c.last_updated >= since)
        stmt = (
            select(
                version_table.c.id,
                version_table.c.version_id,
                version_table.c.last_updated,
                version_table.c.deleted,
                version_table.c.content,
                version_table.c.method,
            )
            .where(and_(*conditions))
            .order_by(
                version_table.c.last_updated.desc(),
                version_table.c.id,
                version_table.c.version_id.desc(),
            )
            .limit(limit)
        )
        rows = (await self.conn.execute(stmt)).all()
        return [
            StoredVersion(resource_type, r[0], r[1], as_utc(r[2]), r[3], r[4], r[5]) for r in rows
        ]

    async def replace_tokens(
        self, resource_type: str, resource_id: str, tokens: Sequence[TokenRow], *, new: bool
    ) -> None:
        if not new:
            await self.conn.execute(
                delete(token_table).where(
                    token_table.c.resource_type == resource_type,
                    token_table.c.resource_id == resource_id,
                )
            )
        if tokens:
            await self.conn.execute(
                insert(token_table),
                [
                    {
                        "resource_type": resource_type,
                        "resource_id": resource_id,
                        "param": t.param,
                        "system": t.system,
                        "code": t.code,
                    }
                    for t in tokens
                ],
            )

    async def lock(self, key: str) -> None:
        """Serialise writers that race on ``key`` until the transaction ends.

        PostgreSQL: a transaction-scoped advisory lock. SQLite needs none: every write
        transaction there begins with ``BEGIN IMMEDIATE`` and so runs alone.
        """
        if not self.is_postgres:
            return
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        await self.conn.execute(
            text("SELECT pg_advisory_xact_lock(:key)"),
            {"key": int.from_bytes(digest, "big", signed=True)},
        )
