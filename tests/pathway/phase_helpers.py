"""Builders for phase tests: the pathway CarePlan, its phases, readiness reviews, and the
trauma-focussed referrals the phase gate acts on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from app.runtime import Runtime
from tests.api.helpers import FHIR_JSON
from tests.pathway.referrals import SettableClock, referral, role_in, service, task_of

CODES = "https://fhir.waymark.org.uk/CodeSystem/pathway-codes"
PHASE = "https://fhir.waymark.org.uk/CodeSystem/pathway-phase"
PHASE_GATE = "gate-phase-1-before-trauma-focussed-work"
EMDR = {"coding": [{"system": CODES, "code": "emdr"}]}


def stepped_clock(runtime: Runtime) -> SettableClock:
    """The clinical clock of the phase tests, stopped at 2 February 2026, 09:00."""
    stepped = SettableClock(datetime(2026, 2, 2, 9, 0, tzinfo=UTC))
    runtime.clock = stepped
    return stepped


async def refer(
    http: httpx.AsyncClient, patient_id: str, source: str, target: str, kind: str, **changes: Any
) -> dict[str, Any]:
    requester = await role_in(http, await service(http, source))
    body = referral(patient_id, requester, await service(http, target), kind, **changes)
    response = await http.post("/ServiceRequest", json=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def current_task(http: httpx.AsyncClient, request: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = (await http.get(f"/Task/{task_of(request)}")).json()
    return found


async def move_task(http: httpx.AsyncClient, task_id: str, status: str) -> httpx.Response:
    task = (await http.get(f"/Task/{task_id}")).json()
    task["status"] = status
    return await http.put(f"/Task/{task_id}", json=task, headers=FHIR_JSON)


async def plan_of(http: httpx.AsyncClient, patient_id: str) -> dict[str, Any]:
    found = (await http.get("/CarePlan", params={"subject": f"Patient/{patient_id}"})).json()
    assert found["total"] == 1
    plan: dict[str, Any] = found["entry"][0]["resource"]
    return plan


async def set_phase(
    http: httpx.AsyncClient, patient_id: str, phase: str, status: str, **detail: Any
) -> httpx.Response:
    plan = await plan_of(http, patient_id)
    for activity in plan["activity"]:
        if activity["detail"]["code"]["coding"][0]["code"] == phase:
            activity["detail"]["status"] = status
            activity["detail"].update(detail)
            if "outcomeReference" in detail:
                activity["outcomeReference"] = activity["detail"].pop("outcomeReference")
    return await http.put(f"/CarePlan/{plan['id']}", json=plan, headers=FHIR_JSON)


async def record_review(http: httpx.AsyncClient, patient_id: str, value: str, when: str) -> str:
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": CODES, "code": "readiness-review"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when,
        "performer": [{"display": "Community psychiatric nurse"}],
        "valueCodeableConcept": {"coding": [{"system": CODES, "code": value}]},
        "note": [{"text": "Grounding skills in use; safety plan reviewed"}],
    }
    response = await http.post("/Observation", json=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def parts_of(parameter: dict[str, Any]) -> dict[str, Any]:
    return {
        p["name"]: next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
        for p in parameter["part"]
    }


async def set_phases(
    http: httpx.AsyncClient, patient_id: str, changes: dict[str, dict[str, Any]]
) -> httpx.Response:
    """One update of the pathway CarePlan changing several phases' details at once."""
    plan = await plan_of(http, patient_id)
    for activity in plan["activity"]:
        phase = activity["detail"]["code"]["coding"][0]["code"]
        activity["detail"].update(changes.get(phase, {}))
    return await http.put(f"/CarePlan/{plan['id']}", json=plan, headers=FHIR_JSON)


async def start_pathway(http: httpx.AsyncClient, patient_id: str) -> dict[str, Any]:
    """A referral to the drug and alcohol team, accepted: the person's pathway CarePlan."""
    to_dat = await refer(http, patient_id, "solway-gp1", "solway-dat", "drug-alcohol")
    accepted = await move_task(http, task_of(to_dat), "accepted")
    assert accepted.status_code == 200, accepted.text
    return await plan_of(http, patient_id)


async def complete_phase_one(http: httpx.AsyncClient, patient_id: str, when: str) -> None:
    for status in ("in-progress", "completed"):
        moved = await set_phase(http, patient_id, "phase-1", status)
        assert moved.status_code == 200, moved.text
    await record_review(http, patient_id, "ready", when)


def override_body(reason: str) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "gate", "valueCode": PHASE_GATE},
            {"name": "reason", "valueString": reason},
        ],
    }
