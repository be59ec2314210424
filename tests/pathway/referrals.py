"""Builders for referral tests: the demo services, requesters and referrals."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from tests.api.helpers import FHIR_JSON, patient

SERVICE_ID = "https://fhir.waymark.org.uk/Id/service"
SNOMED = "http://snomed.info/sct"
REFERRAL_STATE = "https://fhir.waymark.org.uk/CodeSystem/referral-state"
HOLD_REASON = "https://fhir.waymark.org.uk/CodeSystem/hold-reason"
LIBERATION_DATE = "https://fhir.waymark.org.uk/StructureDefinition/liberation-date"
REFERRAL_TASK = "https://fhir.waymark.org.uk/StructureDefinition/referral-task"
CODES = {
    "drug-alcohol": "417096006",
    "psychology": "309625004",
    "cmht": "390866009",
    "gp": "183561008",
    "pharmacy": "306179008",
    "prison": "417096006",
}


async def service(http: httpx.AsyncClient, key: str) -> str:
    """The id of a demo service, e.g. ``solway-dat``."""
    found = await http.get("/HealthcareService", params={"identifier": f"{SERVICE_ID}|{key}"})
    entries = found.json()["entry"]
    assert len(entries) == 1, key
    return str(entries[0]["resource"]["id"])


async def role_in(http: httpx.AsyncClient, service_id: str) -> str:
    """A PractitionerRole working in a service: how UK Core names a referral's sender."""
    role = {
        "resourceType": "PractitionerRole",
        "active": True,
        "healthcareService": [{"reference": f"HealthcareService/{service_id}"}],
    }
    response = await http.post("/PractitionerRole", json=role, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return f"PractitionerRole/{response.json()['id']}"


GATE_EVIDENCE = "https://fhir.waymark.org.uk/CodeSystem/gate-evidence"
ALCOHOL, ANY_DRUG = "53041004", "410942007"


async def new_patient(
    http: httpx.AsyncClient, nhs: str = "9434765919", *, meets_gates: bool = True
) -> str:
    """A Patient; unless ``meets_gates`` is False, with evidence that meets the demo gates
    (no use of alcohol or drugs for a year), so that tests of other rules are not held."""
    response = await http.post("/Patient", json=patient(nhs), headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    patient_id = str(response.json()["id"])
    if meets_gates:
        for substance in (ALCOHOL, ANY_DRUG):
            await record_last_use(http, patient_id, substance, "2025-01-01")
            await record_use_days(http, patient_id, substance, 0)
    return patient_id


def _evidence(
    patient_id: str, code: str, substance: str, recorded: str, **value: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": GATE_EVIDENCE, "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": recorded,
        "component": [
            {
                "code": {"coding": [{"system": GATE_EVIDENCE, "code": "substance"}]},
                "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": substance}]},
            }
        ],
        **value,
    }


async def record_last_use(
    http: httpx.AsyncClient,
    patient_id: str,
    substance: str,
    last_used: str,
    recorded: str = "2026-01-05T10:00:00Z",
) -> str:
    body = _evidence(patient_id, "last-use-date", substance, recorded, valueDateTime=last_used)
    response = await http.post("/Observation", json=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def record_use_days(
    http: httpx.AsyncClient,
    patient_id: str,
    substance: str,
    days: int,
    recorded: str = "2026-01-05T10:00:00Z",
) -> str:
    body = _evidence(patient_id, "use-days-past-28", substance, recorded, valueInteger=days)
    response = await http.post("/Observation", json=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def referral(
    patient_id: str, requester: str, to_service_id: str, to_kind: str, **changes: Any
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": SNOMED, "code": "3457005"}]}],
        "code": {"coding": [{"system": SNOMED, "code": CODES[to_kind]}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "requester": {"reference": requester},
        "performer": [{"reference": f"HealthcareService/{to_service_id}"}],
    }
    resource.update(changes)
    return resource


def task_of(service_request: dict[str, Any]) -> str:
    link = next(e for e in service_request["extension"] if e["url"] == REFERRAL_TASK)
    return str(link["valueReference"]["reference"].split("/")[1])


def reason(code: str | None = None, text: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {"text": text or code or "reason"}
    if code:
        found["coding"] = [{"system": HOLD_REASON, "code": code}]
    return found


def business(code: str) -> dict[str, Any]:
    return {"coding": [{"system": REFERRAL_STATE, "code": code}]}


class SettableClock:
    """The clinical clock of a test: it stands still until the test moves it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, days: float) -> None:
        self.now += timedelta(days=days)


async def hold_detail(http: httpx.AsyncClient, request: dict[str, Any]) -> str:
    """What a gate's hold of ``request`` rests on, from the gate's DetectedIssue: the Task
    names only the gate, as it is read by clients that may not read the evidence."""
    found = await http.get(
        "/DetectedIssue", params={"implicated": f"ServiceRequest/{request['id']}"}
    )
    [entry] = found.json()["entry"]
    return str(entry["resource"]["detail"])
