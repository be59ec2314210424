"""$pathway for people at each point of the pathway, its phase history, what is overdue, and
the parts it leaves out for a narrow token (checked before anything is read)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.runtime import Runtime
from tests.api.helpers import FHIR_JSON
from tests.pathway.phase_helpers import (
    parts_of,
    record_review,
    set_phase,
    set_phases,
    start_pathway,
    stepped_clock,
)
from tests.pathway.referrals import (
    LIBERATION_DATE,
    SettableClock,
    new_patient,
    referral,
    role_in,
    service,
)

CODES = "https://fhir.waymark.org.uk/CodeSystem/pathway-codes"
ANNUAL_REVIEW = "https://fhir.waymark.org.uk/StructureDefinition/annual-review"


@pytest.fixture
def clock(runtime: Runtime) -> SettableClock:
    return stepped_clock(runtime)


async def _summary(http: httpx.AsyncClient, patient_id: str) -> dict[str, Any]:
    response = await http.get(f"/Patient/{patient_id}/$pathway")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def _values(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary's single-valued top-level parameters, by name."""
    return {
        p["name"]: next((v for k, v in p.items() if k.startswith("value")), None)
        for p in summary["parameter"]
        if "part" not in p
    }


def _where(summary: dict[str, Any]) -> tuple[str | None, str | None, bool | None]:
    values = _values(summary)
    phase = values.get("currentPhase")
    return (
        phase["code"] if phase else None,
        values.get("currentPhaseStatus"),
        values.get("phase1Complete"),
    )


async def test_pathway_at_each_point(client: httpx.AsyncClient, clock: SettableClock) -> None:
    patient_id = await new_patient(client)
    assert _where(await _summary(client, patient_id)) == (None, None, None)  # no plan yet

    await start_pathway(client, patient_id)
    assert _where(await _summary(client, patient_id)) == ("phase-1", "not-started", False)
    await set_phase(client, patient_id, "phase-1", "in-progress")
    assert _where(await _summary(client, patient_id)) == ("phase-1", "in-progress", False)
    await set_phase(client, patient_id, "phase-1", "completed")
    waiting = await _summary(client, patient_id)
    assert _where(waiting) == ("phase-1", "completed", False)
    assert "readiness review is missing" in _values(waiting)["phase1Missing"]

    await record_review(client, patient_id, "ready", "2026-02-02")
    assert _where(await _summary(client, patient_id)) == ("phase-1", "completed", True)
    await set_phase(client, patient_id, "phase-2", "in-progress")
    assert _where(await _summary(client, patient_id)) == ("phase-2", "in-progress", True)

    moved_back = await set_phases(
        client,
        patient_id,
        {
            "phase-1": {"status": "in-progress", "statusReason": {"text": "Relapse"}},
            "phase-2": {"status": "on-hold", "statusReason": {"text": "Back to stabilising"}},
        },
    )
    assert moved_back.status_code == 200, moved_back.text
    back = await _summary(client, patient_id)
    assert _where(back) == ("phase-1", "in-progress", False)
    history = [parts_of(p) for p in back["parameter"] if p["name"] == "phaseEvent"]
    assert [(h["phase"]["code"], h.get("from"), h["to"], h.get("reason")) for h in history] == [
        ("phase-1", None, "not-started", None),
        ("phase-2", None, "not-started", None),
        ("phase-3", None, "not-started", None),
        ("phase-1", "not-started", "in-progress", None),
        ("phase-1", "in-progress", "completed", None),
        ("phase-2", "not-started", "in-progress", None),
        ("phase-1", "completed", "in-progress", "Relapse"),
        ("phase-2", "in-progress", "on-hold", "Back to stabilising"),
    ]

    await set_phase(client, patient_id, "phase-1", "completed")
    await record_review(client, patient_id, "ready", "2026-02-03")
    await set_phase(client, patient_id, "phase-2", "completed")
    await set_phase(client, patient_id, "phase-3", "in-progress")
    assert _where(await _summary(client, patient_id)) == ("phase-3", "in-progress", True)


