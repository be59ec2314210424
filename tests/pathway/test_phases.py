"""Phases: one pathway CarePlan per person, phase 1 before trauma-focussed work (held, then
released), moving back with a reason, overrides, $pathway, and the phase timeline rebuilt."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.db import transaction
from app.pathway.projections import rebuild
from app.pathway.repository import PhaseRepository
from app.runtime import Runtime
from tests.api.helpers import FHIR_JSON
from tests.pathway.phase_helpers import (
    CODES,
    EMDR,
    PHASE_GATE,
    current_task,
    move_task,
    override_body,
    parts_of,
    plan_of,
    record_review,
    refer,
    set_phase,
    stepped_clock,
)
from tests.pathway.referrals import SettableClock, new_patient, service, task_of


@pytest.fixture
def clock(runtime: Runtime) -> SettableClock:
    return stepped_clock(runtime)


async def test_phase_one_comes_before_trauma_focussed_work(
    client: httpx.AsyncClient, clock: SettableClock
) -> None:
    patient_id = await new_patient(client)
    to_dat = await refer(client, patient_id, "solway-gp1", "solway-dat", "drug-alcohol")
    assert (await move_task(client, task_of(to_dat), "accepted")).status_code == 200
    plan = await plan_of(client, patient_id)  # made when the first referral was accepted
    assert [a["detail"]["status"] for a in plan["activity"]] == ["not-started"] * 3
    second = {**plan, "id": None}
    del second["id"], second["meta"]
    refused = await client.post("/CarePlan", json=second, headers=FHIR_JSON)
    assert refused.status_code == 422
    assert f"CarePlan/{plan['id']}" in refused.json()["issue"][0]["diagnostics"]

    # Phase 1 starts, with a safety plan and a stabilisation session linked from it.
    safety = await client.post(
        "/DocumentReference",
        json={
            "resourceType": "DocumentReference",
            "status": "current",
            "type": {"coding": [{"system": CODES, "code": "safety-plan"}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "content": [{"attachment": {"contentType": "text/plain", "data": "U2FmZXR5"}}],
        },
        headers=FHIR_JSON,
    )
    started = await set_phase(
        client,
        patient_id,
        "phase-1",
        "in-progress",
        outcomeReference=[{"reference": f"DocumentReference/{safety.json()['id']}"}],
    )
    assert started.status_code == 200, started.text

    # Trauma-focussed work referred now is held by the phase gate, not dropped.
    emdr = await refer(client, patient_id, "solway-dat", "solway-psy", "psychology", code=EMDR)
    task = await current_task(client, emdr)
    assert task["status"] == "on-hold"
    assert "Safety and stabilisation" in task["statusReason"]["text"]
    early = await set_phase(client, patient_id, "phase-2", "in-progress")
    assert early.status_code == 422
    assert "phase 1" in early.json()["issue"][0]["diagnostics"]

    clock.now += timedelta(days=60)
    await record_review(client, patient_id, "not-ready", "2026-04-01")
    assert (await set_phase(client, patient_id, "phase-1", "completed")).status_code == 200
    assert (await current_task(client, emdr))["status"] == "on-hold"  # the review says not ready
    await record_review(client, patient_id, "ready", "2026-04-03")
    released = await current_task(client, emdr)
    assert released["status"] == "requested"  # released when phase 1 became complete
    assert (await move_task(client, task_of(emdr), "accepted")).status_code == 200
    assert (await move_task(client, task_of(emdr), "in-progress")).status_code == 200
    assert (await set_phase(client, patient_id, "phase-2", "in-progress")).status_code == 200

    # Destabilised: back to phase 1, which needs a reason.
    no_reason = await set_phase(client, patient_id, "phase-2", "on-hold")
    assert no_reason.status_code == 422
    back = await set_phase(
        client,
        patient_id,
        "phase-2",
        "on-hold",
        statusReason={"text": "Crisis; back to stabilisation"},
    )
    assert back.status_code == 200

    summary = (await client.get(f"/Patient/{patient_id}/$pathway")).json()
    values = {p["name"]: p for p in summary["parameter"]}
    assert values["carePlan"]["valueReference"]["reference"] == f"CarePlan/{plan['id']}"
    assert parts_of(values["readinessReview"])["value"] == "ready"
    referrals = [parts_of(p) for p in summary["parameter"] if p["name"] == "referral"]
    assert {r["referral"]["reference"] for r in referrals} == {
        f"ServiceRequest/{to_dat['id']}",
        f"ServiceRequest/{emdr['id']}",
    }
    gates = [parts_of(p) for p in summary["parameter"] if p["name"] == "gate"]
    phase_gates = [g for g in gates if g["kind"] == "phase"]
    assert phase_gates[0]["releasedBy"] == "evidence"
    assert not any(p["name"] == "omitted" for p in summary["parameter"])


async def test_an_override_lets_trauma_focussed_work_start(
    client: httpx.AsyncClient, scoped_client: Any, clock: SettableClock
) -> None:
    patient_id = await new_patient(client)
    emdr = await refer(client, patient_id, "solway-dat", "solway-psy", "psychology", code=EMDR)
    assert (await current_task(client, emdr))["status"] == "on-hold"
    clinician = await scoped_client("system/*.cruds waymark/gate.override")
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "gate", "valueCode": PHASE_GATE},
            {"name": "reason", "valueString": "Stabilisation done in the prison programme"},
        ],
    }
    done = await clinician.post(
        f"/Task/{task_of(emdr)}/$override-gate", json=body, headers=FHIR_JSON
    )
    assert done.status_code == 200, done.text
    assert (await move_task(client, task_of(emdr), "accepted")).status_code == 200
    assert (await move_task(client, task_of(emdr), "in-progress")).status_code == 200


async def test_trauma_focussed_work_cannot_start_without_phase_one(
    client: httpx.AsyncClient, scoped_client: Any, clock: SettableClock
) -> None:
    patient_id = await new_patient(client)
    # A referral made while the phase gate was suspended, then moved on: the Task rule
    # still stops trauma-focussed work from starting before phase 1.
    gate = (await client.get(f"/PlanDefinition/{PHASE_GATE}")).json()
    gate["extension"][0]["valueCode"] = "suspended"
    await client.put(f"/PlanDefinition/{PHASE_GATE}", json=gate, headers=FHIR_JSON)
    emdr = await refer(client, patient_id, "solway-dat", "solway-psy", "psychology", code=EMDR)
    assert (await move_task(client, task_of(emdr), "accepted")).status_code == 200
    refused = await move_task(client, task_of(emdr), "in-progress")
    assert refused.status_code == 422
    assert "phase 1" in refused.json()["issue"][0]["diagnostics"]
    # The gate held nothing (suspended), yet a clinician can still override it, on the record.
    clinician = await scoped_client("system/*.cruds waymark/gate.override")
    done = await clinician.post(
        f"/Task/{task_of(emdr)}/$override-gate",
        json=override_body("Stabilised with the prison team"),
        headers=FHIR_JSON,
    )
    assert done.status_code == 200, done.text
    assert (await move_task(client, task_of(emdr), "in-progress")).status_code == 200


async def test_pathway_respects_scopes_and_shows_what_is_overdue(
    client: httpx.AsyncClient, scoped_client: Any, clock: SettableClock
) -> None:
    patient_id = await new_patient(client, meets_gates=False)
    held = await refer(client, patient_id, "solway-dat", "solway-psy", "psychology")
    assert (await current_task(client, held))["status"] == "on-hold"
    clock.now += timedelta(days=100)
    summary = (await client.get(f"/Patient/{patient_id}/$pathway")).json()
    overdue = [parts_of(p) for p in summary["parameter"] if p["name"] == "overdue"]
    assert [o["kind"] for o in overdue] == ["held-over-90-days"]
    assert overdue[0]["item"]["reference"] == f"ServiceRequest/{held['id']}"
    referral_part = next(parts_of(p) for p in summary["parameter"] if p["name"] == "referral")
    assert referral_part["businessStatus"]["code"] == "held-by-gate"

    narrow = await scoped_client("system/Patient.r system/CarePlan.r")
    limited = (await narrow.get(f"/Patient/{patient_id}/$pathway")).json()
    names = {p["name"] for p in limited["parameter"]}
    assert "referral" not in names
    assert "gate" not in names
    omitted = {
        p["valueString"].split(":")[0] for p in limited["parameter"] if p["name"] == "omitted"
    }
    assert omitted == {"Observation", "EpisodeOfCare", "ServiceRequest", "Task"}
    nobody = await scoped_client("system/CarePlan.r")
    assert (await nobody.get(f"/Patient/{patient_id}/$pathway")).status_code == 403


async def test_phase_timeline_rebuilt_equal(
    client: httpx.AsyncClient, runtime: Runtime, clock: SettableClock
) -> None:
    patient_id = await new_patient(client)
    to_dat = await refer(client, patient_id, "solway-gp1", "solway-dat", "drug-alcohol")
    await move_task(client, task_of(to_dat), "accepted")
    await set_phase(client, patient_id, "phase-1", "in-progress")
    await set_phase(client, patient_id, "phase-1", "completed")
    await set_phase(client, patient_id, "phase-1", "in-progress", statusReason={"text": "Relapse"})

    async def snapshot() -> list[Any]:
        async with transaction(runtime.engine, write=False) as conn:
            return list(await PhaseRepository(conn).all())

    live = await snapshot()
    assert [(r.from_status, r.to_status) for r in live if r.phase == "phase-1"] == [
        (None, "not-started"),
        ("not-started", "in-progress"),
        ("in-progress", "completed"),
        ("completed", "in-progress"),
    ]
    async with transaction(runtime.engine, write=True) as conn:
        await rebuild(runtime.store(conn))
    assert await snapshot() == live


async def test_an_annual_shared_care_review_past_due_is_overdue(
    client: httpx.AsyncClient, clock: SettableClock
) -> None:
    patient_id = await new_patient(client)
    gp = (await client.get(f"/HealthcareService/{await service(client, 'solway-gp1')}")).json()
    episode = {
        "resourceType": "EpisodeOfCare",
        "status": "active",
        "type": [{"coding": [{"system": CODES, "code": "shared-care"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "managingOrganization": gp["providedBy"],
        "extension": [
            {
                "url": "https://fhir.waymark.org.uk/StructureDefinition/annual-review",
                "extension": [
                    {"url": "last", "valueDate": "2025-01-20"},
                    {"url": "next", "valueDate": "2026-01-20"},
                ],
            }
        ],
    }
    created = await client.post("/EpisodeOfCare", json=episode, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    summary = (await client.get(f"/Patient/{patient_id}/$pathway")).json()
    overdue = [parts_of(p) for p in summary["parameter"] if p["name"] == "overdue"]
    assert overdue == [
        {
            "kind": "shared-care-review",
            "item": {"reference": f"EpisodeOfCare/{created.json()['id']}"},
            "since": "2026-01-20",
        }
    ]
