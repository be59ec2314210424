"""Referrals between services: created with their Task, refused when the pathway does not
allow them, moved through FHIR's Task workflow, and never dropped."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.api.helpers import FHIR_JSON
from tests.pathway.referrals import (
    LIBERATION_DATE,
    business,
    new_patient,
    reason,
    referral,
    role_in,
    service,
    task_of,
)

# Every route the seed documents describe, as (sending service, receiving service, kind).
ROUTES = [
    ("solway-dat", "solway-psy", "psychology"),
    ("solway-dat", "solway-cmht", "cmht"),
    ("solway-dat", "solway-gp1", "gp"),
    ("solway-dat", "solway-pharm", "pharmacy"),
    ("solway-dat", "solway-prison", "prison"),
    ("solway-psy", "solway-dat", "drug-alcohol"),
    ("solway-cmht", "solway-dat", "drug-alcohol"),
    ("solway-gp1", "solway-dat", "drug-alcohol"),
    ("solway-pharm", "solway-dat", "drug-alcohol"),
    ("solway-cmht", "solway-psy", "psychology"),
    ("solway-psy", "solway-cmht", "cmht"),
    ("northisles-dat", "northisles-psy", "psychology"),
    ("northisles-gp2", "northisles-dat", "drug-alcohol"),
    ("solway-prison", "solway-dat", "drug-alcohol"),  # throughcare, with a liberation date
]


async def _refer(
    http: httpx.AsyncClient, source: str, target: str, kind: str, patient_id: str, **changes: Any
) -> httpx.Response:
    requester = await role_in(http, await service(http, source))
    body = referral(patient_id, requester, await service(http, target), kind, **changes)
    return await http.post("/ServiceRequest", json=body, headers=FHIR_JSON)


async def _move(
    http: httpx.AsyncClient, task_id: str, status: str, **changes: Any
) -> httpx.Response:
    task = (await http.get(f"/Task/{task_id}")).json()
    task.update(status=status, **changes)
    version = task["meta"]["versionId"]
    return await http.put(
        f"/Task/{task_id}", json=task, headers={**FHIR_JSON, "If-Match": f'W/"{version}"'}
    )


@pytest.mark.parametrize(("source", "target", "kind"), ROUTES)
async def test_a_referral_on_every_seeded_route_lives_its_whole_life(
    client: httpx.AsyncClient, source: str, target: str, kind: str
) -> None:
    patient_id = await new_patient(client)
    extra = (
        {"extension": [{"url": LIBERATION_DATE, "valueDate": "2026-12-01"}]}
        if source.endswith("prison")
        else {}
    )
    created = await _refer(client, source, target, kind, patient_id, **extra)
    assert created.status_code == 201, created.text
    request = created.json()
    task_id = task_of(request)
    task = (await client.get(f"/Task/{task_id}")).json()
    assert task["status"] == "requested"
    assert task["businessStatus"]["coding"][0]["code"] == "awaiting-triage"
    assert task["focus"]["reference"] == f"ServiceRequest/{request['id']}"
    assert task["for"]["reference"] == f"Patient/{patient_id}"
    assert task["owner"]["reference"] == f"HealthcareService/{await service(client, target)}"
    found = await client.get("/Task", params={"focus": f"ServiceRequest/{request['id']}"})
    assert found.json()["total"] == 1
    for status, state in [
        ("received", "triaged"),
        ("accepted", "waiting-list"),
        ("in-progress", "in-treatment"),
        ("completed", "discharged"),
    ]:
        moved = await _move(client, task_id, status, businessStatus=business(state))
        assert moved.status_code == 200, moved.text
    final = (await client.get(f"/ServiceRequest/{request['id']}")).json()
    assert final["status"] == "completed"


async def test_throughcare_from_prison_needs_the_liberation_date(
    client: httpx.AsyncClient,
) -> None:
    patient_id = await new_patient(client)
    refused = await _refer(client, "solway-prison", "solway-dat", "drug-alcohol", patient_id)
    assert refused.status_code == 422
    assert "liberation date" in refused.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("source", "target", "kind"),
    [
        ("solway-gp1", "solway-psy", "psychology"),  # GP -> psychology: not a seeded route
        ("solway-pharm", "solway-gp1", "gp"),
        ("solway-prison", "solway-psy", "psychology"),
    ],
)
async def test_a_route_the_pathway_does_not_allow_is_refused(
    client: httpx.AsyncClient, source: str, target: str, kind: str
) -> None:
    patient_id = await new_patient(client)
    refused = await _refer(client, source, target, kind, patient_id)
    assert refused.status_code == 422
    assert "no route" in refused.json()["issue"][0]["diagnostics"]
    assert (await client.get("/Task")).json()["total"] == 0  # nothing half-made


async def test_refusals_name_what_is_wrong(client: httpx.AsyncClient) -> None:
    patient_id = await new_patient(client)
    dat = await service(client, "solway-dat")
    requester = await role_in(client, dat)
    psy = await service(client, "solway-psy")

    inactive = (await client.get(f"/HealthcareService/{psy}")).json()
    inactive["active"] = False
    await client.put(f"/HealthcareService/{psy}", json=inactive, headers=FHIR_JSON)
    response = await client.post(
        "/ServiceRequest",
        json=referral(patient_id, requester, psy, "psychology"),
        headers=FHIR_JSON,
    )
    assert response.status_code == 422
    assert "not an active service" in response.json()["issue"][0]["diagnostics"]

    cmht = await service(client, "solway-cmht")
    ghost = referral("no-such-patient", requester, cmht, "cmht")
    response = await client.post("/ServiceRequest", json=ghost, headers=FHIR_JSON)
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["ServiceRequest.subject"]

    first = await client.post(
        "/ServiceRequest", json=referral(patient_id, requester, cmht, "cmht"), headers=FHIR_JSON
    )
    assert first.status_code == 201
    second = await client.post(
        "/ServiceRequest", json=referral(patient_id, requester, cmht, "cmht"), headers=FHIR_JSON
    )
    assert second.status_code == 422
    assert f"ServiceRequest/{first.json()['id']}" in second.json()["issue"][0]["diagnostics"]

    org_with_many = referral(patient_id, "Organization/nowhere", cmht, "cmht")
    response = await client.post("/ServiceRequest", json=org_with_many, headers=FHIR_JSON)
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["ServiceRequest.requester"]


async def test_an_organization_with_one_service_can_refer(client: httpx.AsyncClient) -> None:
    patient_id = await new_patient(client)
    gp = (await client.get(f"/HealthcareService/{await service(client, 'solway-gp1')}")).json()
    body = referral(
        patient_id,
        gp["providedBy"]["reference"],
        await service(client, "solway-dat"),
        "drug-alcohol",
    )
    response = await client.post("/ServiceRequest", json=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text


async def test_forbidden_transitions_and_missing_reasons_are_refused(
    client: httpx.AsyncClient,
) -> None:
    patient_id = await new_patient(client)
    created = await _refer(client, "solway-dat", "solway-psy", "psychology", patient_id)
    task_id = task_of(created.json())
    jumped = await _move(client, task_id, "completed")
    assert jumped.status_code == 422
    assert "cannot go from 'requested' to 'completed'" in jumped.json()["issue"][0]["diagnostics"]
    no_reason = await _move(client, task_id, "rejected")
    assert no_reason.status_code == 422
    assert no_reason.json()["issue"][0]["expression"] == ["Task.statusReason"]
    rejected = await _move(client, task_id, "rejected", statusReason=reason(text="Not suitable"))
    assert rejected.status_code == 200
    reopened = await _move(client, task_id, "accepted")
    assert reopened.status_code == 422
    assert "closed" in reopened.json()["issue"][0]["diagnostics"]
    owner = (await client.get(f"/Task/{task_id}")).json()
    owner["owner"] = {"reference": "HealthcareService/elsewhere"}
    assert (await client.put(f"/Task/{task_id}", json=owner, headers=FHIR_JSON)).status_code == 422


async def test_cancelling_either_side_cancels_the_other(client: httpx.AsyncClient) -> None:
    patient_id = await new_patient(client)
    first = (await _refer(client, "solway-dat", "solway-psy", "psychology", patient_id)).json()
    revoked = {**first, "status": "revoked"}
    response = await client.put(f"/ServiceRequest/{first['id']}", json=revoked, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    task = (await client.get(f"/Task/{task_of(first)}")).json()
    assert task["status"] == "cancelled"
    assert task["statusReason"]["text"]

    second = (await _refer(client, "solway-dat", "solway-psy", "psychology", patient_id)).json()
    cancelled = await _move(
        client, task_of(second), "cancelled", statusReason=reason(text="Person moved away")
    )
    assert cancelled.status_code == 200
    request = (await client.get(f"/ServiceRequest/{second['id']}")).json()
    assert request["status"] == "revoked"
    # Closed referrals no longer block a new one to the same service.
    third = await _refer(client, "solway-dat", "solway-psy", "psychology", patient_id)
    assert third.status_code == 201


async def test_a_referral_is_never_deleted(client: httpx.AsyncClient) -> None:
    patient_id = await new_patient(client)
    created = (await _refer(client, "solway-dat", "solway-psy", "psychology", patient_id)).json()
    assert (await client.delete(f"/ServiceRequest/{created['id']}")).status_code == 422
    assert (await client.delete(f"/Task/{task_of(created)}")).status_code == 422
    assert (await client.get(f"/Task/{task_of(created)}")).status_code == 200


async def test_concurrent_updates_of_one_task_one_wins(client: httpx.AsyncClient) -> None:
    patient_id = await new_patient(client)
    created = (await _refer(client, "solway-dat", "solway-psy", "psychology", patient_id)).json()
    task_id = task_of(created)
    task = (await client.get(f"/Task/{task_id}")).json()

    async def attempt(status: str) -> int:
        body = {**task, "status": status, "businessStatus": business("triaged")}
        headers = {**FHIR_JSON, "If-Match": 'W/"1"'}
        return (await client.put(f"/Task/{task_id}", json=body, headers=headers)).status_code

    results = await asyncio.gather(attempt("received"), attempt("accepted"))
    assert sorted(results) == [200, 412]


async def test_a_referral_in_a_transaction_creates_its_task(client: httpx.AsyncClient) -> None:
    requester = await role_in(client, await service(client, "solway-gp1"))
    dat = await service(client, "solway-dat")
    nhs = "9912003888"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:6f0b5a1e-3c55-4f7e-9a2b-0c1d2e3f4a5b",
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}],
                },
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": f"identifier=https://fhir.nhs.uk/Id/nhs-number|{nhs}",
                },
            },
            {
                "fullUrl": "urn:uuid:8a1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
                "resource": referral(
                    "x",
                    requester,
                    dat,
                    "drug-alcohol",
                    subject={"reference": "urn:uuid:6f0b5a1e-3c55-4f7e-9a2b-0c1d2e3f4a5b"},
                ),
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
        ],
    }
    response = await client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    request = response.json()["entry"][1]["resource"]
    task = (await client.get(f"/Task/{task_of(request)}")).json()
    assert task["status"] == "requested"


async def _walk(http: httpx.AsyncClient, task_id: str, *statuses: str) -> None:
    """Move a Task through ``statuses``, each with its own reason where one is needed."""
    for number, status in enumerate(statuses):
        moved = await _move(http, task_id, status, statusReason=reason(text=f"step {number}"))
        assert moved.status_code == 200, moved.text


@pytest.mark.parametrize(
    ("path", "forbidden"),
    [
        ((), "in-progress"),
        ((), "ready"),
        (("received",), "in-progress"),
        (("received",), "completed"),
        (("accepted",), "rejected"),
        (("accepted",), "completed"),
        (("accepted", "in-progress"), "accepted"),
        (("accepted", "in-progress"), "rejected"),
        (("accepted", "in-progress", "completed"), "in-progress"),
        (("cancelled",), "requested"),
        (("rejected",), "received"),
        (("on-hold",), "in-progress"),
        (("on-hold",), "completed"),
        (("on-hold",), "failed"),  # only a gate's hold may also be failed (test_gate_holds)
        (("received", "on-hold"), "in-progress"),
        (("received", "on-hold"), "requested"),
    ],
)
async def test_each_forbidden_transition_is_refused(
    client: httpx.AsyncClient, path: tuple[str, ...], forbidden: str
) -> None:
    patient_id = await new_patient(client)
    created = await _refer(client, "solway-dat", "solway-psy", "psychology", patient_id)
    task_id = task_of(created.json())
    await _walk(client, task_id, *path)
    refused = await _move(client, task_id, forbidden, statusReason=reason(text="A new reason"))
    assert refused.status_code == 422, refused.text
    diagnostics = refused.json()["issue"][0]["diagnostics"]
    assert f"to '{forbidden}'" in diagnostics
    assert refused.json()["issue"][0]["expression"] == ["Task.status"]
    assert (await client.get(f"/Task/{task_id}")).json()["status"] == (path or ("requested",))[-1]


async def test_a_hold_returns_to_where_the_referral_was(client: httpx.AsyncClient) -> None:
    patient_id = await new_patient(client)
    created = await _refer(client, "solway-dat", "solway-psy", "psychology", patient_id)
    task_id = task_of(created.json())
    await _walk(client, task_id, "on-hold")
    skipped = await _move(client, task_id, "in-progress")
    assert skipped.status_code == 422
    assert "it was 'requested' before the hold" in skipped.json()["issue"][0]["diagnostics"]
    await _walk(client, task_id, "received", "accepted", "on-hold")
    # Back from a hold taken when accepted: to accepted, or on to what accepted allows.
    assert (await _move(client, task_id, "in-progress")).status_code == 200


async def test_closing_needs_a_reason_of_its_own(client: httpx.AsyncClient) -> None:
    patient_id = await new_patient(client)
    created = await _refer(client, "solway-dat", "solway-psy", "psychology", patient_id)
    task_id = task_of(created.json())
    no_reason = await _move(client, task_id, "cancelled")
    assert no_reason.status_code == 422
    assert no_reason.json()["issue"][0]["expression"] == ["Task.statusReason"]
    left_over = reason("patient-unavailable", "On holiday")
    assert (await _move(client, task_id, "on-hold", statusReason=left_over)).status_code == 200
    assert (await _move(client, task_id, "received")).status_code == 200
    stale = await _move(client, task_id, "rejected")  # still carries the hold's reason
    assert stale.status_code == 422
    assert "left from an earlier move" in stale.json()["issue"][0]["diagnostics"]
    rejected = await _move(client, task_id, "rejected", statusReason=reason(text="Not suitable"))
    assert rejected.status_code == 200
    timeline = (await client.get(f"/ServiceRequest/{created.json()['id']}/$timeline")).json()
    last = [p for p in timeline["parameter"] if p["name"] == "event"][-1]
    assert {"name": "reason", "valueString": "Not suitable"} in last["part"]


async def test_a_closed_referral_cannot_be_cancelled(client: httpx.AsyncClient) -> None:
    patient_id = await new_patient(client)
    created = await _refer(client, "solway-dat", "solway-psy", "psychology", patient_id)
    task_id = task_of(created.json())
    await _walk(client, task_id, "accepted", "in-progress", "completed")
    refused = await _move(client, task_id, "cancelled", statusReason=reason(text="Too late"))
    assert refused.status_code == 422
    assert "it is closed" in refused.json()["issue"][0]["diagnostics"]
    request = (await client.get(f"/ServiceRequest/{created.json()['id']}")).json()
    assert request["status"] == "completed"


async def test_an_organization_with_several_services_cannot_name_the_sender(
    client: httpx.AsyncClient,
) -> None:
    patient_id = await new_patient(client)
    gp = (await client.get(f"/HealthcareService/{await service(client, 'solway-gp1')}")).json()
    second = {
        "resourceType": "HealthcareService",
        "active": True,
        "providedBy": gp["providedBy"],
        "type": gp["type"],
        "name": "Solway Harbour Medical Practice: minor surgery",
    }
    assert (await client.post("/HealthcareService", json=second)).status_code == 201
    body = referral(
        patient_id,
        gp["providedBy"]["reference"],
        await service(client, "solway-dat"),
        "drug-alcohol",
    )
    refused = await client.post("/ServiceRequest", json=body, headers=FHIR_JSON)
    assert refused.status_code == 422
    issue = refused.json()["issue"][0]
    assert "has 2 active services" in issue["diagnostics"]
    assert issue["expression"] == ["ServiceRequest.requester"]


@pytest.mark.parametrize("named", [0, 2])
async def test_a_practitioner_role_must_name_one_service(
    client: httpx.AsyncClient, named: int
) -> None:
    patient_id = await new_patient(client)
    services = [await service(client, key) for key in ("solway-gp1", "solway-pharm")][:named]
    role = {
        "resourceType": "PractitionerRole",
        "active": True,
        **(
            {"healthcareService": [{"reference": f"HealthcareService/{s}"} for s in services]}
            if services
            else {}
        ),
    }
    made = await client.post("/PractitionerRole", json=role, headers=FHIR_JSON)
    body = referral(
        patient_id,
        f"PractitionerRole/{made.json()['id']}",
        await service(client, "solway-dat"),
        "drug-alcohol",
    )
    refused = await client.post("/ServiceRequest", json=body, headers=FHIR_JSON)
    assert refused.status_code == 422
    assert f"it names {named}" in refused.json()["issue"][0]["diagnostics"]
    assert (await client.get("/Task")).json()["total"] == 0


async def test_an_advisory_gate_warns_in_the_transaction_response(
    client: httpx.AsyncClient,
) -> None:
    patient_id = await new_patient(client, meets_gates=False)
    requester = await role_in(client, await service(client, "northisles-dat"))
    body = referral(patient_id, requester, await service(client, "northisles-psy"), "psychology")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": body, "request": {"method": "POST", "url": "ServiceRequest"}}],
    }
    response = await client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    [entry] = response.json()["entry"]
    assert entry["response"]["status"] == "201 Created"
    warnings = [i for i in entry["response"]["outcome"]["issue"] if i["severity"] == "warning"]
    assert len(warnings) == 1
    assert "Advisory gate not met" in warnings[0]["diagnostics"]
    task = (await client.get(f"/Task/{task_of(entry['resource'])}")).json()
    assert task["status"] == "requested"


async def test_a_service_request_stays_in_step_with_its_task(client: httpx.AsyncClient) -> None:
    patient_id = await new_patient(client)
    first = (await _refer(client, "solway-dat", "solway-psy", "psychology", patient_id)).json()
    revoked = await client.put(
        f"/ServiceRequest/{first['id']}", json={**first, "status": "revoked"}, headers=FHIR_JSON
    )
    assert revoked.status_code == 200
    reopened = await client.put(
        f"/ServiceRequest/{first['id']}", json={**revoked.json(), "status": "active"}
    )
    assert reopened.status_code == 422
    assert reopened.json()["issue"][0]["expression"] == ["ServiceRequest.status"]
    assert (await client.get(f"/Task/{task_of(first)}")).json()["status"] == "cancelled"

    # Rejected by the service: the ServiceRequest is revoked with it.
    second = (await _refer(client, "solway-dat", "solway-cmht", "cmht", patient_id)).json()
    rejected = await _move(client, task_of(second), "rejected", statusReason=reason(text="No"))
    assert rejected.status_code == 200
    assert (await client.get(f"/ServiceRequest/{second['id']}")).json()["status"] == "revoked"

    # Completed: revoking it afterwards is refused.
    third = (await _refer(client, "solway-dat", "solway-gp1", "gp", patient_id)).json()
    await _walk(client, task_of(third), "accepted", "in-progress", "completed")
    done = (await client.get(f"/ServiceRequest/{third['id']}")).json()
    assert done["status"] == "completed"
    late = await client.put(f"/ServiceRequest/{third['id']}", json={**done, "status": "revoked"})
    assert late.status_code == 422
    assert "closed" in late.json()["issue"][0]["diagnostics"]


async def test_a_referral_is_sent_active_and_is_one_from_the_start(
    client: httpx.AsyncClient,
) -> None:
    patient_id = await new_patient(client)
    requester = await role_in(client, await service(client, "solway-dat"))
    body = referral(patient_id, requester, await service(client, "solway-psy"), "psychology")
    draft = await client.post("/ServiceRequest", json={**body, "status": "draft"})
    assert draft.status_code == 422
    assert draft.json()["issue"][0]["expression"] == ["ServiceRequest.status"]
    plain = {k: v for k, v in body.items() if k not in ("category", "performer")}
    made = await client.post("/ServiceRequest", json={**plain, "status": "draft"})
    assert made.status_code == 201
    becoming = await client.put(
        f"/ServiceRequest/{made.json()['id']}", json={**body, "id": made.json()["id"]}
    )
    assert becoming.status_code == 422
    assert "created as one" in becoming.json()["issue"][0]["diagnostics"]
    assert (await client.get("/Task")).json()["total"] == 0
