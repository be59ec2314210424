"""The phase parts of $pathway: the CarePlan, the current phase, each phase's status, the
phase history, whether phase 1 is complete, the latest readiness review, and phase 1 overdue
for a review. What reads a readiness review is given only when the caller may read
Observations (``may_read_reviews``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.fhir.repository import as_utc
from app.fhir.resources import instant
from app.fhir.store import FhirStore
from app.pathway.codes import PATHWAY_PHASE, codes
from app.pathway.phases import (
    PATHWAY_CODES,
    PHASES,
    latest_review,
    phase_one_missing,
    phase_statuses,
)
from app.pathway.repository import PhaseRepository

PHASE_ONE_REVIEW_DUE = timedelta(days=365)


def current_phase(plan: dict[str, Any]) -> tuple[str, str] | None:
    """Where the person is: the latest phase in progress (after moving back, the phase they
    moved back to), else the latest one paused or scheduled, else the latest completed (and
    awaiting the next), else phase 1 as it stands."""
    phases = phase_statuses(plan)
    for wanted in (("in-progress",), ("on-hold", "scheduled"), ("completed",)):
        for phase in reversed(PHASES):
            status = phases.get(phase, {}).get("status")
            if status in wanted:
                return phase, str(status)
    if "phase-1" in phases:
        return "phase-1", str(phases["phase-1"].get("status", "not-started"))
    return None


async def phase_parts(
    store: FhirStore, plan: dict[str, Any], patient_id: str, *, may_read_reviews: bool
) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [
        {"name": "carePlan", "valueReference": {"reference": f"CarePlan/{plan['id']}"}}
    ]
    current = current_phase(plan)
    if current is not None:
        parts.append(
            {"name": "currentPhase", "valueCoding": {"system": PATHWAY_PHASE, "code": current[0]}}
        )
        parts.append({"name": "currentPhaseStatus", "valueCode": current[1]})
    for phase, detail in sorted(phase_statuses(plan).items()):
        parts.append(
            {
                "name": "phase",
                "part": [
                    {"name": "code", "valueCoding": {"system": PATHWAY_PHASE, "code": phase}},
                    {"name": "status", "valueCode": str(detail.get("status", "unknown"))},
                ],
            }
        )
    if may_read_reviews:
        missing = await phase_one_missing(store, patient_id, plan=plan)
        parts.append({"name": "phase1Complete", "valueBoolean": missing is None})
        if missing is not None:
            parts.append({"name": "phase1Missing", "valueString": missing})
    parts += await _history(store, plan)
    return parts


async def _history(store: FhirStore, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every change of a phase on the plan, oldest first (the phase_event projection)."""
    patient_events = await PhaseRepository(store.repo.conn).of_patient(
        str(plan["subject"]["reference"]).split("/")[1]
    )
    found = []
    for event in (e for e in patient_events if e.care_plan_id == plan["id"]):
        parts: list[dict[str, Any]] = [
            {"name": "phase", "valueCoding": {"system": PATHWAY_PHASE, "code": event.phase}},
            {"name": "at", "valueDateTime": instant(as_utc(event.at))},
            {"name": "to", "valueCode": event.to_status},
        ]
        if event.from_status:
            parts.insert(2, {"name": "from", "valueCode": event.from_status})
        if event.reason:
            parts.append({"name": "reason", "valueString": event.reason})
        if event.who:
            parts.append({"name": "who", "valueUri": event.who})
        found.append({"name": "phaseEvent", "part": parts})
    return found


async def review_part(store: FhirStore, patient_id: str) -> list[dict[str, Any]]:
    review = await latest_review(store, patient_id)
    if review is None:
        return []
    answer = codes(review.get("valueCodeableConcept", {}), PATHWAY_CODES)
    parts = [
        {"name": "review", "valueReference": {"reference": f"Observation/{review['id']}"}},
        {"name": "value", "valueCode": answer[0] if answer else "unknown"},
    ]
    if review.get("effectiveDateTime"):
        parts.append({"name": "date", "valueDateTime": review["effectiveDateTime"]})
    return [{"name": "readinessReview", "part": parts}]


async def phase_one_overdue(
    store: FhirStore, plan: dict[str, Any], patient_id: str, now: datetime
) -> list[list[dict[str, Any]]]:
    """Phase 1 in progress for over a year with no readiness review since it started (asked
    only when the caller may read the reviews)."""
    events = await PhaseRepository(store.repo.conn).of_patient(patient_id)
    started = [
        as_utc(e.at)
        for e in events
        if e.care_plan_id == plan["id"] and e.phase == "phase-1" and e.to_status == "in-progress"
    ]
    if phase_statuses(plan).get("phase-1", {}).get("status") != "in-progress" or not started:
        return []
    since = started[-1]
    if now - since <= PHASE_ONE_REVIEW_DUE:
        return []
    review = await latest_review(store, patient_id)
    if review is not None and str(review.get("effectiveDateTime", "")) >= instant(since)[:10]:
        return []
    return [
        [
            {"name": "kind", "valueCode": "phase-1-without-review"},
            {"name": "item", "valueReference": {"reference": f"CarePlan/{plan['id']}"}},
            {"name": "since", "valueDateTime": instant(since)},
        ]
    ]
