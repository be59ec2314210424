"""The audit trail's group commit: concurrent callers share batches, every event is stored
before its caller goes on, and a failed batch fails every caller in it."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.audit.trail import AuditTrail
from app.db import transaction
from app.fhir.store import FhirStore
from app.runtime import Runtime

EVENT_TYPES = "http://terminology.hl7.org/CodeSystem/audit-event-type"


def _event(n: int) -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
        },
        "recorded": "2026-12-01T09:00:00Z",
        "agent": [{"requestor": True, "who": {"display": f"caller {n}"}}],
        "source": {"observer": {"display": "Waymark"}},
        "entity": [{"what": {"identifier": {"value": f"request-{n}"}}}],
    }


async def _stored(runtime: Runtime) -> int:
    async with transaction(runtime.engine, write=False) as conn:
        return len(await runtime.store(conn).find("AuditEvent", [], count=500))


async def test_concurrent_callers_share_batches_and_all_are_stored(runtime: Runtime) -> None:
    batches: list[int] = []

    def counting_store(conn: AsyncConnection) -> FhirStore:
        store = runtime.store(conn)
        write = store.create_trusted

        async def create_trusted(resource_type: str, documents: Any) -> Any:
            batches.append(len(documents))
            return await write(resource_type, documents)

        store.create_trusted = create_trusted  # type: ignore[method-assign]
        return store

    trail = AuditTrail(runtime.engine, counting_store)
    await asyncio.gather(*(trail.write([_event(n), _event(n + 100)]) for n in range(40)))
    assert sum(batches) == 80
    assert len(batches) < 40  # callers arriving during a batch joined the next one
    assert await _stored(runtime) == 80
    assert await asyncio.gather(trail.write([])) == [None]  # nothing to write: no batch
    assert sum(batches) == 80


async def test_a_failed_batch_fails_each_caller(runtime: Runtime) -> None:
    def failing_store(conn: AsyncConnection) -> FhirStore:
        raise ConnectionError("the database went away")

    trail = AuditTrail(runtime.engine, failing_store)
    results = await asyncio.gather(
        *(trail.write([_event(n)]) for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await _stored(runtime) == 0
    # The trail recovers: the next batch is written.
    working = AuditTrail(runtime.engine, runtime.store)
    await working.write([_event(1)])
    assert await _stored(runtime) == 1


async def test_nothing_is_left_in_flight_once_a_caller_returns(runtime: Runtime) -> None:
    await runtime.audit_trail.write([_event(7)])
    writer = runtime.audit_trail._writer
    assert writer is None or writer.done()
    assert await _stored(runtime) == 1
