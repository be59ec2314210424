"""A referral's timeline and waiting clocks, and the projection rebuilt from history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from app.db import transaction
from app.pathway.projections import rebuild
from app.pathway.repository import ReferralRepository
from app.runtime import Runtime
from tests.api.helpers import FHIR_JSON
from tests.pathway.referrals import (
    ALCOHOL,
    ANY_DRUG,
    SettableClock,
    business,
    new_patient,
    reason,
    record_last_use,
    referral,
    role_in,
    service,
    task_of,
)


def _clock() -> SettableClock:
    """The timeline tests' clinical clock, stopped at 2 March 2026, 09:00."""
    return SettableClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


async def _move(http: httpx.AsyncClient, task_id: str, status: str, **changes: Any) -> None:
    task = (await http.get(f"/Task/{task_id}")).json()
    task.update(status=status, **changes)
    response = await http.put(f"/Task/{task_id}", json=task, headers=FHIR_JSON)
    assert response.status_code == 200, response.text


def _parts(parameter: dict[str, Any]) -> dict[str, Any]:
    return {
        p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in parameter["part"]
    }


async def test_timeline_and_clocks_with_pauses_owned_by_the_person_and_by_the_service(
    client: httpx.AsyncClient, runtime: Runtime, test_client_id: str
) -> None:
    clock = _clock()
    runtime.clock = clock
    patient_id = await new_patient(client)
    requester = await role_in(client, await service(client, "solway-dat"))
    body = referral(patient_id, requester, await service(client, "solway-psy"), "psychology")
    created = await client.post("/ServiceRequest", json=body, headers=FHIR_JSON)
    request_id, task_id = created.json()["id"], task_of(created.json())

    clock.advance(2)  # received two days after it was sent: the clock starts here
    await _move(client, task_id, "received", businessStatus=business("triaged"))
    clock.advance(5)
    await _move(client, task_id, "accepted", businessStatus=business("waiting-list"))
    clock.advance(10)  # the person asks for a pause: 14 days that do not count
    await _move(client, task_id, "on-hold", statusReason=reason("patient-unavailable"))
    clock.advance(14)
    await _move(client, task_id, "accepted", businessStatus=business("waiting-list"))
    clock.advance(3)  # the service pauses: 6 days that still count
    await _move(client, task_id, "on-hold", statusReason=reason("service-capacity"))
    clock.advance(6)
    await _move(client, task_id, "accepted")
    clock.advance(4)
    await _move(client, task_id, "in-progress", businessStatus=business("in-treatment"))
    clock.advance(30)

    response = await client.get(f"/ServiceRequest/{request_id}/$timeline")
    assert response.status_code == 200, response.text
    parameters = response.json()["parameter"]
    events = [_parts(p) for p in parameters if p["name"] == "event"]
    assert [(e.get("from"), e["to"]) for e in events] == [
        (None, "requested"),
        ("requested", "received"),
        ("received", "accepted"),
        ("accepted", "on-hold"),
        ("on-hold", "accepted"),
        ("accepted", "on-hold"),
        ("on-hold", "accepted"),
        ("accepted", "in-progress"),
    ]
    assert [e["pausesClock"] for e in events].count(True) == 1
    assert events[3]["reason"] == "patient-unavailable"
    assert {e["who"] for e in events} == {f"https://fhir.waymark.org.uk/Id/client/{test_client_id}"}
    waits = _parts(next(p for p in parameters if p["name"] == "clock"))
    assert waits["started"] == "2026-03-04T09:00:00.000Z"
    assert waits["stopped"] == "2026-04-15T09:00:00.000Z"
    assert waits["waitedDays"] == 42  # 5 + 10 + 14 + 3 + 6 + 4
    assert waits["pausedDays"] == 14
    assert waits["waitedWithoutPausesDays"] == 28
    assert waits["stillWaiting"] is False


