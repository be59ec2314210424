"""The phase gate without holes: phase 2 does not start or complete before phase 1 unless an
override with the override scope is recorded; overrides on trauma-focussed work the gate did
not hold; readiness reviews that count; moving back with reasons of its own."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.db import transaction
from app.pathway.projections import rebuild
from app.pathway.repository import GateRepository, PhaseRepository
from app.runtime import Runtime
from tests.api.helpers import FHIR_JSON
from tests.pathway.phase_helpers import (
    CODES,
    EMDR,
    PHASE_GATE,
    complete_phase_one,
    current_task,
    move_task,
    override_body,
    plan_of,
    record_review,
    refer,
    set_phase,
    set_phases,
    start_pathway,
    stepped_clock,
)
from tests.pathway.referrals import SettableClock, hold_detail, new_patient, task_of


@pytest.fixture
def clock(runtime: Runtime) -> SettableClock:
    return stepped_clock(runtime)


async def _phase_rows(runtime: Runtime, patient_id: str) -> list[Any]:
    async with transaction(runtime.engine, write=False) as conn:
        return list(await PhaseRepository(conn).of_patient(patient_id))


@pytest.mark.parametrize("status", ["in-progress", "completed"])
async def test_phase_two_neither_starts_nor_completes_before_phase_one(
    client: httpx.AsyncClient, clock: SettableClock, status: str
) -> None:
    patient_id = await new_patient(client)
    await start_pathway(client, patient_id)
    refused = await set_phase(client, patient_id, "phase-2", status)
    assert refused.status_code == 422, refused.text
    issue = refused.json()["issue"][0]
    assert "phase 1 (safety and stabilisation) is not-started" in issue["diagnostics"]
    assert issue["expression"] == ["CarePlan.activity[1].detail.status"]
    # An override written by the client itself is not an override.
    forged = await set_phase(
        client,
        patient_id,
        "phase-2",
        status,
        extension=[
            {
                "url": "https://fhir.waymark.org.uk/StructureDefinition/phase-gate-override",
                "valueString": "Trust me",
            }
        ],
    )
    assert forged.status_code == 422
    assert "$override-gate" in forged.json()["issue"][0]["diagnostics"]


async def test_starting_phase_two_early_needs_the_override_scope_and_is_recorded(
    client: httpx.AsyncClient, scoped_client: Any, runtime: Runtime, clock: SettableClock
) -> None:
    patient_id = await new_patient(client)
    plan = await start_pathway(client, patient_id)
    url = f"/CarePlan/{plan['id']}/$override-gate"
    body = override_body("Stabilisation work done in the prison programme")
    plain = await scoped_client("system/*.cruds")
    refused = await plain.post(url, json=body, headers=FHIR_JSON)
    assert refused.status_code == 403
    assert "waymark/gate.override" in refused.json()["issue"][0]["diagnostics"]

    clinician = await scoped_client("system/*.cruds waymark/gate.override")
    done = await clinician.post(url, json=body, headers=FHIR_JSON)
    assert done.status_code == 200, done.text
    issue_ref = next(p for p in done.json()["parameter"] if p["name"] == "detectedIssue")
    issue = (await client.get(f"/{issue_ref['valueReference']['reference']}")).json()
    assert issue["code"]["coding"][0]["code"] == PHASE_GATE
    assert {"reference": f"CarePlan/{plan['id']}"} in issue["implicated"]
    note = issue["mitigation"][0]["action"]["text"]
    assert "test-ehr" in note
    assert "prison programme" in note
    now = await plan_of(client, patient_id)
    assert now["activity"][1]["detail"]["status"] == "in-progress"
    rows = [r for r in await _phase_rows(runtime, patient_id) if r.phase == "phase-2"]
    assert (rows[-1].to_status, rows[-1].reason) == (
        "in-progress",
        "override: Stabilisation work done in the prison programme",
    )
    assert (await clinician.post(url, json=body, headers=FHIR_JSON)).status_code == 422

    # The override let that one start through; a restart later needs an override of its own.
    paused = await set_phase(
        client, patient_id, "phase-2", "on-hold", statusReason={"text": "Crisis"}
    )
    assert paused.status_code == 200
    again = await set_phase(client, patient_id, "phase-2", "in-progress")
    assert again.status_code == 422


async def test_the_phase_gate_can_be_overridden_on_work_it_did_not_hold(
    client: httpx.AsyncClient, scoped_client: Any, runtime: Runtime, clock: SettableClock
) -> None:
    patient_id = await new_patient(client)
    await start_pathway(client, patient_id)
    await complete_phase_one(client, patient_id, "2026-02-01")
    emdr = await refer(client, patient_id, "solway-dat", "solway-psy", "psychology", code=EMDR)
    assert (await current_task(client, emdr))["status"] == "requested"  # the gate was met
    reopened = await set_phase(
        client, patient_id, "phase-1", "in-progress", statusReason={"text": "Relapse"}
    )
    assert reopened.status_code == 200
    assert (await move_task(client, task_of(emdr), "accepted")).status_code == 200
    assert (await move_task(client, task_of(emdr), "in-progress")).status_code == 422

    clinician = await scoped_client("system/*.cruds waymark/gate.override")
    url = f"/Task/{task_of(emdr)}/$override-gate"
    done = await clinician.post(url, json=override_body("Agreed at MDT"), headers=FHIR_JSON)
    assert done.status_code == 200, done.text
    assert (await move_task(client, task_of(emdr), "in-progress")).status_code == 200

    async def rows() -> list[Any]:
        async with transaction(runtime.engine, write=False) as conn:
            return list(await GateRepository(conn).of_referral(emdr["id"]))

    live = await rows()
    phase_gate = [r for r in live if r.gate_code == PHASE_GATE]
    assert [(r.seq, r.action, r.outcome, r.released_by) for r in phase_gate] == [
        (0, "evaluated", "met", None),
        (1, "overridden", "not-met", "override"),
    ]
    async with transaction(runtime.engine, write=True) as conn:
        await rebuild(runtime.store(conn))
    assert await rows() == live


async def test_an_abstinence_gate_that_does_not_hold_cannot_be_overridden(
    client: httpx.AsyncClient, scoped_client: Any, clock: SettableClock
) -> None:
    patient_id = await new_patient(client)
    request = await refer(client, patient_id, "solway-dat", "solway-psy", "psychology")
    clinician = await scoped_client("system/*.cruds waymark/gate.override")
    body = override_body("No reason to")
    body["parameter"][0]["valueCode"] = "gate-abstinence-psychology-solway"
    refused = await clinician.post(
        f"/Task/{task_of(request)}/$override-gate", json=body, headers=FHIR_JSON
    )
    assert refused.status_code == 422


async def test_a_review_entered_in_error_does_not_complete_phase_one(
    client: httpx.AsyncClient, clock: SettableClock
) -> None:
    patient_id = await new_patient(client)
    await start_pathway(client, patient_id)
    await complete_phase_one(client, patient_id, "2026-02-01")
    [review] = (
        await client.get("/Observation", params={"code": f"{CODES}|readiness-review"})
    ).json()["entry"]
    withdrawn = {**review["resource"], "status": "entered-in-error"}
    response = await client.put(
        f"/Observation/{withdrawn['id']}", json=withdrawn, headers=FHIR_JSON
    )
    assert response.status_code == 200
    emdr = await refer(client, patient_id, "solway-dat", "solway-psy", "psychology", code=EMDR)
    task = await current_task(client, emdr)
    assert task["status"] == "on-hold"
    assert "readiness review is missing" in await hold_detail(client, emdr)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"valueCodeableConcept": {"text": "ready"}}, "Observation.valueCodeableConcept"),
        (
            {"valueCodeableConcept": {"coding": [{"system": CODES, "code": "maybe"}]}},
            "Observation.valueCodeableConcept",
        ),
        ({"performer": None}, "Observation.performer"),
        ({"effectiveDateTime": None}, "Observation.effective[x]"),
    ],
)
async def test_a_readiness_review_says_what_who_and_when(
    client: httpx.AsyncClient, change: dict[str, Any], where: str
) -> None:
    patient_id = await new_patient(client)
    review = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": CODES, "code": "readiness-review"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-02-01",
        "performer": [{"display": "Community psychiatric nurse"}],
        "valueCodeableConcept": {"coding": [{"system": CODES, "code": "ready"}]},
    }
    review.update(change)
    body = {k: v for k, v in review.items() if v is not None}
    refused = await client.post("/Observation", json=body, headers=FHIR_JSON)
    assert refused.status_code == 422, refused.text
    assert refused.json()["issue"][0]["expression"] == [where]


async def test_moving_back_needs_a_reason_of_its_own_and_keeps_coded_reasons(
    client: httpx.AsyncClient, runtime: Runtime, clock: SettableClock
) -> None:
    patient_id = await new_patient(client)
    await start_pathway(client, patient_id)
    await complete_phase_one(client, patient_id, "2026-02-01")
    assert (await set_phase(client, patient_id, "phase-2", "in-progress")).status_code == 200
    # Reopening phase 1 alone would leave trauma-focussed work running.
    alone = await set_phase(
        client, patient_id, "phase-1", "in-progress", statusReason={"text": "Relapse"}
    )
    assert alone.status_code == 422
    assert alone.json()["issue"][0]["expression"] == ["CarePlan.activity[1].detail.status"]
    coded = {"coding": [{"system": CODES, "code": "destabilised"}]}
    together = await set_phases(
        client,
        patient_id,
        {
            "phase-1": {"status": "in-progress", "statusReason": {"text": "Relapse"}},
            "phase-2": {"status": "on-hold", "statusReason": coded},
        },
    )
    assert together.status_code == 200, together.text
    assert (await set_phase(client, patient_id, "phase-1", "completed")).status_code == 200
    await record_review(client, patient_id, "ready", "2026-02-02")
    assert (await set_phase(client, patient_id, "phase-2", "in-progress")).status_code == 200
    stale = await set_phase(client, patient_id, "phase-2", "on-hold")  # the old coded reason
    assert stale.status_code == 422
    assert stale.json()["issue"][0]["expression"] == ["CarePlan.activity[1].detail.statusReason"]
    rows = [(r.phase, r.to_status, r.reason) for r in await _phase_rows(runtime, patient_id)]
    assert ("phase-2", "on-hold", f"{CODES}|destabilised") in rows
    assert ("phase-2", "in-progress", None) in rows  # no reason left over from the hold
