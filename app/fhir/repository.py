"""All SQL of the generic FHIR store (SQLAlchemy Core: the write path is hot)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from app.fhir.models import (
    INDEX_TABLES,
    Resource,
    ResourceVersion,
    search_date,
    search_quantity,
    search_reference,
    search_string,
    search_token,
)
from app.fhir.search.index import IndexRows

resource_table = cast(Table, Resource.__table__)
version_table = cast(Table, ResourceVersion.__table__)


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


# Built once: the read-by-id statement is the hottest in the service.
_SELECT_CURRENT = select(
    resource_table.c.version_id,
    resource_table.c.last_updated,
    resource_table.c.deleted,
    resource_table.c.content,
).where(
    resource_table.c.resource_type == bindparam("rt"),
    resource_table.c.id == bindparam("rid"),
)
_SELECT_CURRENT_FOR_UPDATE = _SELECT_CURRENT.with_for_update()


@dataclass(frozen=True, slots=True)
class _Native:
    """A statement as asyncpg takes it (``$n`` placeholders), compiled once from the same
    SQLAlchemy construct, and the order of its parameters."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, statement: ClauseElement) -> _Native:
        dialect = asyncpg_dialect()  # type: ignore[no-untyped-call]
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        return cls(compiled.string, tuple(compiled.positiontup or ()))

    def arguments(self, parameters: dict[str, object]) -> list[object]:
        return [parameters[name] for name in self.names]


