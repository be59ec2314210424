"""README's walk-through, through fhirpy against the real app under uvicorn: a referral to the
drug and alcohol team, phase 1, a psychology referral held by an abstinence gate and released
by evidence, a readiness review, and a trauma-focussed referral held until phase 1 completes."""

from __future__ import annotations

from typing import Any

from fhirpy import AsyncFHIRClient

from tests.api.bundle_builders import fresh_nhs_number
from tests.api.helpers import patient
from tests.clients.test_referral_live import _seed
from tests.conftest import LiveServer
from tests.pathway.referrals import ALCOHOL, ANY_DRUG, GATE_EVIDENCE, SERVICE_ID, SNOMED, referral

CODES = "https://fhir.waymark.org.uk/CodeSystem/pathway-codes"


async def _patch(client: AsyncFHIRClient, reference: str, path: str, value: str) -> Any:
    """Change one element, the way fhirpy does it: read the resource, set, save (PUT)."""
    resource_type, resource_id = reference.split("/")
    resource = await client.reference(resource_type, resource_id).to_resource()
    target: Any = resource
    *parents, last = path.strip("/").split("/")
    for step in parents:
        target = target[int(step)] if step.isdigit() else target[step]
    target[last] = value
    await resource.save()
    return resource


async def test_one_persons_pathway_through_fhirpy(live_server: LiveServer) -> None:
    await _seed(live_server)
    client = AsyncFHIRClient(
        live_server.base_url,
        authorization=f"Bearer {live_server.token}",
        extra_headers={"Accept": "application/fhir+json"},
    )

    async def service(key: str) -> str:
        found = (
            await client.resources("HealthcareService")
            .search(identifier=f"{SERVICE_ID}|{key}")
            .get()
        )
        return str(found.id)

    async def role(service_id: str) -> str:
        made = client.resource(
            "PractitionerRole",
            active=True,
            healthcareService=[{"reference": f"HealthcareService/{service_id}"}],
        )
        await made.save()
        return f"PractitionerRole/{made.id}"

    person = client.resource("Patient", **patient(fresh_nhs_number()))
    await person.save()
    gp, dat, psy = (
        await service("solway-gp1"),
        await service("solway-dat"),
        await service("solway-psy"),
    )
    gp_role, dat_role = await role(gp), await role(dat)

    async def refer(requester: str, to: str, kind: str, **changes: Any) -> tuple[Any, str]:
        made = client.resource(
            "ServiceRequest", **referral(str(person.id), requester, to, kind, **changes)
        )
        await made.save()
        link = next(e for e in made["extension"] if e["url"].endswith("referral-task"))
        return made, str(link["valueReference"]["reference"])

    _, to_dat_task = await refer(gp_role, dat, "drug-alcohol")
    await _patch(client, to_dat_task, "/status", "accepted")
    plan = await client.resources("CarePlan").search(subject=f"Patient/{person.id}").get()
    await _patch(client, f"CarePlan/{plan.id}", "/activity/0/detail/status", "in-progress")

    _, psy_task = await refer(dat_role, psy, "psychology")
    held = await client.execute(psy_task, method="get")
    assert (held["status"], held["businessStatus"]["coding"][0]["code"]) == (
        "on-hold",
        "held-by-gate",
    )

    for substance in (ALCOHOL, ANY_DRUG):
        evidence = client.resource(
            "Observation",
            status="final",
            code={"coding": [{"system": GATE_EVIDENCE, "code": "last-use-date"}]},
            subject={"reference": f"Patient/{person.id}"},
            effectiveDateTime="2026-01-20",
            valueDateTime="2025-06-01",
            component=[
                {
                    "code": {"coding": [{"system": GATE_EVIDENCE, "code": "substance"}]},
                    "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": substance}]},
                }
            ],
        )
        await evidence.save()
    assert (await client.execute(psy_task, method="get"))["status"] == "requested"
    for status in ("accepted", "in-progress", "completed"):
        await _patch(client, psy_task, "/status", status)

    review = client.resource(
        "Observation",
        status="final",
        code={"coding": [{"system": CODES, "code": "readiness-review"}]},
        subject={"reference": f"Patient/{person.id}"},
        effectiveDateTime="2026-01-21",
        performer=[{"display": "Community psychiatric nurse"}],
        valueCodeableConcept={"coding": [{"system": CODES, "code": "ready"}]},
    )
    await review.save()
    _, emdr_task = await refer(
        dat_role, psy, "psychology", code={"coding": [{"system": CODES, "code": "emdr"}]}
    )
    assert (await client.execute(emdr_task, method="get"))["status"] == "on-hold"
    await _patch(client, f"CarePlan/{plan.id}", "/activity/0/detail/status", "completed")
    assert (await client.execute(emdr_task, method="get"))["status"] == "requested"

    summary = await client.execute(f"Patient/{person.id}/$pathway", method="get")
    names = [p["name"] for p in summary["parameter"]]
    assert names.count("referral") == 2  # the DAT referral and the EMDR one are open
    assert "overdue" not in names
    review_part = next(p for p in summary["parameter"] if p["name"] == "readinessReview")
    assert {q["name"]: q.get("valueCode") for q in review_part["part"]}["value"] == "ready"
