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
