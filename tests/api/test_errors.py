"""Every error is an OperationOutcome with the right status, code and, where it helps, path."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from app.fhir.hooks import WriteEvent
from app.runtime import Runtime
from tests.api.helpers import FHIR_JSON, issues, patient


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/Patient", content=b'{"resourceType": "Patient",', headers=FHIR_JSON
    )
    assert response.status_code == 400
    body = response.json()
    assert "not valid JSON" in body["issue"][0]["diagnostics"]


async def test_unknown_resource_type_in_the_url(client: httpx.AsyncClient) -> None:
    for method, url in (("GET", "/Claim/1"), ("GET", "/Claim"), ("POST", "/Claim")):
        response = await client.request(
            method, url, json={"resourceType": "Claim"}, headers=FHIR_JSON
        )
        assert response.status_code == 404, (method, url)
        assert issues(response.json())[0][0] == "not-supported"


async def test_body_type_must_match_the_url(client: httpx.AsyncClient) -> None:
    response = await client.post("/Observation", json=patient(), headers=FHIR_JSON)
    assert response.status_code == 400
    assert issues(response.json()) == [("invalid", ["resourceType"])]


async def test_invalid_content_names_each_element(client: httpx.AsyncClient) -> None:
    resource = patient(gender="bogus", colour="blue", birthDate="1st May")
    response = await client.post("/Patient", json=resource, headers=FHIR_JSON)
    assert response.status_code == 400
    assert sorted(issues(response.json())) == [
        ("code-invalid", ["Patient.gender"]),
        ("structure", ["Patient.colour"]),
        ("value", ["Patient.birthDate"]),
    ]


async def test_bad_nhs_number(client: httpx.AsyncClient) -> None:
    response = await client.post("/Patient", json=patient("9434765918"), headers=FHIR_JSON)
    assert response.status_code == 400
    assert issues(response.json()) == [("value", ["Patient.identifier[0].value"])]
    assert "9434765918" not in response.text  # the OperationOutcome does not echo identifiers


async def test_xml_is_not_acceptable(client: httpx.AsyncClient) -> None:
    response = await client.get("/metadata", headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 406
    assert response.json()["resourceType"] == "OperationOutcome"
    assert (await client.get("/metadata", params={"_format": "xml"})).status_code == 406
    as_json = await client.get("/metadata", params={"_format": "json"})
    assert as_json.status_code == 200


async def test_plain_json_is_accepted_and_produced(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/Patient",
        json=patient(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/json")


async def test_other_body_types_are_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"}
    )
    assert response.status_code == 415
    assert issues(response.json())[0][0] == "not-supported"


async def test_over_size_body_is_413(client: httpx.AsyncClient) -> None:
    big = patient(name=[{"family": "x" * 70_000}])
    response = await client.post("/Patient", json=big, headers=FHIR_JSON)
    assert response.status_code == 413
    assert issues(response.json())[0][0] == "too-costly"


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    response = await client.post("/metadata", json={}, headers=FHIR_JSON)
    assert response.status_code == 405
    assert issues(response.json())[0][0] == "not-supported"
    for method in ("PATCH", "DELETE"):
        response = await client.request(method, "/Patient")
        assert response.status_code == 405
        assert response.json()["resourceType"] == "OperationOutcome"


async def test_audit_events_cannot_be_written_through_the_api(client: httpx.AsyncClient) -> None:
    event = {"resourceType": "AuditEvent"}
    for method, url in (
        ("POST", "/AuditEvent"),
        ("PUT", "/AuditEvent/1"),
        ("DELETE", "/AuditEvent/1"),
    ):
        response = await client.request(method, url, json=event, headers=FHIR_JSON)
        assert response.status_code == 405, (method, url)
    assert (await client.get("/AuditEvent")).status_code == 200


async def test_unknown_path_is_404_outcome(client: httpx.AsyncClient) -> None:
    response = await client.get("/Patient/1/2/3/4")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_invalid_id_in_the_url(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/Patient/has spaces!", json=patient(id="has spaces!"), headers=FHIR_JSON
    )
    assert response.status_code == 400


async def test_bad_if_match_header(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/Patient/x", json=patient(id="x"), headers={**FHIR_JSON, "If-Match": "yesterday"}
    )
    assert response.status_code == 400
    assert issues(response.json()) == [("invalid", ["If-Match"])]


@pytest.fixture
def failing_hook(runtime: Runtime) -> None:
    async def explode(_event: WriteEvent) -> None:
        raise RuntimeError("secret patient detail 9434765919")

    runtime.hooks.after("Patient", explode)


@pytest.mark.usefixtures("failing_hook")
async def test_unexpected_error_is_500_without_internals_and_rolls_back(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.post("/Patient", json=patient(), headers=FHIR_JSON)
    assert response.status_code == 500
    assert issues(response.json()) == [("exception", [])]
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    assert "9434765919" not in caplog.text
    # The write was all or nothing: the Patient was not kept.
    assert (await client.get("/Patient")).json()["total"] == 0


async def test_absurdly_nested_json_is_refused_not_a_crash(client: httpx.AsyncClient) -> None:
    nested: dict[str, object] = {"url": "urn:x", "valueString": "deep"}
    for _ in range(200):  # deeper than 64, within what JSON encoders allow
        nested = {"url": "urn:x", "extension": [nested]}
    response = await client.post("/Patient", json=patient(extension=[nested]), headers=FHIR_JSON)
    assert response.status_code == 400
    assert "nested" in response.json()["issue"][0]["diagnostics"]


async def test_numbers_that_are_not_plain_digits(client: httpx.AsyncClient) -> None:
    """'²' passes str.isdigit but not int(); 2**31 does not fit a stored version id."""
    created = await client.post("/Patient", json=patient(), headers=FHIR_JSON)
    url = created.headers["Location"].split("/_history")[0]
    for version in ("%C2%B2", "2147483648", "99999999999999999999"):
        response = await client.get(f"{url}/_history/{version}")
        assert response.status_code == 404, version
        assert issues(response.json())[0][0] == "not-found"
    for params in ({"_count": "²"}, {"_count": "99999999999999999999"}):
        response = await client.get(f"{url}/_history", params=params)
        assert response.status_code == 400, params
        assert issues(response.json()) == [("invalid", ["_count"])]
        response = await client.get("/Patient", params=params)
        assert response.status_code == 400, params
    response = await client.put(
        url, json=patient(), headers={**FHIR_JSON, "If-Match": 'W/"\xb2"'.encode("latin-1")}
    )
    assert response.status_code == 400
    assert issues(response.json())[0][1] == ["If-Match"]


async def test_contained_resources_of_no_real_type_are_400(client: httpx.AsyncClient) -> None:
    nested = {"resourceType": "Patient", "contained": [{"resourceType": "Nope"}]}
    for contained, where in (
        ({"resourceType": "Bogus"}, "Patient.contained[0].resourceType"),
        ({"resourceType": 5}, "Patient.contained[0].resourceType"),
        (nested, "Patient.contained[0].contained[0].resourceType"),
    ):
        response = await client.post(
            "/Patient", json=patient(contained=[contained]), headers=FHIR_JSON
        )
        assert response.status_code == 400, response.text
        assert ("value", [where]) in issues(response.json())
