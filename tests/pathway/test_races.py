"""Writers racing on PostgreSQL, on two connections: two referrals of one person to one service,
or two referrals accepted at once, must not make two open referrals or two pathway CarePlans.

Each test holds both writes at a barrier just before the pathway's rules run, so that both
check "is there one already?" at the same moment; SQLite runs one writer at a time, so these
run on PostgreSQL only.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from app.db import transaction
from app.fhir.errors import BusinessRuleViolation
from app.fhir.hooks import WriteEvent, WriteHooks
from app.pathway import phase_rules, referrals
from app.runtime import Runtime
from tests.pathway.referrals import new_patient, referral, role_in, service, task_of


@pytest.fixture(autouse=True)
def postgresql_only(runtime: Runtime) -> None:
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite serialises writers with BEGIN IMMEDIATE")


def _hooks_meeting_at(barrier: asyncio.Barrier, *, before: str = "", after: str = "") -> WriteHooks:
    """The pathway's hooks, with both racers meeting first at ``barrier``."""

    async def meet(event: WriteEvent) -> None:
        await asyncio.wait_for(barrier.wait(), timeout=30)  # a guard against a hang only

    hooks = WriteHooks()
    if before:
        hooks.before(before, meet)
    if after:
        hooks.after(after, meet)
    referrals.install(hooks)
    phase_rules.install(hooks)
    return hooks


async def _create(runtime: Runtime, document: dict[str, Any]) -> str:
    async with transaction(runtime.engine, write=True) as conn:
        result = await runtime.store(conn).create(document, resource_type="ServiceRequest")
    return result.stored.id


async def test_two_concurrent_referrals_to_one_service_one_wins(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    patient_id = await new_patient(client)
    requester = await role_in(client, await service(client, "solway-dat"))
    body = referral(patient_id, requester, await service(client, "solway-cmht"), "cmht")
    runtime.hooks = _hooks_meeting_at(asyncio.Barrier(2), before="ServiceRequest")

    results = await asyncio.gather(
        _create(runtime, dict(body)), _create(runtime, dict(body)), return_exceptions=True
    )
    won = [r for r in results if isinstance(r, str)]
    lost = [r for r in results if isinstance(r, BusinessRuleViolation)]
    assert (len(won), len(lost)) == (1, 1), results
    assert f"ServiceRequest/{won[0]}" in lost[0].diagnostics
    tasks = (await client.get("/Task", params={"patient": f"Patient/{patient_id}"})).json()
    assert tasks["total"] == 1


async def test_two_referrals_accepted_at_once_make_one_care_plan(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    patient_id = await new_patient(client)
    dat = await service(client, "solway-dat")
    gp_role = await role_in(client, await service(client, "solway-gp1"))
    dat_role = await role_in(client, dat)
    made = []
    for body in (
        referral(patient_id, gp_role, dat, "drug-alcohol"),
        referral(patient_id, dat_role, await service(client, "solway-cmht"), "cmht"),
    ):
        response = await client.post("/ServiceRequest", json=body)
        assert response.status_code == 201, response.text
        made.append(task_of(response.json()))
    runtime.hooks = _hooks_meeting_at(asyncio.Barrier(2), after="Task")

    async def accept(task_id: str) -> None:
        async with transaction(runtime.engine, write=True) as conn:
            store = runtime.store(conn)
            task = await store.current("Task", task_id)
            assert task is not None
            task["status"] = "accepted"
            await store.update("Task", task_id, task)

    await asyncio.gather(*(accept(task_id) for task_id in made))
    plans = (await client.get("/CarePlan", params={"subject": f"Patient/{patient_id}"})).json()
    assert plans["total"] == 1
