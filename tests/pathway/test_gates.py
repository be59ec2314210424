"""Gates: each outcome and mode, evidence arriving late, time passing, opioid substitution,
re-evaluation releasing once, overrides, bad definitions, and the decisions rebuilt equal."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.db import transaction
from app.pathway.gate_release import reevaluate_held, reevaluate_referral
from app.pathway.projections import rebuild
from app.pathway.repository import GateRepository
from app.runtime import Runtime
from tests.api.helpers import FHIR_JSON
from tests.pathway.referrals import (
    ALCOHOL,
    ANY_DRUG,
    SNOMED,
    SettableClock,
    hold_detail,
    new_patient,
    record_last_use,
    record_use_days,
    referral,
    role_in,
    service,
    task_of,
)

GATE_ID = "https://fhir.waymark.org.uk/Id/gate"
SOLWAY_GATE = "gate-abstinence-psychology-solway"


async def _refer(
    http: httpx.AsyncClient, patient_id: str, source: str, target: str, kind: str, **headers: str
) -> httpx.Response:
    requester = await role_in(http, await service(http, source))
    body = referral(patient_id, requester, await service(http, target), kind)
    return await http.post("/ServiceRequest", json=body, headers={**FHIR_JSON, **headers})


async def _task(http: httpx.AsyncClient, request: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = (await http.get(f"/Task/{task_of(request)}")).json()
    return found


async def _issues(http: httpx.AsyncClient, request_id: str) -> list[dict[str, Any]]:
    found = await http.get("/DetectedIssue", params={"implicated": f"ServiceRequest/{request_id}"})
    return [e["resource"] for e in found.json().get("entry", [])]


async def test_enforced_gate_without_evidence_holds_and_names_what_is_needed(
    client: httpx.AsyncClient, clock: SettableClock
) -> None:
    patient_id = await new_patient(client, meets_gates=False)
    created = await _refer(client, patient_id, "solway-dat", "solway-psy", "psychology")
    assert created.status_code == 201, created.text
    task = await _task(client, created.json())
    assert task["status"] == "on-hold"
    assert task["businessStatus"]["coding"][0]["code"] == "held-by-gate"
    assert "Three months abstinent" in task["statusReason"]["text"]
    [issue] = await _issues(client, created.json()["id"])
    assert issue["severity"] == "high"
    assert issue["code"]["coding"][0] == {
        "system": GATE_ID,
        "code": SOLWAY_GATE,
        "display": "Three months abstinent before psychological therapy (Solway)",
    }
    assert "last-use-date" in issue["detail"]
    evaluation = await client.post(f"/ServiceRequest/{created.json()['id']}/$evaluate-gates")
    parts = {p["name"]: p for p in evaluation.json()["parameter"][0]["part"]}
    assert parts["outcome"]["valueCode"] == "unknown"
    assert "53041004" in parts["needed"]["valueString"]


async def test_late_evidence_releases_the_held_referral(
    client: httpx.AsyncClient, clock: SettableClock
) -> None:
    patient_id = await new_patient(client, meets_gates=False)
    await record_last_use(client, patient_id, ALCOHOL, "2026-05-01")  # one month ago
    await record_last_use(client, patient_id, ANY_DRUG, "2025-01-01")
    created = (await _refer(client, patient_id, "solway-dat", "solway-psy", "psychology")).json()
    assert (await _task(client, created))["status"] == "on-hold"
    evaluation = await client.post(f"/ServiceRequest/{created['id']}/$evaluate-gates")
    parts = {p["name"]: p for p in evaluation.json()["parameter"][0]["part"]}
    assert parts["outcome"]["valueCode"] == "not-met"
    assert parts["metOn"]["valueDate"] == "2026-08-01"

    # A later, corrected record of the last use arrives: the hold is released at once.
    await record_last_use(client, patient_id, ALCOHOL, "2026-01-10", "2026-06-01T08:00:00Z")
    task = await _task(client, created)
    assert task["status"] == "requested"
    assert task["businessStatus"]["coding"][0]["code"] == "awaiting-triage"
    [issue] = await _issues(client, created["id"])
    assert issue["mitigation"][0]["action"]["text"].startswith("Released")
    timeline = (await client.get(f"/ServiceRequest/{created['id']}/$timeline")).json()
    moves = [
        {q["name"]: q for q in p["part"]}["to"]["valueCode"]
        for p in timeline["parameter"]
        if p["name"] == "event"
    ]
    assert moves == ["on-hold", "requested"]


async def test_time_passing_releases_on_the_scheduled_reevaluation(
    client: httpx.AsyncClient, runtime: Runtime, clock: SettableClock
) -> None:
    patient_id = await new_patient(client, meets_gates=False)
    await record_last_use(client, patient_id, ALCOHOL, "2026-04-15")
    await record_last_use(client, patient_id, ANY_DRUG, "2026-04-15")
    created = (await _refer(client, patient_id, "solway-dat", "solway-psy", "psychology")).json()
    assert (await _task(client, created))["status"] == "on-hold"

    async def run() -> tuple[int, int, str | None]:
        async with transaction(runtime.engine, write=True) as conn:
            return await reevaluate_held(runtime.store(conn), after="", limit=100)

    assert await run() == (1, 0, None)  # not yet: met on 2026-07-15
    clock.now += timedelta(days=45)
    assert await run() == (1, 1, None)
    assert (await _task(client, created))["status"] == "requested"
    assert await run() == (0, 0, None)  # idempotent


async def test_advisory_gate_lets_the_referral_through_with_a_warning(
    client: httpx.AsyncClient, clock: SettableClock
) -> None:
    patient_id = await new_patient(client, meets_gates=False)
    created = await _refer(
        client,
        patient_id,
        "northisles-dat",
        "northisles-psy",
        "psychology",
        Prefer="return=OperationOutcome",
    )
    assert created.status_code == 201
    outcome = created.json()
    warnings = [i for i in outcome["issue"] if i["severity"] == "warning"]
    assert len(warnings) == 1
    assert "Advisory gate not met" in warnings[0]["diagnostics"]
    request_id = created.headers["location"].split("/")[-3]
    request = (await client.get(f"/ServiceRequest/{request_id}")).json()
    assert (await _task(client, request))["status"] == "requested"
    [issue] = await _issues(client, request_id)
    assert issue["severity"] == "low"


async def test_occasional_use_variant_for_cmht(
    client: httpx.AsyncClient, clock: SettableClock
) -> None:
    occasional = await new_patient(client, meets_gates=False)
    for substance in (ALCOHOL, ANY_DRUG):
        await record_use_days(client, occasional, substance, 3)
    created = (await _refer(client, occasional, "solway-dat", "solway-cmht", "cmht")).json()
    assert (await _task(client, created))["status"] == "requested"

    daily = await new_patient(client, "9912003888", meets_gates=False)
    await record_use_days(client, daily, ALCOHOL, 20)
    await record_use_days(client, daily, ANY_DRUG, 0)
    held = (await _refer(client, daily, "solway-dat", "solway-cmht", "cmht")).json()
    task = await _task(client, held)
    assert task["status"] == "on-hold"
    assert "20 days of use" in await hold_detail(client, held)


async def _set_gate(http: httpx.AsyncClient, gate_id: str, **changes: Any) -> httpx.Response:
    plan = (await http.get(f"/PlanDefinition/{gate_id}")).json()
    for extension in plan["extension"]:
        if extension["url"].endswith("gate-mode") and "mode" in changes:
            extension["valueCode"] = changes["mode"]
        if extension["url"].endswith("gate-abstinence") and "ost" in changes:
            for part in extension["extension"]:
                if part["url"] == "opioid-substitution-counts-as-use":
                    part["valueBoolean"] = changes["ost"]
    return await http.put(f"/PlanDefinition/{gate_id}", json=plan, headers=FHIR_JSON)


async def test_opioid_substitution_counts_only_when_the_gate_says_so(
    client: httpx.AsyncClient, clock: SettableClock
) -> None:
    patient_id = await new_patient(client)  # abstinent from illicit use for a year
    methadone = {
        "resourceType": "MedicationStatement",
        "status": "active",
        "medicationCodeableConcept": {"coding": [{"system": SNOMED, "code": "387286002"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    await client.post("/MedicationStatement", json=methadone, headers=FHIR_JSON)
    first = (await _refer(client, patient_id, "solway-dat", "solway-psy", "psychology")).json()
    assert (await _task(client, first))["status"] == "requested"  # OST is not use by default
    cancel = await _task(client, first)
    cancel.update(status="cancelled", statusReason={"text": "Testing the other setting"})
    await client.put(f"/Task/{cancel['id']}", json=cancel, headers=FHIR_JSON)

    assert (await _set_gate(client, SOLWAY_GATE, ost=True)).status_code == 200
    second = (await _refer(client, patient_id, "solway-dat", "solway-psy", "psychology")).json()
    task = await _task(client, second)
    assert task["status"] == "on-hold"
    assert "opioid substitution" in await hold_detail(client, second)


async def test_a_mode_change_applies_to_new_evaluations_only(
    client: httpx.AsyncClient, runtime: Runtime, clock: SettableClock
) -> None:
    first_patient = await new_patient(client, meets_gates=False)
    first = (await _refer(client, first_patient, "solway-dat", "solway-psy", "psychology")).json()
    assert (await _set_gate(client, SOLWAY_GATE, mode="suspended")).status_code == 200
    second_patient = await new_patient(client, "9912003888", meets_gates=False)
    second = (await _refer(client, second_patient, "solway-dat", "solway-psy", "psychology")).json()
    assert (await _task(client, second))["status"] == "requested"
    assert await _issues(client, second["id"]) == []  # suspended: recorded, not applied
    async with transaction(runtime.engine, write=False) as conn:
        rows = {r.service_request_id: r for r in await GateRepository(conn).all()}
    assert (rows[first["id"]].mode, rows[first["id"]].held) == ("enforced", True)
    assert (rows[second["id"]].mode, rows[second["id"]].held) == ("suspended", False)
    assert rows[second["id"]].outcome == "unknown"
    # The first referral was held under the enforced mode; re-evaluation now lets it go.
    async with transaction(runtime.engine, write=True) as conn:
        assert await reevaluate_referral(runtime.store(conn), first["id"])
    async with transaction(runtime.engine, write=False) as conn:
        released = {r.service_request_id: r for r in await GateRepository(conn).all()}
    assert released[first["id"]].released_by == "mode"


async def test_concurrent_reevaluations_release_once(
    client: httpx.AsyncClient, runtime: Runtime, clock: SettableClock
) -> None:
    patient_id = await new_patient(client, meets_gates=False)
    await record_last_use(client, patient_id, ALCOHOL, "2026-04-15")
    await record_last_use(client, patient_id, ANY_DRUG, "2026-04-15")
    created = (await _refer(client, patient_id, "solway-dat", "solway-psy", "psychology")).json()
    clock.now += timedelta(days=60)

    async def attempt() -> bool:
        async with transaction(runtime.engine, write=True) as conn:
            return await reevaluate_referral(runtime.store(conn), created["id"])

    results = await asyncio.gather(attempt(), attempt())
    assert sorted(results) == [False, True]
    task = await _task(client, created)
    assert task["status"] == "requested"
    assert task["meta"]["versionId"] == "2"  # released once: one new version


async def test_override_needs_its_scope_and_records_who_and_why(
    client: httpx.AsyncClient, scoped_client: Any, clock: SettableClock
) -> None:
    patient_id = await new_patient(client, meets_gates=False)
    created = (await _refer(client, patient_id, "solway-dat", "solway-psy", "psychology")).json()
    task_id = task_of(created)
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "gate", "valueCode": SOLWAY_GATE},
            {"name": "reason", "valueString": "Stable on OST; therapy agreed at MDT"},
        ],
    }
    url = f"/Task/{task_id}/$override-gate"
    plain = await scoped_client("system/*.cruds")
    refused = await plain.post(url, json=body, headers=FHIR_JSON)
    assert refused.status_code == 403
    assert "waymark/gate.override" in refused.json()["issue"][0]["diagnostics"]
    assert (await _task(client, created))["status"] == "on-hold"

    clinician = await scoped_client("system/*.cruds waymark/gate.override")
    done = await clinician.post(url, json=body, headers=FHIR_JSON)
    assert done.status_code == 200, done.text
    assert (await _task(client, created))["status"] == "requested"
    [issue] = await _issues(client, created["id"])
    note = issue["mitigation"][0]
    assert "Stable on OST; therapy agreed at MDT" in note["action"]["text"]
    assert "test-ehr" in note["action"]["text"]
    again = await clinician.post(url, json=body, headers=FHIR_JSON)
    assert again.status_code == 422  # nothing is held any more


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"mode": "sometimes"}, "PlanDefinition.extension[0].valueCode"),
        ({"substance": "999999"}, "PlanDefinition.extension[2].extension[0].valueCoding"),
        ({"period": -3}, "PlanDefinition.extension[2].extension[2].valueDuration"),
        ({"period": 0.5}, "PlanDefinition.extension[2].extension[2].valueDuration"),
        ({"kind": "sobriety"}, "PlanDefinition.type.coding[0]"),
        ({"kind": "other"}, "PlanDefinition.type.coding[0]"),
        ({"criterion": None}, "PlanDefinition.extension"),
    ],
)
async def test_bad_gate_definitions_are_refused_naming_the_element(
    client: httpx.AsyncClient, change: dict[str, Any], where: str
) -> None:
    plan = (await client.get(f"/PlanDefinition/{SOLWAY_GATE}")).json()
    if "mode" in change:
        plan["extension"][0]["valueCode"] = change["mode"]
    if "substance" in change:
        plan["extension"][2]["extension"][0]["valueCoding"]["code"] = change["substance"]
    if "period" in change:
        plan["extension"][2]["extension"][2]["valueDuration"]["value"] = change["period"]
    if "kind" in change:
        plan["type"]["coding"][0]["code"] = change["kind"]
    if "criterion" in change:
        del plan["extension"][2]
    response = await client.put(f"/PlanDefinition/{SOLWAY_GATE}", json=plan, headers=FHIR_JSON)
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == [where]
    # Nothing changed: the gate still acts as it did.
    stored = (await client.get(f"/PlanDefinition/{SOLWAY_GATE}")).json()
    assert stored["meta"]["versionId"] == "1"


async def test_a_referrer_sees_the_gates_of_a_service(client: httpx.AsyncClient) -> None:
    phase_gate = "gate-phase-1-before-trauma-focussed-work"

    async def gates(key: str) -> list[str]:
        found = (await client.get(f"/HealthcareService/{await service(client, key)}/$gates")).json()
        return sorted(e["resource"]["id"] for e in found.get("entry", []))

    assert await gates("solway-psy") == sorted([SOLWAY_GATE, phase_gate])
    assert await gates("northisles-cmht") == sorted(["gate-cmht-occasional-use", phase_gate])
    assert await gates("solway-dat") == [phase_gate]
    assert await gates("solway-gp1") == []


async def test_gate_decisions_rebuilt_equal(
    client: httpx.AsyncClient, runtime: Runtime, scoped_client: Any, clock: SettableClock
) -> None:
    held = await new_patient(client, meets_gates=False)
    first = (await _refer(client, held, "solway-dat", "solway-psy", "psychology")).json()
    await _refer(client, held, "northisles-dat", "northisles-psy", "psychology")
    fine = await new_patient(client, "9912003888")
    await _refer(client, fine, "solway-dat", "solway-cmht", "cmht")
    clinician = await scoped_client("system/*.cruds waymark/gate.override")
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "gate", "valueCode": SOLWAY_GATE},
            {"name": "reason", "valueString": "Agreed at MDT"},
        ],
    }
    await clinician.post(f"/Task/{task_of(first)}/$override-gate", json=body, headers=FHIR_JSON)

    async def snapshot() -> list[Any]:
        async with transaction(runtime.engine, write=False) as conn:
            return list(await GateRepository(conn).all())

    live = await snapshot()
    # Three evaluations, then the override: a row of its own after the hold it ended.
    assert [(r.seq, r.action, r.current) for r in live if r.service_request_id == first["id"]] == [
        (0, "held", False),
        (1, "overridden", True),
    ]
    assert len(live) == 4
    async with transaction(runtime.engine, write=True) as conn:
        await rebuild(runtime.store(conn))
    assert await snapshot() == live


def _ost_record(patient_id: str, **medicine: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "status": "active",
        "subject": {"reference": f"Patient/{patient_id}"},
        **medicine,
    }


def _coded(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


# Buvidal recorded the way dm+d-coded records arrive: a product code (here a placeholder, not a
# real dm+d code) on a contained Medication that names its active ingredient.
_BUVIDAL = {
    "contained": [
        {
            "resourceType": "Medication",
            "id": "lai",
            "code": {"text": "Buvidal 64mg prolonged-release solution for injection"},
            "ingredient": [
                {"itemCodeableConcept": {"coding": [{"system": SNOMED, "code": "387173000"}]}}
            ],
        }
    ],
    "medicationReference": {"reference": "#lai"},
}


@pytest.mark.parametrize(
    ("medicine", "counted"),
    [
        (
            {"medicationCodeableConcept": {"coding": [{"system": SNOMED, "code": "387173000"}]}},
            True,
        ),
        (_BUVIDAL, True),
        # The same code in another system is not buprenorphine.
        (
            {"medicationCodeableConcept": {"coding": [{"system": "urn:x", "code": "387173000"}]}},
            False,
        ),
        # A Medication elsewhere cannot be followed (Waymark does not serve Medication).
        ({"medicationReference": {"reference": "Medication/buvidal"}}, False),
    ],
)
async def test_opioid_substitution_is_read_from_codes_and_contained_medications(
    client: httpx.AsyncClient, clock: SettableClock, medicine: dict[str, Any], counted: bool
) -> None:
    assert (await _set_gate(client, SOLWAY_GATE, ost=True)).status_code == 200
    patient_id = await new_patient(client)
    made = await client.post(
        "/MedicationStatement", json=_ost_record(patient_id, **medicine), headers=FHIR_JSON
    )
    assert made.status_code == 201, made.text
    created = (await _refer(client, patient_id, "solway-dat", "solway-psy", "psychology")).json()
    assert (await _task(client, created))["status"] == ("on-hold" if counted else "requested")


async def test_stopping_opioid_substitution_releases_a_gate_that_counts_it(
    client: httpx.AsyncClient, clock: SettableClock
) -> None:
    assert (await _set_gate(client, SOLWAY_GATE, ost=True)).status_code == 200
    patient_id = await new_patient(client)
    made = await client.post(
        "/MedicationStatement", json=_ost_record(patient_id, **_BUVIDAL), headers=FHIR_JSON
    )
    created = (await _refer(client, patient_id, "solway-dat", "solway-psy", "psychology")).json()
    assert (await _task(client, created))["status"] == "on-hold"
    stopped = {**made.json(), "status": "stopped"}
    written = await client.put(
        f"/MedicationStatement/{stopped['id']}", json=stopped, headers=FHIR_JSON
    )
    assert written.status_code == 200
    task = await _task(client, created)
    assert (task["status"], task["businessStatus"]["coding"][0]["code"]) == (
        "requested",
        "awaiting-triage",
    )
    [issue] = await _issues(client, created["id"])
    assert issue["mitigation"][0]["action"]["text"] == "Released: the gate is now met"


async def test_an_operation_audits_the_evidence_it_read(client: httpx.AsyncClient) -> None:
    """$evaluate-gates reads a person's substance-use records for the caller: its one
    AuditEvent names them, and the person."""
    patient_id = await new_patient(client, meets_gates=False)
    observation = await record_last_use(client, patient_id, ALCOHOL, "2025-01-01")
    created = (await _refer(client, patient_id, "solway-dat", "solway-psy", "psychology")).json()
    evaluation = await client.post(
        f"/ServiceRequest/{created['id']}/$evaluate-gates", headers={"X-Request-ID": "eval-1"}
    )
    assert evaluation.status_code == 200
    events = (await client.get("/AuditEvent", params={"subtype": "operation"})).json()
    [event] = [
        e["resource"]
        for e in events["entry"]
        if any(
            x.get("what", {}).get("identifier", {}).get("value") == "eval-1"
            for x in e["resource"]["entity"]
        )
    ]
    assert event["subtype"][1]["code"] == "evaluate-gates"
    named = {x["what"].get("reference", "").split("/_history")[0] for x in event["entity"]}
    assert {f"Patient/{patient_id}", f"Observation/{observation}"} <= named
    assert f"ServiceRequest/{created['id']}" in named