async def test_phase_one_a_year_without_review_is_overdue_only_when_reviews_are_read(
    client: httpx.AsyncClient, scoped_client: Any, clock: SettableClock
) -> None:
    patient_id = await new_patient(client)
    await start_pathway(client, patient_id)
    await set_phase(client, patient_id, "phase-1", "in-progress")
    clock.now += timedelta(days=400)
    overdue = [
        parts_of(p)
        for p in (await _summary(client, patient_id))["parameter"]
        if p["name"] == "overdue"
    ]
    assert [o["kind"] for o in overdue] == ["phase-1-without-review"]
    assert overdue[0]["since"] == "2026-02-02T09:00:00.000Z"

    # Without the Observation scope the reviews are not read, so nothing is claimed of them.
    narrow = await scoped_client("system/Patient.r system/CarePlan.r")
    limited = await _summary(narrow, patient_id)
    names = {p["name"] for p in limited["parameter"]}
    assert "overdue" not in names
    assert "phase1Complete" not in names
    assert _where(limited)[:2] == ("phase-1", "in-progress")

    await record_review(client, patient_id, "not-ready", "2027-03-01")
    overdue_after = [
        p for p in (await _summary(client, patient_id))["parameter"] if p["name"] == "overdue"
    ]
    assert overdue_after == []


async def test_a_throughcare_referral_shows_the_liberation_date(
    client: httpx.AsyncClient, clock: SettableClock
) -> None:
    patient_id = await new_patient(client)
    requester = await role_in(client, await service(client, "solway-prison"))
    body = referral(
        patient_id,
        requester,
        await service(client, "solway-dat"),
        "drug-alcohol",
        extension=[{"url": LIBERATION_DATE, "valueDate": "2026-03-01"}],
    )
    created = await client.post("/ServiceRequest", json=body, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    timeline = (await client.get(f"/ServiceRequest/{created.json()['id']}/$timeline")).json()
    assert {"name": "liberationDate", "valueDate": "2026-03-01"} in timeline["parameter"]
    summary = await _summary(client, patient_id)
    throughcare = parts_of(next(p for p in summary["parameter"] if p["name"] == "referral"))
    assert throughcare["liberationDate"] == "2026-03-01"


def _episode(patient_id: str, organization: Any, **review: str) -> dict[str, Any]:
    episode: dict[str, Any] = {
        "resourceType": "EpisodeOfCare",
        "status": "active",
        "type": [{"coding": [{"system": CODES, "code": "shared-care"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "extension": [
            {
                "url": ANNUAL_REVIEW,
                "extension": [{"url": k, "valueDate": v} for k, v in review.items()],
            }
        ],
    }
    if organization:
        episode["managingOrganization"] = organization
    return episode


async def test_shared_care_follows_its_convention_and_counts_from_the_last_review(
    client: httpx.AsyncClient, clock: SettableClock
) -> None:
    patient_id = await new_patient(client)
    gp = (await client.get(f"/HealthcareService/{await service(client, 'solway-gp1')}")).json()
    practice = gp["providedBy"]
    for bad, where in [
        (_episode(patient_id, None, last="2025-01-20"), "EpisodeOfCare.managingOrganization"),
        (_episode(patient_id, practice, due="2026-01-20"), "EpisodeOfCare.extension[0]"),
        (
            _episode(patient_id, practice, last="2025-01-20", next="2024-01-20"),
            "EpisodeOfCare.extension[0]",
        ),
    ]:
        refused = await client.post("/EpisodeOfCare", json=bad, headers=FHIR_JSON)
        assert refused.status_code == 422, refused.text
        assert refused.json()["issue"][0]["expression"] == [where]
    # Only the last review is known: the next is due a year after it, 2026-01-20, now past.
    made = await client.post(
        "/EpisodeOfCare", json=_episode(patient_id, practice, last="2025-01-20"), headers=FHIR_JSON
    )
    assert made.status_code == 201, made.text
    summary = await _summary(client, patient_id)
    shared = parts_of(next(p for p in summary["parameter"] if p["name"] == "sharedCare"))
    assert (shared["lastReview"], shared["reviewDue"]) == ("2025-01-20", "2026-01-20")
    assert shared["practice"] == practice
    overdue = [parts_of(p) for p in summary["parameter"] if p["name"] == "overdue"]
    assert overdue == [
        {
            "kind": "shared-care-review",
            "item": {"reference": f"EpisodeOfCare/{made.json()['id']}"},
            "since": "2026-01-20",
        }
    ]
