"""A referral sent as one transaction Bundle, the way EHR integrations send it, to the real app
under uvicorn: through fhirpy and through plain httpx.

The live server's database outlives each test, so every test uses an NHS number of its own.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome

from tests.api.bundle_builders import BAD_NHS, PATIENT_REFERRAL, fresh_nhs_number, referral_bundle
from tests.api.helpers import NHS
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
