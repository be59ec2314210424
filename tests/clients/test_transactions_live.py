"""A referral sent as one transaction Bundle, the way EHR integrations send it, to the real app
under uvicorn: through fhirpy and through plain httpx. Either the Patient comes in the Bundle
(conditional create, urn:uuid links) or the receiver holds it already and the entries name it
by a conditional reference (Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|...).

The live server's database outlives each test, so every test uses an NHS number of its own.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import MultipleResourcesFound, OperationOutcome

from tests.api.bundle_builders import (
    BAD_NHS,
    PATIENT_REFERRAL,
    conditional_referral_bundle,
    fresh_nhs_number,
    referral_bundle,
)
from tests.api.helpers import NHS, patient
from tests.conftest import LiveServer
from tests.fhir_parse import assert_parses_as_r4


def check_referral_response(response: dict[str, Any], *, patient_status: str) -> dict[str, str]:
    """The ids the transaction-response gives, after checking it links them together."""
    assert_parses_as_r4(response)
    assert response["type"] == "transaction-response"
    entries = response["entry"]
    assert [e["response"]["status"] for e in entries] == [patient_status] + ["201 Created"] * 3
    patient, referral, *observations = (e["resource"] for e in entries)
    assert referral["category"][0]["coding"][0] == PATIENT_REFERRAL
    assert referral["subject"] == {"reference": f"Patient/{patient['id']}"}
    for observation in observations:
        assert observation["subject"] == {"reference": f"Patient/{patient['id']}"}
        assert observation["basedOn"] == [{"reference": f"ServiceRequest/{referral['id']}"}]
    for answer in entries:
        resource = answer["resource"]
        version = resource["meta"]["versionId"]
        assert answer["response"]["location"].endswith(
            f"/{resource['resourceType']}/{resource['id']}/_history/{version}"
        )
        assert answer["response"]["etag"] == f'W/"{version}"'
    return {
        "patient": patient["id"],
        "referral": referral["id"],
        **{f"observation-{i}": o["id"] for i, o in enumerate(observations)},
    }


async def test_referral_transaction_through_fhirpy(live_server: LiveServer) -> None:
    client = AsyncFHIRClient(live_server.base_url, authorization=f"Bearer {live_server.token}")
    nhs = fresh_nhs_number()
    first = await client.execute("/", method="post", data=referral_bundle(nhs))
    ids = check_referral_response(first, patient_status="201 Created")

    # A retry of the same referral finds the Patient by its NHS number instead of duplicating.
    again = await client.execute("/", method="post", data=referral_bundle(nhs))
    assert check_referral_response(again, patient_status="200 OK")["patient"] == ids["patient"]
    patients = await client.resources("Patient").search(identifier=f"{NHS}|{nhs}").fetch_all()
    assert [p.id for p in patients] == [ids["patient"]]
    referral = await client.reference("ServiceRequest", ids["referral"]).to_resource()
    assert referral["subject"]["reference"] == f"Patient/{ids['patient']}"


async def test_failed_transaction_through_fhirpy_is_an_operation_outcome(
    live_server: LiveServer,
) -> None:
    client = AsyncFHIRClient(live_server.base_url, authorization=f"Bearer {live_server.token}")
    nhs = fresh_nhs_number()
    bundle = referral_bundle(nhs)
    bundle["entry"][2]["resource"]["subject"] = {"reference": "urn:uuid:not-in-this-bundle"}
    with pytest.raises(OperationOutcome) as raised:
        await client.execute("/", method="post", data=bundle)
    assert "Bundle.entry[2]" in str(raised.value)
    assert await client.resources("Patient").search(identifier=f"{NHS}|{nhs}").fetch_all() == []


async def test_referral_transaction_through_httpx(live_server: LiveServer) -> None:
    nhs = fresh_nhs_number()
    async with httpx.AsyncClient(
        base_url=live_server.base_url, timeout=30, headers=live_server.headers
    ) as http:
        response = await http.post(
            "/",
            json=referral_bundle(nhs),
            headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+json")
        ids = check_referral_response(response.json(), patient_status="201 Created")

        bad = referral_bundle(fresh_nhs_number())
        bad["entry"][0]["resource"]["identifier"][0]["value"] = BAD_NHS
        refused = await http.post("/", json=bad, headers={"Content-Type": "application/json"})
        assert refused.status_code == 400
        outcome = refused.json()
        assert_parses_as_r4(outcome)
        assert outcome["issue"][0]["expression"] == ["Bundle.entry[0].resource.identifier[0].value"]

        for key in ("observation-0", "observation-1"):
            stored = (await http.get(f"/Observation/{ids[key]}")).json()
            assert stored["subject"] == {"reference": f"Patient/{ids['patient']}"}
            assert stored["basedOn"] == [{"reference": f"ServiceRequest/{ids['referral']}"}]
        unknown = await http.get("/Patient", params={"identifier": f"{NHS}|{BAD_NHS}"})
        assert unknown.json()["total"] == 0


def check_conditional_referral(response: dict[str, Any], patient_id: str) -> str:
    """The referral's id, after checking every conditional reference became Patient/id."""
    assert_parses_as_r4(response)
    assert [e["response"]["status"] for e in response["entry"]] == ["201 Created"] * 3
    referral, *observations = (e["resource"] for e in response["entry"])
    assert referral["subject"] == {"reference": f"Patient/{patient_id}"}
    for observation in observations:
        assert observation["subject"] == {"reference": f"Patient/{patient_id}"}
        assert observation["basedOn"] == [{"reference": f"ServiceRequest/{referral['id']}"}]
    referral_id: str = referral["id"]
    return referral_id


