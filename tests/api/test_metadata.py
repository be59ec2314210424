from __future__ import annotations

import json
from pathlib import Path

import httpx
from fastapi.routing import APIRoute

from app.api import fhir_rest
from app.cli import openapi_json
from app.fhir.capability import TYPE_INTERACTIONS
from app.fhir.resources import SERVED
from app.fhir.search.registry import parameters_for
from app.main import create_app


async def test_capability_statement_lists_what_is_implemented(client: httpx.AsyncClient) -> None:
    response = await client.get("/metadata")
    assert response.status_code == 200
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert "json" in statement["format"]
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert set(resources) == set(SERVED)
    patient = resources["Patient"]
    assert {i["code"] for i in patient["interaction"]} == {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history-instance",
        "history-type",
        "create",
        "search-type",
    }
    assert patient["conditionalCreate"] is True
    listed = {p["name"]: p["type"] for p in patient["searchParam"]}
    assert listed == {code: p.type for code, p in parameters_for("Patient").items()}
    assert {"identifier", "family", "given", "birthdate", "general-practitioner"} <= set(listed)
    assert listed["birthdate"] == "date"
    assert listed["general-practitioner"] == "reference"
    audit = resources["AuditEvent"]
    assert {i["code"] for i in audit["interaction"]} == {
        "read",
        "vread",
        "history-instance",
        "history-type",
        "search-type",
    }


async def test_capability_statement_claims_only_routed_interactions(
    client: httpx.AsyncClient,
) -> None:
    statement = (await client.get("/metadata")).json()
    claimed = {i["code"] for r in statement["rest"][0]["resource"] for i in r["interaction"]}
    routed = {route.name for route in fhir_rest.router.routes if isinstance(route, APIRoute)}
    assert claimed == routed & set(TYPE_INTERACTIONS)
    assert routed - claimed == {"search-type-post"}  # part of search-type


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_openapi_document_is_up_to_date() -> None:
    checked_in = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
    assert json.loads(openapi_json(create_app())) == json.loads(checked_in.read_text()), (
        "openapi/openapi.json is out of date: run `waymark openapi` (or `make openapi`)"
    )


SEED = Path(__file__).resolve().parents[2] / "seed" / "pathway"


async def test_capability_statement_lists_the_routed_operations(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/metadata")).json()
    listed = {
        (r["type"], o["name"], o["definition"])
        for r in statement["rest"][0]["resource"]
        for o in r.get("operation", [])
    }
    assert (
        "Patient",
        "pathway",
        "https://fhir.waymark.org.uk/OperationDefinition/pathway",
    ) in listed
    assert len(listed) == 6  # $timeline, $evaluate-gates, $gates, two $override-gate, $pathway
    for resource_type, name, definition in listed:
        # Each names an OperationDefinition that exists, for that type, with that code.
        seeded = json.loads(
            (SEED / f"OperationDefinition-{definition.rsplit('/', 1)[1]}.json").read_text()
        )
        assert (seeded["url"], seeded["code"]) == (definition, name)
        assert resource_type in seeded["resource"]
    assert "operation" not in statement["rest"][0]  # no system-level operations are routed


async def test_capability_statement_lists_includes_and_conditional_update(
    client: httpx.AsyncClient,
) -> None:
    resources = {
        r["type"]: r for r in (await client.get("/metadata")).json()["rest"][0]["resource"]
    }
    referral = resources["ServiceRequest"]
    assert {"ServiceRequest:patient", "ServiceRequest:performer", "ServiceRequest:*"} <= set(
        referral["searchInclude"]
    )
    assert "Task:focus" in referral["searchRevInclude"]
    assert "ServiceRequest:based-on" in referral["searchRevInclude"]
    assert "Task:owner" in resources["HealthcareService"]["searchRevInclude"]
    assert "Observation:patient" not in resources["Organization"]["searchRevInclude"]
    assert referral["conditionalUpdate"] is True
    assert "transaction or batch" in referral["documentation"]
    assert resources["AuditEvent"]["conditionalUpdate"] is False
    rest = await client.put("/ServiceRequest", params={"status": "active"}, json={})
    assert rest.status_code == 405  # as the documentation says: in Bundles only
    for resource in resources.values():  # FHIR JSON has no empty arrays
        assert all(value != [] for value in resource.values()), resource["type"]
    # Every listed _include and _revinclude is one a search accepts.
    for value in referral["searchInclude"]:
        assert (await client.get("/ServiceRequest", params={"_include": value})).status_code == 200
    for value in referral["searchRevInclude"]:
        response = await client.get("/ServiceRequest", params={"_revinclude": value})
        assert response.status_code == 200, value
