"""Every interaction checks the caller's SMART scopes, on every resource type and on every
entry of a transaction or batch; no token at all is a 401 with a challenge."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.api.helpers import FHIR_JSON, patient

ScopedClient = Callable[[str], Awaitable[httpx.AsyncClient]]
PATCH_JSON = {"Content-Type": "application/json-patch+json"}


def _organization() -> dict[str, Any]:
    return {"resourceType": "Organization", "name": "Leith Recovery Hub"}


EXAMPLES = {"Patient": patient, "Organization": _organization}


async def _call(
    http: httpx.AsyncClient, interaction: str, resource_type: str, existing: str
) -> httpx.Response:
    document = EXAMPLES[resource_type]()
    match interaction:
        case "read":
            return await http.get(f"/{resource_type}/{existing}")
        case "vread":
            return await http.get(f"/{resource_type}/{existing}/_history/1")
        case "history-instance":
            return await http.get(f"/{resource_type}/{existing}/_history")
        case "history-type":
            return await http.get(f"/{resource_type}/_history")
        case "search-type":
            return await http.get(f"/{resource_type}?_id={existing}")
        case "create":
            return await http.post(f"/{resource_type}", json=document, headers=FHIR_JSON)
        case "update":
            document["id"] = existing
            return await http.put(f"/{resource_type}/{existing}", json=document, headers=FHIR_JSON)
        case "patch":
            operations = [{"op": "add", "path": "/active", "value": True}]
            return await http.patch(
                f"/{resource_type}/{existing}", json=operations, headers=PATCH_JSON
            )
        case _:
            return await http.delete(f"/{resource_type}/{existing}")


NEEDS = {
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "history-type": "s",
    "search-type": "s",
    "create": "c",
    "update": "u",
    "patch": "u",
    "delete": "d",
}


@pytest.mark.parametrize("resource_type", sorted(EXAMPLES))
@pytest.mark.parametrize("interaction", sorted(NEEDS))
async def test_each_interaction_needs_its_permission(
    client: httpx.AsyncClient, scoped_client: ScopedClient, interaction: str, resource_type: str
) -> None:
    created = await client.post(
        f"/{resource_type}", json=EXAMPLES[resource_type](), headers=FHIR_JSON
    )
    existing = created.json()["id"]
    needed = NEEDS[interaction]
    others = "".join(p for p in "cruds" if p != needed)
    without = await scoped_client(f"system/{resource_type}.{others} system/AuditEvent.rs")
    refused = await _call(without, interaction, resource_type, existing)
    assert refused.status_code == 403, refused.text
    assert refused.json()["issue"][0]["code"] == "forbidden"
    wrong_type = "Organization" if resource_type == "Patient" else "Patient"
    elsewhere = await scoped_client(f"system/{wrong_type}.cruds")
    assert (await _call(elsewhere, interaction, resource_type, existing)).status_code == 403
    granted = await scoped_client(f"system/{resource_type}.{needed}")
    allowed = await _call(granted, interaction, resource_type, existing)
    assert allowed.status_code < 300, allowed.text
    v1 = "read" if needed in "rs" else "write"
    assert (
        await _call(
            await scoped_client(f"system/{resource_type}.{v1}"),
            interaction,
            resource_type,
            existing,
        )
    ).status_code < 300


async def test_no_token_or_a_bad_one_is_401_with_a_challenge(
    anonymous: httpx.AsyncClient,
) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eA=="}):
        response = await anonymous.get("/Patient", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith('Bearer realm="waymark"')
        assert response.json()["issue"][0]["code"] == "login"
    bad = await anonymous.get("/Patient", headers={"Authorization": "Bearer not-a-token"})
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]


async def test_public_endpoints_need_no_token(anonymous: httpx.AsyncClient) -> None:
    assert (await anonymous.get("/metadata")).status_code == 200
    assert (await anonymous.get("/.well-known/smart-configuration")).status_code == 200
    assert (await anonymous.get("/health")).status_code == 200


def _bundle(kind: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {
                "fullUrl": "urn:uuid:3f1a6a52-7c0e-4d3e-9f57-1b2a4c6d8e90",
                "resource": patient(),
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": _organization(), "request": {"method": "POST", "url": "Organization"}},
            {"request": {"method": "GET", "url": "Organization?name=Leith"}},
        ],
    }


async def test_transaction_entries_are_checked_one_by_one(
    client: httpx.AsyncClient, scoped_client: ScopedClient
) -> None:
    patients_only = await scoped_client("system/Patient.c")
    refused = await patients_only.post("/", json=_bundle("transaction"), headers=FHIR_JSON)
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert (await client.get("/Patient")).json()["total"] == 0  # nothing was kept
    enough = await scoped_client("system/Patient.c system/Organization.cs")
    done = await enough.post("/", json=_bundle("transaction"), headers=FHIR_JSON)
    assert done.status_code == 200, done.text


async def test_batch_entries_are_refused_one_by_one(scoped_client: ScopedClient) -> None:
    patients_only = await scoped_client("system/Patient.c")
    response = await patients_only.post("/", json=_bundle("batch"), headers=FHIR_JSON)
    assert response.status_code == 200
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["201 Created", "403 Forbidden", "403 Forbidden"]


async def test_included_resources_need_read_permission(
    client: httpx.AsyncClient, scoped_client: ScopedClient
) -> None:
    org = (await client.post("/Organization", json=_organization(), headers=FHIR_JSON)).json()
    managed = patient(managingOrganization={"reference": f"Organization/{org['id']}"})
    await client.post("/Patient", json=managed, headers=FHIR_JSON)
    searcher = await scoped_client("system/Patient.s")
    query = "/Patient?_include=Patient:organization"
    assert (await searcher.get(query)).status_code == 403
    assert (await searcher.get("/Patient")).status_code == 200
    both = await scoped_client("system/Patient.s system/Organization.r")
    found = (await both.get(query)).json()
    assert {e["resource"]["resourceType"] for e in found["entry"]} == {"Patient", "Organization"}


NHS = "https://fhir.nhs.uk/Id/nhs-number"


def _observation(subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "228273003"}]},
        "subject": {"reference": subject},
    }


async def test_conditional_create_is_a_search_too(
    client: httpx.AsyncClient, scoped_client: ScopedClient
) -> None:
    """A conditional create that matches answers with the existing resource: without the
    search permission it would let a caller look people up by NHS number."""
    await client.post("/Patient", json=patient(), headers=FHIR_JSON)
    condition = f"identifier={NHS}|9434765919"
    create_only = await scoped_client("system/Patient.c")
    refused = await create_only.post(
        "/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": condition}
    )
    assert refused.status_code == 403, refused.text
    entry = {"resource": patient(), "request": {"method": "POST", "url": "Patient"}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    entry["request"]["ifNoneExist"] = condition
    for scopes in ("system/Task.r", "system/Patient.s", "system/Patient.c"):
        response = await (await scoped_client(scopes)).post("/", json=bundle, headers=FHIR_JSON)
        assert response.status_code == 403, (scopes, response.text)
        assert "Patient" not in response.json()["issue"][0].get("expression", [""])[0]
    allowed = await scoped_client("system/Patient.cs")
    matched = await allowed.post("/", json=bundle, headers=FHIR_JSON)
    assert matched.status_code == 200, matched.text
    assert matched.json()["entry"][0]["response"]["status"] == "200 OK"


async def test_a_conditional_match_is_audited_as_a_search(
    client: httpx.AsyncClient, scoped_client: ScopedClient
) -> None:
    created = (await client.post("/Patient", json=patient(), headers=FHIR_JSON)).json()
    caller = await scoped_client("system/Patient.cs")
    condition = f"identifier={NHS}|9434765919"
    response = await caller.post(
        "/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": condition}
    )
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    events = (await client.get("/AuditEvent", params={"subtype": "search-type"})).json()
    mine = [
        e["resource"]
        for e in events.get("entry", [])
        if any(
            x.get("what", {}).get("identifier", {}).get("value") == request_id
            for x in e["resource"]["entity"]
        )
    ]
    assert len(mine) == 1
    patients = [
        x["what"]["reference"] for x in mine[0]["entity"] if "reference" in x.get("what", {})
    ]
    assert patients == [f"Patient/{created['id']}"]


async def test_a_conditional_reference_needs_search_on_its_type(
    client: httpx.AsyncClient, scoped_client: ScopedClient
) -> None:
    await client.post("/Patient", json=patient(), headers=FHIR_JSON)
    reference = f"Patient?identifier={NHS}|9434765919"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": _observation(reference),
                "request": {"method": "POST", "url": "Observation"},
            }
        ],
    }
    observations_only = await scoped_client("system/Observation.c")
    refused = await observations_only.post("/", json=bundle, headers=FHIR_JSON)
    assert refused.status_code == 403, refused.text
    both = await scoped_client("system/Observation.c system/Patient.s")
    assert (await both.post("/", json=bundle, headers=FHIR_JSON)).status_code == 200


@pytest.mark.parametrize(
    ("query", "other"),
    [
        ("/Observation?patient.identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919", "Patient"),
        ("/Patient?_has:Observation:subject:code=228273003", "Observation"),
    ],
)
async def test_chains_and_has_need_search_on_the_type_they_reach(
    client: httpx.AsyncClient, scoped_client: ScopedClient, query: str, other: str
) -> None:
    person = (await client.post("/Patient", json=patient(), headers=FHIR_JSON)).json()
    await client.post(
        "/Observation", json=_observation(f"Patient/{person['id']}"), headers=FHIR_JSON
    )
    searched = query.split("?")[0].strip("/")
    alone = await scoped_client(f"system/{searched}.rs")
    refused = await alone.get(query)
    assert refused.status_code == 403, refused.text
    assert other in refused.json()["issue"][0]["diagnostics"]
    both = await scoped_client(f"system/{searched}.rs system/{other}.s")
    found = await both.get(query)
    assert found.status_code == 200
    assert found.json()["total"] == 1


async def test_update_as_create_needs_create(scoped_client: ScopedClient) -> None:
    document = patient()
    document["id"] = "made-by-put"
    update_only = await scoped_client("system/Patient.u")
    refused = await update_only.put("/Patient/made-by-put", json=document, headers=FHIR_JSON)
    assert refused.status_code == 403
    upsert = await scoped_client("system/Patient.cu")
    created = await upsert.put("/Patient/made-by-put", json=document, headers=FHIR_JSON)
    assert created.status_code == 201


async def test_a_chain_to_several_types_keeps_those_the_caller_may_search(
    client: httpx.AsyncClient, scoped_client: ScopedClient
) -> None:
    person = (await client.post("/Patient", json=patient(), headers=FHIR_JSON)).json()
    await client.post(
        "/Observation", json=_observation(f"Patient/{person['id']}"), headers=FHIR_JSON
    )
    query = f"/Observation?subject.identifier={NHS}|9434765919"
    observations = await scoped_client("system/Observation.rs")
    narrowed = await observations.get(query)
    assert narrowed.status_code == 200
    assert narrowed.json()["total"] == 0  # the Patients were not searched
    with_patients = await scoped_client("system/Observation.rs system/Patient.s")
    assert (await with_patients.get(query)).json()["total"] == 1
    tasks = await scoped_client("system/Task.s")
    refused = await tasks.get("/Task?owner.name=Leith")
    assert refused.status_code == 403
    assert "none of them" in refused.json()["issue"][0]["diagnostics"]
