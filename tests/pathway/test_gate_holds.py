"""A gate's hold ends only through the gate: evidence, a change of its mode, a recorded override
or the referral's closure. Every decision is a row of the gate projection, and the record the
rows are rebuilt from (the server's DetectedIssues) cannot be forged by a client."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.db import transaction
from app.fhir.repository import as_utc
from app.pathway.gate_records import log_of
from app.pathway.gate_release import reevaluate_held
from app.pathway.projections import rebuild
from app.pathway.repository import GateRepository
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

SOLWAY_GATE = "gate-abstinence-psychology-solway"
GATE_ID = "https://fhir.waymark.org.uk/Id/gate"


async def _held_referral(http: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    patient_id = await new_patient(http, meets_gates=False)
    requester = await role_in(http, await service(http, "solway-dat"))
    body = referral(patient_id, requester, await service(http, "solway-psy"), "psychology")
    created = await http.post("/ServiceRequest", json=body, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    request: dict[str, Any] = created.json()
    task = (await http.get(f"/Task/{task_of(request)}")).json()
    assert (task["status"], task["businessStatus"]["coding"][0]["code"]) == (
        "on-hold",
        "held-by-gate",
    )
    return patient_id, request


async def _put_task(http: httpx.AsyncClient, task_id: str, **changes: Any) -> httpx.Response:
    task = (await http.get(f"/Task/{task_id}")).json()
    task.update(changes)
    return await http.put(f"/Task/{task_id}", json=task, headers=FHIR_JSON)


async def _rows(runtime: Runtime, request_id: str) -> list[Any]:
    async with transaction(runtime.engine, write=False) as conn:
        return list(await GateRepository(conn).of_referral(request_id))


async def _issue(http: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    found = await http.get("/DetectedIssue", params={"implicated": f"ServiceRequest/{request_id}"})
    [entry] = found.json()["entry"]
    issue: dict[str, Any] = entry["resource"]
    return issue


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "in-progress", "businessStatus": business("in-treatment")},
        {"status": "requested", "businessStatus": business("awaiting-triage")},
        {"status": "accepted", "businessStatus": business("waiting-list")},
        {"businessStatus": business("waiting-list")},  # still on hold, but not by the gate
    ],
)
async def test_a_plain_update_cannot_leave_a_gate_hold(
    client: httpx.AsyncClient, runtime: Runtime, clock: SettableClock, changes: dict[str, Any]
) -> None:
    _, request = await _held_referral(client)
    task_id = task_of(request)
    refused = await _put_task(client, task_id, **changes)
    assert refused.status_code == 422, refused.text
    diagnostics = refused.json()["issue"][0]["diagnostics"]
    assert SOLWAY_GATE in diagnostics
    assert "$override-gate" in diagnostics
    assert "evidence" in diagnostics
    task = (await client.get(f"/Task/{task_id}")).json()
    assert (task["status"], task["meta"]["versionId"]) == ("on-hold", "1")
    assert [(r.action, r.held, r.current) for r in await _rows(runtime, request["id"])] == [
        ("held", True, True)
    ]
    assert "mitigation" not in await _issue(client, request["id"])


async def test_cancelling_a_held_referral_closes_its_hold_for_good(
    client: httpx.AsyncClient, runtime: Runtime, clock: SettableClock
) -> None:
    patient_id, request = await _held_referral(client)
    cancelled = await _put_task(
        client,
        task_of(request),
        status="cancelled",
        statusReason=reason(text="Moved out of the area"),
        businessStatus=business("withdrawn"),
    )
    assert cancelled.status_code == 200, cancelled.text
    rows = await _rows(runtime, request["id"])
    assert [(r.seq, r.action, r.held, r.current) for r in rows] == [
        (0, "held", True, False),
        (1, "closed", False, True),
    ]
    # Evidence that would have met the gate arrives: nothing reopens or "releases" it.
    for substance in (ALCOHOL, ANY_DRUG):
        await record_last_use(client, patient_id, substance, "2025-01-01")
    async with transaction(runtime.engine, write=True) as conn:
        assert await reevaluate_held(runtime.store(conn), after="", limit=100) == (0, 0, None)
    task = (await client.get(f"/Task/{task_of(request)}")).json()
    assert task["status"] == "cancelled"
    issue = await _issue(client, request["id"])
    assert "mitigation" not in issue
    live = await _rows(runtime, request["id"])
    assert len(live) == 2
    async with transaction(runtime.engine, write=True) as conn:
        await rebuild(runtime.store(conn))
    assert await _rows(runtime, request["id"]) == live


async def test_a_changed_outcome_of_a_hold_is_a_row_and_rebuilt_equal(
    client: httpx.AsyncClient, runtime: Runtime, clock: SettableClock
) -> None:
    patient_id, request = await _held_referral(client)  # unknown: no evidence yet
    await record_last_use(client, patient_id, ALCOHOL, "2026-05-01")  # still unknown: drugs
    await record_last_use(client, patient_id, ANY_DRUG, "2026-05-20")  # now not met
    clock.now += timedelta(days=30)
    async with transaction(runtime.engine, write=True) as conn:
        assert await reevaluate_held(runtime.store(conn), after="", limit=100) == (1, 0, None)
    clock.now += timedelta(days=90)
    async with transaction(runtime.engine, write=True) as conn:
        assert await reevaluate_held(runtime.store(conn), after="", limit=100) == (1, 1, None)
    live = await _rows(runtime, request["id"])
    assert [(r.seq, r.action, r.outcome, r.held, r.released_by) for r in live] == [
        (0, "held", "unknown", True, None),
        (1, "reevaluated", "not-met", True, None),
        (2, "released", "met", False, "evidence"),
    ]
    assert as_utc(live[2].released_at) == clock.now
    async with transaction(runtime.engine, write=True) as conn:
        await rebuild(runtime.store(conn))
    assert await _rows(runtime, request["id"]) == live


async def test_a_client_cannot_forge_or_edit_the_record_of_a_gate(
    client: httpx.AsyncClient, runtime: Runtime, clock: SettableClock
) -> None:
    patient_id, request = await _held_referral(client)
    issue = await _issue(client, request["id"])
    forged = {
        **issue,
        "mitigation": [
            {
                "extension": [
                    {
                        "url": "https://fhir.waymark.org.uk/StructureDefinition/gate-released-by",
                        "valueCode": "override",
                    }
                ],
                "action": {"text": "Released"},
                "date": "2026-06-01T09:00:00.000Z",
            }
        ],
    }
    edited = await client.put(f"/DetectedIssue/{issue['id']}", json=forged, headers=FHIR_JSON)
    assert edited.status_code == 422
    assert edited.json()["issue"][0]["expression"] == ["DetectedIssue.code"]
    new = {k: v for k, v in forged.items() if k not in ("id", "meta")}
    assert (await client.post("/DetectedIssue", json=new, headers=FHIR_JSON)).status_code == 422
    assert (await client.delete(f"/DetectedIssue/{issue['id']}")).status_code == 422
    # A DetectedIssue of the client's own, not about a gate, is an ordinary resource.
    own = {
        "resourceType": "DetectedIssue",
        "status": "final",
        "patient": {"reference": f"Patient/{patient_id}"},
        "detail": "Drug interaction flagged by the pharmacy",
    }
    assert (await client.post("/DetectedIssue", json=own, headers=FHIR_JSON)).status_code == 201
    live = await _rows(runtime, request["id"])
    async with transaction(runtime.engine, write=True) as conn:
        await rebuild(runtime.store(conn))
    assert await _rows(runtime, request["id"]) == live
    assert [r.held for r in live] == [True]


async def test_only_a_gate_puts_a_referral_in_held_by_gate(client: httpx.AsyncClient) -> None:
    patient_id = await new_patient(client)  # meets the gates: nothing holds it
    requester = await role_in(client, await service(client, "solway-dat"))
    body = referral(patient_id, requester, await service(client, "solway-psy"), "psychology")
    request = (await client.post("/ServiceRequest", json=body, headers=FHIR_JSON)).json()
    task_id = task_of(request)
    claimed = await _put_task(
        client,
        task_id,
        status="on-hold",
        businessStatus=business("held-by-gate"),
        statusReason=reason(text="waiting for abstinence"),
    )
    assert claimed.status_code == 422, claimed.text
    assert claimed.json()["issue"][0]["expression"] == ["Task.businessStatus"]
    paused = await _put_task(
        client,
        task_id,
        status="on-hold",
        businessStatus=business("on-hold"),
        statusReason=reason(text="the person asked to wait"),
    )
    assert paused.status_code == 200, paused.text


JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.mark.parametrize(
    ("status", "state"),
    [("failed", "discharged"), ("rejected", "declined"), ("cancelled", "withdrawn")],
)
async def test_a_held_referral_may_be_closed_each_way_with_a_reason_of_its_own(
    client: httpx.AsyncClient, runtime: Runtime, clock: SettableClock, status: str, state: str
) -> None:
    _, request = await _held_referral(client)
    task_id = task_of(request)
    # The gate's reason for the hold is not a reason for closing.
    left_over = await _put_task(client, task_id, status=status, businessStatus=business(state))
    assert left_over.status_code == 422, left_over.text
    assert left_over.json()["issue"][0]["expression"] == ["Task.statusReason"]
    assert "left from an earlier move" in left_over.json()["issue"][0]["diagnostics"]
    clock.advance(3)
    closed = await _put_task(
        client,
        task_id,
        status=status,
        businessStatus=business(state),
        statusReason=reason(text="No contact after three attempts"),
    )
    assert closed.status_code == 200, closed.text
    rows = await _rows(runtime, request["id"])
    assert [(r.seq, r.action, r.held, r.current) for r in rows] == [
        (0, "held", True, False),
        (1, "closed", False, True),
    ]
    assert rows[1].reason == f"The referral's Task was {status}: No contact after three attempts"
    assert rows[1].who is not None
    assert as_utc(rows[1].at) == clock.now
    assert (await client.get(f"/ServiceRequest/{request['id']}")).json()["status"] == "revoked"
    async with transaction(runtime.engine, write=True) as conn:
        await rebuild(runtime.store(conn))
    assert await _rows(runtime, request["id"]) == rows


async def _patch_task(
    http: httpx.AsyncClient, task_id: str, operations: list[dict[str, Any]]
) -> httpx.Response:
    return await http.patch(f"/Task/{task_id}", json=operations, headers=JSON_PATCH)


async def test_entered_in_error_needs_a_reason_and_keeps_the_held_period(
    client: httpx.AsyncClient, runtime: Runtime, clock: SettableClock
) -> None:
    patient_id, request = await _held_referral(client)
    task_id = task_of(request)
    clock.advance(10)
    erred = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]
    bare = await _patch_task(client, task_id, [*erred, {"op": "remove", "path": "/statusReason"}])
    assert bare.status_code == 422, bare.text
    assert bare.json()["issue"][0]["expression"] == ["Task.statusReason"]
    assert "'entered-in-error' needs a Task.statusReason" in bare.json()["issue"][0]["diagnostics"]
    left_over = await _patch_task(client, task_id, erred)  # still the gate's reason for the hold
    assert left_over.status_code == 422, left_over.text
    assert left_over.json()["issue"][0]["expression"] == ["Task.statusReason"]
    assert (await client.get(f"/Task/{task_id}")).json()["meta"]["versionId"] == "1"

    why = {"op": "replace", "path": "/statusReason", "value": {"text": "Made for the wrong person"}}
    assert (await _patch_task(client, task_id, [*erred, why])).status_code == 200
    # The gate's record keeps the hold and says how and why it ended; nothing is erased.
    rows = await _rows(runtime, request["id"])
    assert [(r.action, r.held, r.current) for r in rows] == [
        ("held", True, False),
        ("closed", False, True),
    ]
    assert as_utc(rows[1].at) - as_utc(rows[0].at) == timedelta(days=10)
    assert rows[1].reason == "The referral's Task was entered-in-error: Made for the wrong person"
    issue = await _issue(client, request["id"])
    assert [entry["action"] for entry in log_of(issue)] == ["closed"]
    assert (await client.get(f"/ServiceRequest/{request['id']}")).json()["status"] == (
        "entered-in-error"
    )
    # The timeline keeps the held period and the reason.
    timeline = (await client.get(f"/ServiceRequest/{request['id']}/$timeline")).json()
    events = [_parts(p) for p in timeline["parameter"] if p["name"] == "event"]
    assert [(e["to"], e.get("reason")) for e in events] == [
        ("on-hold", events[0].get("reason")),
        ("entered-in-error", "Made for the wrong person"),
    ]
    [clock_part] = [_parts(p) for p in timeline["parameter"] if p["name"] == "clock"]
    assert (clock_part["daysHeldByGates"], clock_part["endedBy"]) == (10, "closure")
    # $pathway still lists the referral, closed, with how, why and how long a gate held it.
    summary = (await client.get(f"/Patient/{patient_id}/$pathway")).json()["parameter"]
    assert [p for p in summary if p["name"] == "referral"] == []
    [closed] = [_parts(p) for p in summary if p["name"] == "closedReferral"]
    assert closed["referral"] == {"reference": f"ServiceRequest/{request['id']}"}
    assert closed["status"] == "entered-in-error"
    assert closed["reason"] == "Made for the wrong person"
    assert closed["heldByGateWhenClosed"] is True
    assert closed["daysHeldByGates"] == 10
    [gate] = [_parts(p) for p in summary if p["name"] == "gate"]
    assert (gate["decision"], gate["holding"]) == ("closed", False)
    # And a closed referral stays closed: nothing releases it when evidence arrives.
    for substance in (ALCOHOL, ANY_DRUG):
        await record_last_use(client, patient_id, substance, "2025-01-01")
    assert await _rows(runtime, request["id"]) == rows
    async with transaction(runtime.engine, write=True) as conn:
        await rebuild(runtime.store(conn))
    assert await _rows(runtime, request["id"]) == rows


def _parts(parameter: dict[str, Any]) -> dict[str, Any]:
    return {
        part["name"]: next(v for k, v in part.items() if k.startswith("value"))
        for part in parameter["part"]
    }
