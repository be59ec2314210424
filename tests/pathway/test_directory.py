"""The directory and Waymark's own definitions, served as FHIR resources."""

from __future__ import annotations

import httpx
import pytest

from app.db import transaction
from app.pathway.seed import load_definitions
from app.runtime import Runtime
from tests.conftest import BASE_URL

WAYMARK = "https://fhir.waymark.org.uk"


@pytest.mark.parametrize(
    ("resource_type", "name"),
    [
        ("CodeSystem", "service-kind"),
        ("CodeSystem", "referral-state"),
        ("CodeSystem", "hold-reason"),
        ("CodeSystem", "pathway-phase"),
        ("ValueSet", "service-kind"),
        ("PlanDefinition", "referral-routes"),
        ("OperationDefinition", "referral-timeline"),
        ("OperationDefinition", "evaluate-gates"),
        ("OperationDefinition", "override-gate"),
        ("ValueSet", "gate-substance"),
    ],
)
async def test_definitions_are_served_at_their_canonical_urls(
    client: httpx.AsyncClient, resource_type: str, name: str
) -> None:
    url = f"{WAYMARK}/{resource_type}/{name}"
    found = (await client.get(f"/{resource_type}", params={"url": url})).json()
    assert found["total"] == 1
    assert found["entry"][0]["resource"]["url"] == url
    assert found["entry"][0]["fullUrl"] == f"{BASE_URL}/{resource_type}/{name}"


async def test_service_kinds_cover_every_kind(client: httpx.AsyncClient) -> None:
    kinds = (await client.get("/CodeSystem/service-kind")).json()
    assert [c["code"] for c in kinds["concept"]] == [
        "drug-alcohol",
        "psychology",
        "cmht",
        "gp",
        "prison",
        "pharmacy",
        "third-sector",
        "social-work",
    ]


async def test_the_demo_has_two_areas_with_services_of_every_kind(
    client: httpx.AsyncClient,
) -> None:
    services = (await client.get("/HealthcareService", params={"_count": 100})).json()
    by_area: dict[str, set[str]] = {}
    for entry in services["entry"]:
        resource = entry["resource"]
        area = resource["identifier"][0]["value"].split("-")[0]
        by_area.setdefault(area, set()).add(resource["type"][0]["coding"][0]["code"])
    assert set(by_area) == {"solway", "northisles"}
    every = {"drug-alcohol", "psychology", "cmht", "gp", "pharmacy", "third-sector", "social-work"}
    assert by_area["solway"] == every | {"prison"}  # the mainland area has the prison
    assert by_area["northisles"] == every


async def test_loading_the_definitions_again_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    async with transaction(runtime.engine, write=True) as conn:
        assert await load_definitions(runtime.store(conn)) == []
    routes = (await client.get("/PlanDefinition/referral-routes")).json()
    assert routes["meta"]["versionId"] == "1"
