"""The transaction scope of app.db, on SQLite and PostgreSQL: all or nothing, whether a statement
goes through SQLAlchemy or (PostgreSQL) straight to the driver, and a lost connection is not
handed out again."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from app.db import transaction
from app.fhir.repository import ResourceRepository, StoredVersion, resource_table, version_table
from app.fhir.search.index import IndexRows
from app.runtime import Runtime


def _patient(resource_id: str, version_id: int = 1) -> StoredVersion:
    body = b'{"resourceType":"Patient","id":"' + resource_id.encode() + b'"}'
    now = datetime.now(UTC)
    return StoredVersion("Patient", resource_id, version_id, now, False, body, "POST")


_INDEX = IndexRows(
    tokens=[("identifier", "urn:test", "1", "1")], strings=[("name", "eve", "Eve", "eve")]
)


async def _count(runtime: Runtime, resource_id: str) -> tuple[int, int]:
    async with transaction(runtime.engine, write=False) as conn:
        current = await conn.scalar(
            select(func.count())
            .select_from(resource_table)
            .where(resource_table.c.id == resource_id)
        )
        versions = await conn.scalar(
            select(func.count()).select_from(version_table).where(version_table.c.id == resource_id)
        )
    return int(current or 0), int(versions or 0)


class Boom(Exception):
    pass


async def test_a_write_transaction_commits_when_the_block_ends(runtime: Runtime) -> None:
    resource_id = str(uuid.uuid4())
    async with transaction(runtime.engine, write=True) as conn:
        await ResourceRepository(conn).insert_new(_patient(resource_id), _INDEX)
    async with transaction(runtime.engine, write=False) as conn:
        stored = await ResourceRepository(conn).current("Patient", resource_id)
    assert stored is not None
    assert stored.version_id == 1
    assert await _count(runtime, resource_id) == (1, 1)


async def test_a_write_transaction_that_raises_leaves_nothing(runtime: Runtime) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())

    async def two_then_fail() -> None:
        async with transaction(runtime.engine, write=True) as conn:
            repository = ResourceRepository(conn)
            await repository.insert_new(_patient(first), _INDEX)
            await repository.insert_new(_patient(second), _INDEX)
            raise Boom

    with pytest.raises(Boom):
        await two_then_fail()
    assert await _count(runtime, first) == (0, 0)
    assert await _count(runtime, second) == (0, 0)
    # The connection went back to the pool usable.
    async with transaction(runtime.engine, write=True) as conn:
        await ResourceRepository(conn).insert_new(_patient(first), _INDEX)
    assert await _count(runtime, first) == (1, 1)


async def test_a_savepoint_undoes_only_its_own_writes(runtime: Runtime) -> None:
    kept, undone = str(uuid.uuid4()), str(uuid.uuid4())
    async with transaction(runtime.engine, write=True) as conn:
        repository = ResourceRepository(conn)
        await repository.insert_new(_patient(kept), _INDEX)

        async def fail_in_savepoint() -> None:
            async with conn.begin_nested():
                await repository.insert_new(_patient(undone), _INDEX)
                raise Boom

        with pytest.raises(Boom):
            await fail_in_savepoint()
    assert await _count(runtime, kept) == (1, 1)
    assert await _count(runtime, undone) == (0, 0)


async def test_replace_sees_the_version_it_expects(runtime: Runtime) -> None:
    resource_id = str(uuid.uuid4())
    async with transaction(runtime.engine, write=True) as conn:
        await ResourceRepository(conn).insert_new(_patient(resource_id), _INDEX)
    async with transaction(runtime.engine, write=True) as conn:
        repository = ResourceRepository(conn)
        current = await repository.current("Patient", resource_id, for_update=True)
        assert current is not None
        assert await repository.replace(_patient(resource_id, 2), _INDEX, previous_version=1)
    assert await _count(runtime, resource_id) == (1, 2)

    async def stale_write() -> None:
        async with transaction(runtime.engine, write=True) as conn:
            repository = ResourceRepository(conn)
            assert not await repository.replace(
                _patient(resource_id, 3), _INDEX, previous_version=1
            )
            raise Boom  # as the store does (412), which rolls the transaction back

    with pytest.raises(Boom):
        await stale_write()
    async with transaction(runtime.engine, write=False) as conn:
        current = await ResourceRepository(conn).current("Patient", resource_id)
    assert current is not None
    assert current.version_id == 2
    assert await _count(runtime, resource_id) == (1, 2)


async def test_concurrent_writers_all_succeed(runtime: Runtime) -> None:
    ids = [str(uuid.uuid4()) for _ in range(8)]

    async def write(resource_id: str) -> None:
        async with transaction(runtime.engine, write=True) as conn:
            await ResourceRepository(conn).insert_new(_patient(resource_id), _INDEX)

    await asyncio.gather(*(write(resource_id) for resource_id in ids))
    for resource_id in ids:
        assert await _count(runtime, resource_id) == (1, 1)


@pytest.mark.parametrize("write", [False, True])
async def test_a_lost_postgresql_connection_is_not_handed_out_again(
    runtime: Runtime, write: bool
) -> None:
    engine = runtime.engine
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: the driver connection is used directly there")
    async with transaction(engine, write=write) as conn:
        backend = await conn.scalar(select(func.pg_backend_pid()))
    url = make_url(runtime.settings.database_url).set(drivername="postgresql")
    admin = await asyncpg.connect(url.render_as_string(hide_password=False), ssl=False)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", backend)
    finally:
        await admin.close()
    # Every pooled connection may be the dead one: at most one failure each, then service.
    for _ in range(engine.pool.size() + 1):
        try:
            async with transaction(engine, write=write) as conn:
                await ResourceRepository(conn).current("Patient", "x", for_update=write)
        except Exception:  # the dead connection's error, expected once
            continue
        break
    async with transaction(engine, write=write) as conn:
        assert await ResourceRepository(conn).current("Patient", "x", for_update=write) is None
        assert await conn.scalar(select(func.pg_backend_pid())) != backend