async def test_conditional_reference_referral_through_fhirpy(live_server: LiveServer) -> None:
    client = AsyncFHIRClient(live_server.base_url, authorization=f"Bearer {live_server.token}")
    nhs = fresh_nhs_number()
    person = client.resource("Patient", **patient(nhs))
    await person.save()
    sent = await client.execute("/", method="post", data=conditional_referral_bundle(nhs))
    referral_id = check_conditional_referral(sent, person.id)
    stored = await client.reference("ServiceRequest", referral_id).to_resource()
    assert stored["subject"]["reference"] == f"Patient/{person.id}"
    found = await client.resources("Observation").search(based_on=referral_id).fetch_all()
    assert sorted(o["code"]["text"] for o in found) == ["Alcohol use", "Drug use"]

    # Nobody holds that NHS number: 412 (fhirpy's name for any 412), nothing is kept.
    unknown = fresh_nhs_number()
    with pytest.raises(MultipleResourcesFound) as raised:
        await client.execute("/", method="post", data=conditional_referral_bundle(unknown))
    assert '"code":"not-found"' in str(raised.value)
    assert "Bundle.entry[0].resource.subject.reference" in str(raised.value)
    assert unknown not in str(raised.value)  # the criteria are not echoed back
    subjects = (
        await client.resources("ServiceRequest")
        .search(**{"patient.identifier": f"{NHS}|{unknown}"})
        .fetch_all()
    )
    assert subjects == []


async def test_conditional_reference_referral_through_httpx(live_server: LiveServer) -> None:
    nhs = fresh_nhs_number()
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    async with httpx.AsyncClient(
        base_url=live_server.base_url, timeout=30, headers=live_server.headers
    ) as http:
        made = await http.post("/Patient", json=patient(nhs), headers=headers)
        assert made.status_code == 201, made.text
        patient_id = made.json()["id"]
        response = await http.post("/", json=conditional_referral_bundle(nhs), headers=headers)
        assert response.status_code == 200, response.text
        referral_id = check_conditional_referral(response.json(), patient_id)
        chained = await http.get("/ServiceRequest", params={"patient.identifier": f"{NHS}|{nhs}"})
        assert [e["resource"]["id"] for e in chained.json()["entry"]] == [referral_id]

        # A second Patient with the same NHS number makes the reference ambiguous: 412.
        await http.post("/Patient", json=patient(nhs), headers=headers)
        ambiguous = await http.post("/", json=conditional_referral_bundle(nhs), headers=headers)
        assert ambiguous.status_code == 412
        outcome = ambiguous.json()
        assert_parses_as_r4(outcome)
        assert outcome["issue"][0]["code"] == "multiple-matches"
        assert outcome["issue"][0]["expression"][0] == "Bundle.entry[0].resource.subject.reference"
        after = await http.get("/ServiceRequest", params={"patient.identifier": f"{NHS}|{nhs}"})
        assert len(after.json()["entry"]) == 1
