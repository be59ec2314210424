"""A clinician starts phase 2 before phase 1 is complete: ``POST /CarePlan/{id}/$override-gate``.

The need for a mandatory phase 1 is disputed (DOMAIN.md), so Waymark lets a clinician override
the phase gate; what it will not do is let that happen unrecorded. The override is a
DetectedIssue only the server writes (the gate, the CarePlan, who, when, why, and the CarePlan
version it replaces), and phase 2 starts in the same transaction, through the caller's access,
so that the CarePlan's change is authorised and audited as theirs.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.fhir.errors import BusinessRuleViolation
from app.fhir.resources import instant
from app.fhir.store import FhirStore
from app.pathway.codes import reference_id
from app.pathway.gate_records import GATE_DECISION, RELEASED_BY, moment
from app.pathway.gates import GATE_ID, GATE_MODE, gate_from, is_gate
from app.pathway.phase_rules import OVERRIDE_OF
from app.pathway.phases import (
    PHASE_OVERRIDE,
    STARTED,
    is_pathway_plan,
    phase_one_missing,
    phase_statuses,
)


async def override_phase_two(
    store: FhirStore, care_plan_id: str, *, gate_code: str, reason: str, client_id: str
) -> dict[str, Any]:
    stored = await store.read("CarePlan", care_plan_id)
    plan = orjson.loads(stored.content or b"{}")
    patient_id, phase_two = _phase_two(plan, care_plan_id)
    gate = await _phase_gate(store, gate_code)
    missing = await phase_one_missing(store, patient_id)
    if missing is None:
        raise BusinessRuleViolation(
            "Phase 1 is complete: start phase 2 with an ordinary update of the CarePlan, "
            "no override needed",
            expression=("Parameters.parameter[gate]",),
        )
    replaces = f"CarePlan/{care_plan_id}/_history/{stored.version_id}"
    issue = _issue(gate, patient_id, care_plan_id, replaces, missing, reason, store, client_id)
    recorded = await store.as_server().create(issue, resource_type="DetectedIssue")
    phase_two["status"] = "in-progress"
    phase_two["extension"] = [
        e for e in phase_two.get("extension", []) if e.get("url") != PHASE_OVERRIDE
    ] + [
        {
            "url": PHASE_OVERRIDE,
            "extension": [
                {
                    "url": "detectedIssue",
                    "valueReference": {"reference": f"DetectedIssue/{recorded.stored.id}"},
                },
                {"url": "reason", "valueString": reason},
            ],
        }
    ]
    await store.update("CarePlan", care_plan_id, plan, if_match=stored.version_id)
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "carePlan", "valueReference": {"reference": f"CarePlan/{care_plan_id}"}},
            {"name": "gate", "valueCode": gate_code},
            {
                "name": "detectedIssue",
                "valueReference": {"reference": f"DetectedIssue/{recorded.stored.id}"},
            },
            {"name": "phase2", "valueCode": "in-progress"},
        ],
    }


def _phase_two(plan: dict[str, Any], care_plan_id: str) -> tuple[str, dict[str, Any]]:
    """The plan's person and its phase-2 activity's detail, which must not have started."""
    patient_id = reference_id(plan.get("subject"), "Patient")
    phase_two = phase_statuses(plan).get("phase-2")
    if not is_pathway_plan(plan) or patient_id is None or phase_two is None:
        raise BusinessRuleViolation(
            f"CarePlan/{care_plan_id} is not a pathway CarePlan with a phase-2 activity"
        )
    if phase_two.get("status") in STARTED:
        raise BusinessRuleViolation(
            f"Phase 2 on CarePlan/{care_plan_id} is {phase_two['status']} already",
            expression=("CarePlan.activity.detail.status",),
        )
    return patient_id, phase_two


async def _phase_gate(store: FhirStore, gate_code: str) -> Any:
    plans = await store.find(
        "PlanDefinition", [("identifier", f"{GATE_ID}|{gate_code}"), ("status", "active")]
    )
    gates = [gate_from(plan) for plan in plans if is_gate(plan)]
    found = next((gate for gate in gates if gate.kind == "phase"), None)
    if found is None:
        raise BusinessRuleViolation(
            f"'{gate_code}' is not the code of an active phase gate",
            expression=("Parameters.parameter[gate]",),
        )
    return found


def _issue(
    gate: Any,
    patient_id: str,
    care_plan_id: str,
    replaces: str,
    missing: str,
    reason: str,
    store: FhirStore,
    client_id: str,
) -> dict[str, Any]:
    at = instant(moment(store.clock()))
    decision = [
        {"url": "action", "valueCode": "overridden"},
        {"url": "at", "valueInstant": at},
        {"url": "kind", "valueCode": "phase"},
        {"url": "mode", "valueCode": gate.mode},
        {"url": "outcome", "valueCode": "not-met"},
        {"url": "held", "valueBoolean": False},
        {"url": "releasedBy", "valueCode": "override"},
        {"url": "reason", "valueString": reason},
    ]
    if store.access.source:
        decision.append({"url": "who", "valueUri": store.access.source})
    return {
        "resourceType": "DetectedIssue",
        "extension": [
            {"url": GATE_MODE, "valueCode": gate.mode},
            {"url": OVERRIDE_OF, "valueReference": {"reference": replaces}},
            {"url": GATE_DECISION, "extension": decision},
        ],
        "status": "final",
        "code": {"coding": [{"system": GATE_ID, "code": gate.code, "display": gate.title}]},
        "severity": "high",
        "patient": {"reference": f"Patient/{patient_id}"},
        "identifiedDateTime": at,
        "implicated": [
            {"reference": f"CarePlan/{care_plan_id}"},
            {"reference": f"PlanDefinition/{gate.id}"},
        ],
        "detail": f"Phase 2 (trauma-focussed work) started before phase 1 was complete "
        f"({missing}), by an override of the phase gate.",
        "mitigation": [
            {
                "extension": [{"url": RELEASED_BY, "valueCode": "override"}],
                "action": {"text": f"Overridden by client {client_id}: {reason}"},
                "date": at,
            }
        ],
    }