async def test_a_waiting_referral_keeps_counting(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    clock = _clock()
    runtime.clock = clock
    patient_id = await new_patient(client)
    requester = await role_in(client, await service(client, "solway-gp1"))
    body = referral(patient_id, requester, await service(client, "solway-dat"), "drug-alcohol")
    created = (await client.post("/ServiceRequest", json=body, headers=FHIR_JSON)).json()
    await _move(client, task_of(created), "received")
    clock.advance(25)
    parameters = (await client.get(f"/ServiceRequest/{created['id']}/$timeline")).json()
    waits = _parts(next(p for p in parameters["parameter"] if p["name"] == "clock"))
    assert waits["waitedDays"] == 25
    assert waits["stillWaiting"] is True


async def test_timeline_needs_read_access_and_a_referral(
    client: httpx.AsyncClient, scoped_client: Any
) -> None:
    patient_id = await new_patient(client)
    requester = await role_in(client, await service(client, "solway-gp1"))
    body = referral(patient_id, requester, await service(client, "solway-dat"), "drug-alcohol")
    created = (await client.post("/ServiceRequest", json=body, headers=FHIR_JSON)).json()
    only_requests = await scoped_client("system/ServiceRequest.r")
    assert (
        await only_requests.get(f"/ServiceRequest/{created['id']}/$timeline")
    ).status_code == 403
    plain = {k: v for k, v in body.items() if k not in ("performer", "category")}
    other = (await client.post("/ServiceRequest", json=plain, headers=FHIR_JSON)).json()
    assert (await client.get(f"/ServiceRequest/{other['id']}/$timeline")).status_code == 404


async def test_rebuilt_projections_equal_the_live_ones(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    patient_id = await new_patient(client)
    for source, target, kind in [
        ("solway-dat", "solway-psy", "psychology"),
        ("solway-gp1", "solway-dat", "drug-alcohol"),
        ("solway-dat", "solway-cmht", "cmht"),
    ]:
        requester = await role_in(client, await service(client, source))
        body = referral(patient_id, requester, await service(client, target), kind)
        created = (await client.post("/ServiceRequest", json=body, headers=FHIR_JSON)).json()
        task_id = task_of(created)
        await _move(client, task_id, "received", businessStatus=business("triaged"))
        if kind == "psychology":
            await _move(client, task_id, "on-hold", statusReason=reason("patient-unavailable"))
        if kind == "cmht":
            await _move(client, task_id, "rejected", statusReason=reason(text="Not suitable"))

    async def snapshot() -> tuple[list[Any], list[Any]]:
        async with transaction(runtime.engine, write=False) as conn:
            repository = ReferralRepository(conn)
            return list(await repository.all_referrals()), list(await repository.all_events())

    live = await snapshot()
    assert len(live[0]) == 3
    assert len(live[1]) == 3 + 3 + 1 + 1
    async with transaction(runtime.engine, write=True) as conn:
        assert await rebuild(runtime.store(conn)) == 3
    assert await snapshot() == live


def _clock_of(parameters: dict[str, Any]) -> dict[str, Any]:
    return _parts(next(p for p in parameters["parameter"] if p["name"] == "clock"))


async def test_closing_a_referral_untreated_stops_its_clock(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    clock = _clock()
    runtime.clock = clock
    patient_id = await new_patient(client)
    requester = await role_in(client, await service(client, "solway-gp1"))
    body = referral(patient_id, requester, await service(client, "solway-dat"), "drug-alcohol")
    created = (await client.post("/ServiceRequest", json=body, headers=FHIR_JSON)).json()
    clock.advance(1)
    await _move(client, task_of(created), "received")
    clock.advance(9)
    await _move(client, task_of(created), "rejected", statusReason=reason(text="Not suitable"))
    clock.advance(30)  # time after closure counts for nothing
    waits = _clock_of((await client.get(f"/ServiceRequest/{created['id']}/$timeline")).json())
    assert waits["stopped"] == "2026-03-12T09:00:00.000Z"
    assert waits["endedBy"] == "closure"
    assert waits["waitedDays"] == 9
    assert waits["daysSinceReferral"] == 10
    assert waits["stillWaiting"] is False


async def test_time_held_by_a_gate_before_the_service_has_it_is_counted(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    clock = _clock()
    runtime.clock = clock
    patient_id = await new_patient(client, meets_gates=False)
    requester = await role_in(client, await service(client, "solway-dat"))
    body = referral(patient_id, requester, await service(client, "solway-psy"), "psychology")
    created = (await client.post("/ServiceRequest", json=body, headers=FHIR_JSON)).json()
    clock.advance(100)
    summary = (await client.get(f"/Patient/{patient_id}/$pathway")).json()
    held = _parts(next(p for p in summary["parameter"] if p["name"] == "referral"))
    assert (held["waitedDays"], held["daysSinceReferral"], held["daysHeldByGates"]) == (0, 100, 100)
    # Evidence arrives: released, then received 5 days later and treated 10 days after that.
    for substance in (ALCOHOL, ANY_DRUG):
        await record_last_use(client, patient_id, substance, "2025-01-01")
    clock.advance(5)
    await _move(client, task_of(created), "received")
    await _move(client, task_of(created), "accepted")
    clock.advance(10)
    await _move(client, task_of(created), "in-progress")
    waits = _clock_of((await client.get(f"/ServiceRequest/{created['id']}/$timeline")).json())
    assert waits["referred"] == "2026-03-02T09:00:00.000Z"
    assert (waits["waitedDays"], waits["daysSinceReferral"], waits["daysHeldByGates"]) == (
        10,
        115,
        100,
    )
    assert waits["endedBy"] == "treatment"
