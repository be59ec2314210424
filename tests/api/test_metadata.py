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
