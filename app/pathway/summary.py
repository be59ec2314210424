"""$pathway: where a person is on their pathway, in one call.

The caller's scopes decide what is included: each part is read only if the caller may read
its resource type, and what was left out is named in ``omitted``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.canonical import WAYMARK
from app.fhir.errors import Forbidden
from app.fhir.resources import instant
from app.fhir.store import FhirStore
from app.pathway.clocks import waiting_clock
from app.pathway.codes import PATHWAY_PHASE, REFERRAL_STATE, codes
from app.pathway.phases import PATHWAY_CODES, active_plan, latest_review, phase_statuses
from app.pathway.repository import GateRepository, ReferralRepository

HELD_TOO_LONG = timedelta(days=90)
PHASE_ONE_REVIEW_DUE = timedelta(days=365)


async def pathway_summary(store: FhirStore, patient_id: str) -> dict[str, Any]:
    await store.read("Patient", patient_id)
    now = store.clock()
    parameters: list[dict[str, Any]] = [
        {"name": "patient", "valueReference": {"reference": f"Patient/{patient_id}"}}
    ]
    omitted: list[str] = []
    overdue: list[list[dict[str, Any]]] = []
    if _may(store, "CarePlan", omitted):
        plan = await active_plan(store, patient_id)
        if plan is not None:
            parameters += _plan_parts(plan)
            overdue += await _phase_one_overdue(store, plan, patient_id, now, omitted)
    if _may(store, "Observation", omitted):
        review = await latest_review(store, patient_id)
        if review is not None:
            answer = codes(review.get("valueCodeableConcept", {}), PATHWAY_CODES)
            parts = [
                {"name": "review", "valueReference": {"reference": f"Observation/{review['id']}"}},
                {"name": "value", "valueCode": answer[0] if answer else "unknown"},
            ]
            if review.get("effectiveDateTime"):
                parts.append({"name": "date", "valueDateTime": review["effectiveDateTime"]})
            parameters.append({"name": "readinessReview", "part": parts})
    if _may(store, "EpisodeOfCare", omitted):
        overdue += await _shared_care_overdue(store, patient_id, now)
    if _may(store, "ServiceRequest", omitted) and _may(store, "Task", omitted):
        referrals, held = await _referrals(store, patient_id, now)
        parameters += referrals
        overdue += held
        parameters += await _gates(store, patient_id)
    parameters += [{"name": "overdue", "part": item} for item in overdue]
    parameters += [
        {"name": "omitted", "valueString": f"{t}: the token has no read scope"} for t in omitted
    ]
    return {"resourceType": "Parameters", "parameter": parameters}


def _may(store: FhirStore, resource_type: str, omitted: list[str]) -> bool:
    try:
        store.access.authorise("read", resource_type)
    except Forbidden:
        omitted.append(resource_type)
        return False
    return True


def _plan_parts(plan: dict[str, Any]) -> list[dict[str, Any]]:
    phases = phase_statuses(plan)
    current = next(
        (
            p
            for p in ("phase-3", "phase-2", "phase-1")
            if phases.get(p, {}).get("status") == "in-progress"
        ),
        None,
    )
    parts: list[dict[str, Any]] = [
        {"name": "carePlan", "valueReference": {"reference": f"CarePlan/{plan['id']}"}}
    ]
    if current:
        parts.append(
            {"name": "currentPhase", "valueCoding": {"system": PATHWAY_PHASE, "code": current}}
        )
    for phase, detail in sorted(phases.items()):
        parts.append(
            {
                "name": "phase",
                "part": [
                    {"name": "code", "valueCoding": {"system": PATHWAY_PHASE, "code": phase}},
                    {"name": "status", "valueCode": str(detail.get("status", "unknown"))},
                ],
            }
        )
    return parts


async def _phase_one_overdue(
    store: FhirStore, plan: dict[str, Any], patient_id: str, now: datetime, omitted: list[str]
) -> list[list[dict[str, Any]]]:
    """Phase 1 in progress for over a year with no readiness review since it started."""
    from app.pathway.repository import PhaseRepository

    events = await PhaseRepository(store.repo.conn).of_patient(patient_id)
    started = [e.at for e in events if e.phase == "phase-1" and e.to_status == "in-progress"]
    if phase_statuses(plan).get("phase-1", {}).get("status") != "in-progress" or not started:
        return []
    since = started[-1] if started[-1].tzinfo else started[-1].replace(tzinfo=now.tzinfo)
    review = await latest_review(store, patient_id) if "Observation" not in omitted else None
    reviewed = review is not None and str(review.get("effectiveDateTime", "")) >= instant(since)
    if now - since <= PHASE_ONE_REVIEW_DUE or reviewed:
        return []
    return [
        [
            {"name": "kind", "valueCode": "phase-1-without-review"},
            {"name": "item", "valueReference": {"reference": f"CarePlan/{plan['id']}"}},
            {"name": "since", "valueDateTime": instant(since)},
        ]
    ]


async def _referrals(
    store: FhirStore, patient_id: str, now: datetime
) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    repository = ReferralRepository(store.repo.conn)
    rows = await repository.of_patient(patient_id)
    found: list[dict[str, Any]] = []
    overdue: list[list[dict[str, Any]]] = []
    for row in rows:
        if not row.open:
            continue
        events = await repository.events(row.task_id)
        clock = waiting_clock(events, now)
        parts: list[dict[str, Any]] = [
            {
                "name": "referral",
                "valueReference": {"reference": f"ServiceRequest/{row.service_request_id}"},
            },
            {"name": "task", "valueReference": {"reference": f"Task/{row.task_id}"}},
            {
                "name": "to",
                "valueReference": {"reference": f"HealthcareService/{row.to_service_id}"},
            },
            {"name": "status", "valueCode": row.status},
            {"name": "waitedDays", "valueDecimal": round(clock.waited.total_seconds() / 86400, 2)},
            {
                "name": "waitedWithoutPausesDays",
                "valueDecimal": round(clock.waited_without_pauses.total_seconds() / 86400, 2),
            },
        ]
        if row.business_status:
            parts.insert(
                4,
                {
                    "name": "businessStatus",
                    "valueCoding": {"system": REFERRAL_STATE, "code": row.business_status},
                },
            )
        found.append({"name": "referral", "part": parts})
        if row.business_status == "held-by-gate" and events:
            held_since = events[-1].at
            if now - held_since > HELD_TOO_LONG:
                overdue.append(
                    [
                        {"name": "kind", "valueCode": "held-over-90-days"},
                        {
                            "name": "item",
                            "valueReference": {
                                "reference": f"ServiceRequest/{row.service_request_id}"
                            },
                        },
                        {"name": "since", "valueDateTime": instant(held_since)},
                    ]
                )
    return found, overdue


async def _gates(store: FhirStore, patient_id: str) -> list[dict[str, Any]]:
    decisions = await GateRepository(store.repo.conn).current_of_patient(patient_id)
    gates = []
    for row in decisions:
        parts: list[dict[str, Any]] = [
            {
                "name": "referral",
                "valueReference": {"reference": f"ServiceRequest/{row.service_request_id}"},
            },
            {"name": "gate", "valueReference": {"reference": f"PlanDefinition/{row.gate_id}"}},
            {"name": "kind", "valueCode": row.gate_kind},
            {"name": "mode", "valueCode": row.mode},
            {"name": "outcome", "valueCode": row.outcome},
            {"name": "holding", "valueBoolean": bool(row.held)},
        ]
        if row.released_by:
            parts.append({"name": "releasedBy", "valueCode": row.released_by})
        gates.append({"name": "gate", "part": parts})
    return gates


SHARED_CARE = "shared-care"
ANNUAL_REVIEW = f"{WAYMARK}/StructureDefinition/annual-review"


async def _shared_care_overdue(
    store: FhirStore, patient_id: str, now: datetime
) -> list[list[dict[str, Any]]]:
    """Shared care whose annual review (extension annual-review, part ``next``) is past."""
    episodes = await store.find(
        "EpisodeOfCare",
        [
            ("patient", f"Patient/{patient_id}"),
            ("status", "active"),
            ("type", f"{PATHWAY_CODES}|{SHARED_CARE}"),
        ],
        count=10,
    )
    overdue: list[list[dict[str, Any]]] = []
    for episode in episodes:
        due = next(
            (
                part.get("valueDate")
                for extension in episode.get("extension", [])
                if extension.get("url") == ANNUAL_REVIEW
                for part in extension.get("extension", [])
                if part.get("url") == "next"
            ),
            None,
        )
        if isinstance(due, str) and due < now.date().isoformat():
            overdue.append(
                [
                    {"name": "kind", "valueCode": "shared-care-review"},
                    {
                        "name": "item",
                        "valueReference": {"reference": f"EpisodeOfCare/{episode['id']}"},
                    },
                    {"name": "since", "valueDateTime": due},
                ]
            )
    return overdue
