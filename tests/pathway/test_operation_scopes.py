"""An operation's answer leaves out what the token may not read, and says so; what it may
read is decided from the scopes before anything is read (issue 18, item 2)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.helpers import FHIR_JSON
from tests.pathway.referrals import (
    ALCOHOL,
    ANY_DRUG,
    SettableClock,
    new_patient,
    record_last_use,
    referral,
    role_in,
    service,
)

SOLWAY_GATE = "gate-abstinence-psychology-solway"


async def _held_on_evidence(http: httpx.AsyncClient) -> tuple[str, str, str]:
    """A psychology referral held because alcohol was used on 2026-05-01: (patient,
    ServiceRequest, the Observation of that last use)."""
    patient_id = await new_patient(http, meets_gates=False)
    observation = await record_last_use(http, patient_id, ALCOHOL, "2026-05-01")
    await record_last_use(http, patient_id, ANY_DRUG, "2025-01-01")
    requester = await role_in(http, await service(http, "solway-dat"))
    body = referral(patient_id, requester, await service(http, "solway-psy"), "psychology")
    created = await http.post("/ServiceRequest", json=body, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    return patient_id, str(created.json()["id"]), observation


def _named(parameters: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [p for p in parameters.get("parameter", []) if p["name"] == name]


def _parts(parameter: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: p for p in parameter["part"]}


async def _operation_event(client: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    events = (await client.get("/AuditEvent", params={"subtype": "operation"})).json()
    found: list[dict[str, Any]] = [
        e["resource"]
        for e in events["entry"]
        if any(
            x.get("what", {}).get("identifier", {}).get("value") == request_id
            for x in e["resource"]["entity"]
        )
    ]
    [event] = found
    return event


async def test_evaluate_gates_leaves_out_evidence_the_token_may_not_read(
    client: httpx.AsyncClient, scoped_client: Any, clock: SettableClock
) -> None:
    _, request_id, observation = await _held_on_evidence(client)
    path = f"/ServiceRequest/{request_id}/$evaluate-gates"

    # ServiceRequest.rs only (the issue's case): no gate, no evidence, no date of use.
    requests_only = await scoped_client("system/ServiceRequest.rs")
    answer = await requests_only.post(path, headers={"X-Request-ID": "gates-narrow"})
    assert answer.status_code == 200, answer.text
    assert "Observation" not in answer.text
    assert "2026-05-01" not in answer.text
    assert "2026-08-01" not in answer.text
    assert _named(answer.json(), "gate") == []
    assert [p["valueString"] for p in _named(answer.json(), "omitted")] == [
        "PlanDefinition: the token has no read scope"
    ]
    # Decided before reading: the operation's AuditEvent names no Observation.
    event = await _operation_event(client, "gates-narrow")
    assert not [x for x in event["entity"] if "Observation/" in x["what"].get("reference", "")]

    # With the gates readable: each gate is named, its outcome and evidence are not.
    with_gates = await scoped_client("system/ServiceRequest.rs system/PlanDefinition.r")
    named = (await with_gates.post(path)).json()
    assert "Observation/" not in str(named)
    assert "2026-05-01" not in str(named)
    [gate] = _named(named, "gate")
    parts = _parts(gate)
    assert parts["code"]["valueCode"] == SOLWAY_GATE
    assert {"outcome", "evidence", "detail", "metOn", "needed"}.isdisjoint(parts)
    assert "Observation" in parts["omitted"]["valueString"]
    assert [p["valueString"] for p in _named(named, "omitted")] == [
        "Observation: the token has no read scope"
    ]

    # With the evidence readable too: the whole evaluation, as before.
    readers = await scoped_client(
        "system/ServiceRequest.rs system/PlanDefinition.r system/Observation.r"
    )
    full = (await readers.post(path)).json()
    [gate] = _named(full, "gate")
    parts = _parts(gate)
    assert parts["outcome"]["valueCode"] == "not-met"
    assert parts["metOn"]["valueDate"] == "2026-08-01"
    evidence = [p["valueReference"]["reference"] for p in gate["part"] if p["name"] == "evidence"]
    assert f"Observation/{observation}" in evidence
    assert "omitted" not in parts
    assert _named(full, "omitted") == []


async def test_pathway_shows_a_gate_outcome_only_to_readers_of_its_evidence(
    client: httpx.AsyncClient, scoped_client: Any, clock: SettableClock
) -> None:
    patient_id, request_id, _ = await _held_on_evidence(client)
    path = f"/Patient/{patient_id}/$pathway"
    referrals = await scoped_client("system/Patient.r system/ServiceRequest.r system/Task.r")
    answer = (await referrals.get(path)).json()
    [gate] = _named(answer, "gate")
    parts = _parts(gate)
    assert parts["referral"]["valueReference"]["reference"] == f"ServiceRequest/{request_id}"
    assert "outcome" not in parts
    assert "Observation" in parts["omitted"]["valueString"]
    assert "Observation: the token has no read scope" in [
        p["valueString"] for p in _named(answer, "omitted")
    ]
    readers = await scoped_client(
        "system/Patient.r system/ServiceRequest.r system/Task.r system/Observation.r"
    )
    [gate] = _named((await readers.get(path)).json(), "gate")
    assert _parts(gate)["outcome"]["valueCode"] == "not-met"
    assert "omitted" not in _parts(gate)


async def test_service_gates_returns_plan_definitions_only_to_their_readers(
    client: httpx.AsyncClient, scoped_client: Any
) -> None:
    path = f"/HealthcareService/{await service(client, 'solway-psy')}/$gates"
    search_only = await scoped_client("system/HealthcareService.r system/PlanDefinition.s")
    assert (await search_only.get(path)).status_code == 403
    readers = await scoped_client("system/HealthcareService.r system/PlanDefinition.rs")
    answer = await readers.get(path)
    assert answer.status_code == 200
    assert answer.json()["total"] >= 1


async def test_a_held_task_names_its_gate_but_not_the_evidence(
    client: httpx.AsyncClient, scoped_client: Any, clock: SettableClock
) -> None:
    """A Task is read by clients that may not read the person's Observations: its hold reason
    names the gate, and the date of last use stays in the gate's DetectedIssue."""
    _, request_id, _ = await _held_on_evidence(client)
    tasks_only = await scoped_client("system/Task.rs")
    found = await tasks_only.get("/Task", params={"focus": f"ServiceRequest/{request_id}"})
    assert found.status_code == 200, found.text
    [entry] = found.json()["entry"]
    task = entry["resource"]
    assert task["status"] == "on-hold"
    assert "Three months abstinent" in task["statusReason"]["text"]
    assert "2026-05-01" not in found.text
    assert "53041004" not in found.text
    assert "Observation/" not in found.text
    issues = await client.get(
        "/DetectedIssue", params={"implicated": f"ServiceRequest/{request_id}"}
    )
    assert "2026-05-01" in issues.text