class ResourceRepository:
    """On PostgreSQL over asyncpg, the hot statements (read by id, the one-statement writes)
    go to the driver connection directly: SQLAlchemy's execution machinery costs more CPU than
    the statement itself. They run on the same connection, in the same transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.is_postgres = conn.dialect.name == "postgresql"
        self._asyncpg = self.is_postgres and conn.dialect.driver == "asyncpg"

    def _driver(self) -> Any:
        """The asyncpg connection, when a statement sent on it lands where SQLAlchemy would
        send it: in the transaction already begun (app.db begins it up front), or in
        autocommit. None otherwise (SQLAlchemy then begins the transaction itself)."""
        if not self._asyncpg:
            return None
        sync = self.conn.sync_connection
        if sync is None or sync.closed or sync.invalidated:
            return None
        proxied = sync.connection
        driver = proxied.driver_connection
        if driver is None:
            return None
        if driver.is_in_transaction() or getattr(proxied.dbapi_connection, "autocommit", False):
            return driver
        return None

    async def current(
        self, resource_type: str, resource_id: str, *, for_update: bool = False
    ) -> StoredVersion | None:
        for_update = for_update and self.is_postgres
        driver = self._driver()
        if driver is not None:
            native = _NATIVE_CURRENT_FOR_UPDATE if for_update else _NATIVE_CURRENT
            row = await driver.fetchrow(native.sql, resource_type, resource_id)
        else:
            stmt = _SELECT_CURRENT_FOR_UPDATE if for_update else _SELECT_CURRENT
            parameters = {"rt": resource_type, "rid": resource_id}
            row = (await self.conn.execute(stmt, parameters)).first()
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

    async def insert_new(self, stored: StoredVersion, index: IndexRows) -> None:
        """Write the first version of a resource and its index rows."""
        if self.is_postgres:
            parameters = _pg_parameters(stored, index, None)
            driver = self._driver()
            if driver is not None:
                await driver.execute(_NATIVE_CREATE.sql, *_NATIVE_CREATE.arguments(parameters))
            else:
                await self.conn.execute(_PG_CREATE, parameters)
            return
        await self.conn.execute(insert(resource_table), _resource_values(stored))
        await self.conn.execute(insert(version_table), _version_values(stored))
        await self._insert_index(stored, index)

    async def insert_many(self, items: Sequence[tuple[StoredVersion, IndexRows]]) -> None:
        """Write the first versions of several resources and their index rows: on PostgreSQL
        one statement, however many (the AuditEvents of many requests, written together)."""
        if self.is_postgres:
            parameters = _pg_many_parameters(items)
            driver = self._driver()
            if driver is not None:
                await driver.execute(_NATIVE_MANY.sql, *_NATIVE_MANY.arguments(parameters))
            else:
                await self.conn.execute(_PG_CREATE_MANY, parameters)
            return
        await self.conn.execute(insert(resource_table), [_resource_values(s) for s, _ in items])
        await self.conn.execute(insert(version_table), [_version_values(s) for s, _ in items])
        for table, rows in _index_values(items).items():
            if rows:
                await self.conn.execute(insert(table), rows)

    async def replace(
        self, stored: StoredVersion, index: IndexRows, *, previous_version: int
    ) -> bool:
        """Write a new current version and its index rows; False if another write came first."""
        if self.is_postgres:
            parameters = _pg_parameters(stored, index, previous_version)
            driver = self._driver()
            if driver is not None:
                status = await driver.execute(
                    _NATIVE_REPLACE.sql, *_NATIVE_REPLACE.arguments(parameters)
                )
                return bool(status == "UPDATE 1")
            result = await self.conn.execute(_PG_REPLACE, parameters)
            return result.rowcount == 1
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
        await self.conn.execute(insert(version_table), _version_values(stored))
        for table in INDEX_TABLES:
            await self.conn.execute(
                delete(table).where(
                    table.c.resource_type == stored.resource_type,
                    table.c.resource_id == stored.id,
                )
            )
        await self._insert_index(stored, index)
        return True

    async def _insert_index(self, stored: StoredVersion, index: IndexRows) -> None:
        for table, rows in _index_values([(stored, index)]).items():
            if rows:
                await self.conn.execute(insert(table), rows)

    async def history(
        self,
        resource_type: str,
        resource_id: str | None,
        *,
        since: datetime | None,
        limit: int,
        after: tuple[datetime, str, int] | None = None,
    ) -> Sequence[StoredVersion]:
        """Newest first, as FHIR's history interaction returns them: by last_updated
        descending, then id, then version descending; ``after`` (last_updated, id, version)
        starts strictly after that version in this order (keyset paging)."""
        v = version_table.c
        conditions = [v.resource_type == resource_type]
        if resource_id is not None:
            conditions.append(v.id == resource_id)
        if since is not None:
            conditions.append(v.last_updated >= since)
        if after is not None:
            moment, after_id, after_version = after
            conditions.append(
                or_(
                    v.last_updated < moment,
                    and_(v.last_updated == moment, v.id > after_id),
                    and_(v.last_updated == moment, v.id == after_id, v.version_id < after_version),
                )
            )
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

    async def versions(self, resource_type: str, resource_id: str) -> Sequence[StoredVersion]:
        """Every version of one resource, oldest first (for rebuilding projections)."""
        stmt = (
            select(
                version_table.c.version_id,
                version_table.c.last_updated,
                version_table.c.deleted,
                version_table.c.content,
                version_table.c.method,
            )
            .where(
                version_table.c.resource_type == resource_type, version_table.c.id == resource_id
            )
            .order_by(version_table.c.version_id)
        )
        rows = (await self.conn.execute(stmt)).all()
        return [
            StoredVersion(resource_type, resource_id, r[0], as_utc(r[1]), r[2], r[3], r[4])
            for r in rows
        ]

    async def all_current(self, resource_type: str) -> Sequence[bytes]:
        """The current content of every live resource of a type, in id order (for rebuilding
        projections; a scan, never on a request's path)."""
        stmt = (
            select(resource_table.c.content)
            .where(
                resource_table.c.resource_type == resource_type,
                resource_table.c.deleted.is_(False),
            )
            .order_by(resource_table.c.id)
        )
        return [row[0] for row in (await self.conn.execute(stmt)).all()]

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


def _resource_values(stored: StoredVersion) -> dict[str, object]:
    return {
        "resource_type": stored.resource_type,
        "id": stored.id,
        "version_id": stored.version_id,
        "last_updated": stored.last_updated,
        "deleted": stored.deleted,
        "content": stored.content,
    }


def _version_values(stored: StoredVersion) -> dict[str, object]:
    return {**_resource_values(stored), "method": stored.method}


def _index_values(
    items: Sequence[tuple[StoredVersion, IndexRows]],
) -> dict[Table, list[dict[str, object]]]:
    """The index rows of ``items``, as insert values per index table."""
    rows: dict[Table, list[dict[str, object]]] = {table: [] for table in INDEX_TABLES}
    for stored, index in items:
        key = {"resource_type": stored.resource_type, "resource_id": stored.id}
        rows[search_token] += [
            {**key, "param": p, "system": s, "code": c, "code_key": k}
            for p, s, c, k in index.tokens
        ]
        rows[search_string] += [
            {**key, "param": p, "value": v, "exact": e, "value_key": k}
            for p, v, e, k in index.strings
        ]
        rows[search_reference] += [
            {**key, "param": p, "target_type": t, "target_id": i} for p, t, i in index.references
        ]
        rows[search_date] += [
            {**key, "param": p, "low": lo, "high": hi} for p, lo, hi in index.dates
        ]
        rows[search_quantity] += [
            {**key, "param": p, "value": v, "system": s, "code": c}
            for p, v, s, c in index.quantities
        ]
    return rows


# PostgreSQL writes a version in one statement: the resource row, its history row and every
# index row (arrays unnested), so a write costs one round trip however many rows it touches.
# Data-modifying CTEs share one snapshot, so the index DELETEs never see the rows inserted
# beside them.
_PG_INDEX_INSERTS = """
  tok AS (INSERT INTO search_token (resource_type, param, system, code, code_key, resource_id)
          SELECT :rt, x.p, x.s, x.c, x.k, :rid
          FROM unnest(CAST(:tok_p AS text[]), CAST(:tok_s AS text[]), CAST(:tok_c AS text[]),
                      CAST(:tok_k AS text[])) AS x(p, s, c, k)),
  str AS (INSERT INTO search_string (resource_type, param, value, exact, value_key, resource_id)
          SELECT :rt, x.p, x.v, x.e, x.k, :rid
          FROM unnest(CAST(:str_p AS text[]), CAST(:str_v AS text[]), CAST(:str_e AS text[]),
                      CAST(:str_k AS text[])) AS x(p, v, e, k)),
  ref AS (INSERT INTO search_reference (resource_type, param, target_type, target_id, resource_id)
          SELECT :rt, x.p, x.t, x.i, :rid
          FROM unnest(CAST(:ref_p AS text[]), CAST(:ref_t AS text[]), CAST(:ref_i AS text[]))
               AS x(p, t, i)),
  dat AS (INSERT INTO search_date (resource_type, param, low, high, resource_id)
          SELECT :rt, x.p, x.l, x.h, :rid
          FROM unnest(CAST(:dat_p AS text[]), CAST(:dat_l AS timestamptz[]),
                      CAST(:dat_h AS timestamptz[])) AS x(p, l, h)),
  qty AS (INSERT INTO search_quantity (resource_type, param, value, system, code, resource_id)
          SELECT :rt, x.p, x.v, x.s, x.c, :rid
          FROM unnest(CAST(:qty_p AS text[]), CAST(:qty_v AS numeric[]), CAST(:qty_s AS text[]),
                      CAST(:qty_c AS text[])) AS x(p, v, s, c))"""

_PG_VERSION_INSERT = """
  ver AS (INSERT INTO resource_version
            (resource_type, id, version_id, last_updated, deleted, method, content)
          VALUES (:rt, :rid, :vid, :updated, :deleted, :method, :content))"""

_PG_CREATE = text(
    f"WITH {_PG_VERSION_INSERT},{_PG_INDEX_INSERTS}\n"
    "INSERT INTO resource (resource_type, id, version_id, last_updated, deleted, content)\n"
    "VALUES (:rt, :rid, :vid, :updated, :deleted, :content)"
)

_PG_INDEX_DELETES = ",".join(  # table names are the module's own constants
    f"\n  del_{table.name} AS (DELETE FROM {table.name} "  # noqa: S608
    "WHERE resource_type = :rt AND resource_id = :rid)"
    for table in INDEX_TABLES
)

_PG_REPLACE = text(
    f"WITH {_PG_VERSION_INSERT},{_PG_INDEX_DELETES},{_PG_INDEX_INSERTS}\n"
    "UPDATE resource SET version_id = :vid, last_updated = :updated, deleted = :deleted,"
    " content = :content\n"
    "WHERE resource_type = :rt AND id = :rid AND version_id = :previous"
)


# Several first versions at once: every row as arrays, each index row naming its resource.
_PG_CREATE_MANY = text(
    """WITH
  ver AS (INSERT INTO resource_version
            (resource_type, id, version_id, last_updated, deleted, method, content)
          SELECT x.rt, x.id, 1, x.u, false, x.m, x.c
          FROM unnest(CAST(:rts AS text[]), CAST(:ids AS text[]), CAST(:upd AS timestamptz[]),
                      CAST(:mth AS text[]), CAST(:cnt AS bytea[])) AS x(rt, id, u, m, c)),
  tok AS (INSERT INTO search_token (resource_type, param, system, code, code_key, resource_id)
          SELECT x.rt, x.p, x.s, x.c, x.k, x.r
          FROM unnest(CAST(:tok_t AS text[]), CAST(:tok_p AS text[]), CAST(:tok_s AS text[]),
                      CAST(:tok_c AS text[]), CAST(:tok_k AS text[]), CAST(:tok_r AS text[]))
               AS x(rt, p, s, c, k, r)),
  str AS (INSERT INTO search_string (resource_type, param, value, exact, value_key, resource_id)
          SELECT x.rt, x.p, x.v, x.e, x.k, x.r
          FROM unnest(CAST(:str_t AS text[]), CAST(:str_p AS text[]), CAST(:str_v AS text[]),
                      CAST(:str_e AS text[]), CAST(:str_k AS text[]), CAST(:str_r AS text[]))
               AS x(rt, p, v, e, k, r)),
  ref AS (INSERT INTO search_reference (resource_type, param, target_type, target_id, resource_id)
          SELECT x.rt, x.p, x.tt, x.i, x.r
          FROM unnest(CAST(:ref_t AS text[]), CAST(:ref_p AS text[]), CAST(:ref_tt AS text[]),
                      CAST(:ref_i AS text[]), CAST(:ref_r AS text[])) AS x(rt, p, tt, i, r)),
  dat AS (INSERT INTO search_date (resource_type, param, low, high, resource_id)
          SELECT x.rt, x.p, x.l, x.h, x.r
          FROM unnest(CAST(:dat_t AS text[]), CAST(:dat_p AS text[]),
                      CAST(:dat_l AS timestamptz[]), CAST(:dat_h AS timestamptz[]),
                      CAST(:dat_r AS text[])) AS x(rt, p, l, h, r)),
  qty AS (INSERT INTO search_quantity (resource_type, param, value, system, code, resource_id)
          SELECT x.rt, x.p, x.v, x.s, x.c, x.r
          FROM unnest(CAST(:qty_t AS text[]), CAST(:qty_p AS text[]), CAST(:qty_v AS numeric[]),
                      CAST(:qty_s AS text[]), CAST(:qty_c AS text[]), CAST(:qty_r AS text[]))
               AS x(rt, p, v, s, c, r))
INSERT INTO resource (resource_type, id, version_id, last_updated, deleted, content)
SELECT x.rt, x.id, 1, x.u, false, x.c
FROM unnest(CAST(:rts AS text[]), CAST(:ids AS text[]), CAST(:upd AS timestamptz[]),
            CAST(:cnt AS bytea[])) AS x(rt, id, u, c)"""
)

_NATIVE_CURRENT = _Native.of(_SELECT_CURRENT)
_NATIVE_CURRENT_FOR_UPDATE = _Native.of(_SELECT_CURRENT_FOR_UPDATE)
_NATIVE_CREATE = _Native.of(_PG_CREATE)
_NATIVE_REPLACE = _Native.of(_PG_REPLACE)
_NATIVE_MANY = _Native.of(_PG_CREATE_MANY)


def _pg_parameters(
    stored: StoredVersion, index: IndexRows, previous_version: int | None
) -> dict[str, object]:
    def column(rows: Sequence[tuple[object, ...]], position: int) -> list[object]:
        return [row[position] for row in rows]

    parameters: dict[str, object] = {
        "rt": stored.resource_type,
        "rid": stored.id,
        "vid": stored.version_id,
        "updated": stored.last_updated,
        "deleted": stored.deleted,
        "method": stored.method,
        "content": stored.content,
    }
    for prefix, rows, width in (
        ("tok", index.tokens, ("p", "s", "c", "k")),
        ("str", index.strings, ("p", "v", "e", "k")),
        ("ref", index.references, ("p", "t", "i")),
        ("dat", index.dates, ("p", "l", "h")),
        ("qty", index.quantities, ("p", "v", "s", "c")),
    ):
        for position, name in enumerate(width):
            parameters[f"{prefix}_{name}"] = column(rows, position)
    if previous_version is not None:
        parameters["previous"] = previous_version
    return parameters


#: Each index table's parameters in _PG_CREATE_MANY: a prefix, and (short name, column) pairs.
_MANY_COLUMNS: dict[Table, tuple[str, tuple[tuple[str, str], ...]]] = {
    search_token: ("tok", (("p", "param"), ("s", "system"), ("c", "code"), ("k", "code_key"))),
    search_string: ("str", (("p", "param"), ("v", "value"), ("e", "exact"), ("k", "value_key"))),
    search_reference: ("ref", (("p", "param"), ("tt", "target_type"), ("i", "target_id"))),
    search_date: ("dat", (("p", "param"), ("l", "low"), ("h", "high"))),
    search_quantity: ("qty", (("p", "param"), ("v", "value"), ("s", "system"), ("c", "code"))),
}


def _pg_many_parameters(items: Sequence[tuple[StoredVersion, IndexRows]]) -> dict[str, object]:
    versions = [stored for stored, _ in items]
    parameters: dict[str, object] = {
        "rts": [s.resource_type for s in versions],
        "ids": [s.id for s in versions],
        "upd": [s.last_updated for s in versions],
        "mth": [s.method for s in versions],
        "cnt": [s.content for s in versions],
    }
    for table, rows in _index_values(items).items():
        prefix, named = _MANY_COLUMNS[table]
        parameters[f"{prefix}_t"] = [row["resource_type"] for row in rows]
        parameters[f"{prefix}_r"] = [row["resource_id"] for row in rows]
        for short, column in named:
            parameters[f"{prefix}_{short}"] = [row[column] for row in rows]
    return parameters
