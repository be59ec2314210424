"""Phases: safety and stabilisation (phase 1) before trauma-focussed work (phase 2), then
reintegration, tracked on one active pathway CarePlan per person.

Phase 1 is complete when its activity is completed and the person's latest readiness review
says ready. Trauma-focussed work does not start before that unless a clinician overrides
with a reason; people may move back, with a reason, and every move is on the phase timeline.
This module reads where a person is; the rules on the CarePlan's changes are ``phase_rules``.
"""

from __future__ import annotations

from typing import Any

from app.canonical import WAYMARK
from app.fhir.store import FhirStore
from app.pathway.codes import PATHWAY_PHASE, codes, coding

PATHWAY_CODES = f"{WAYMARK}/CodeSystem/pathway-codes"
PATHWAY_CATEGORY = "trauma-informed-pathway"
READINESS_REVIEW = "readiness-review"
TRAUMA_FOCUSSED_THERAPY = f"{WAYMARK}/ValueSet/trauma-focussed-therapy"
PHASE_OVERRIDE = f"{WAYMARK}/StructureDefinition/phase-gate-override"
#: Readiness reviews that count: an amended or corrected review replaces a final one; a
#: preliminary, cancelled or entered-in-error one does not say anything yet (or any more).
REVIEW_STATUSES = "final,amended,corrected"
REVIEW_ANSWERS = ("ready", "not-ready", "deferred")
PHASES = ("phase-1", "phase-2", "phase-3")
_PHASE_TITLES = {
    "phase-1": "Safety and stabilisation",
    "phase-2": "Trauma-focussed work",
    "phase-3": "Reintegration",
}
STARTED = frozenset({"in-progress", "completed"})


def is_pathway_plan(plan: dict[str, Any]) -> bool:
    return PATHWAY_CATEGORY in codes(plan.get("category", []), PATHWAY_CODES)


def phase_statuses(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Phase code -> its activity's detail."""
    found = {}
    for activity in plan.get("activity", []):
        detail = activity.get("detail", {})
        for phase in codes(detail.get("code", {}), PATHWAY_PHASE):
            found[phase] = detail
    return found


async def active_plan(store: FhirStore, patient_id: str) -> dict[str, Any] | None:
    plans = await store.find(
        "CarePlan",
        [
            ("subject", f"Patient/{patient_id}"),
            ("status", "active"),
            ("category", f"{PATHWAY_CODES}|{PATHWAY_CATEGORY}"),
        ],
        count=2,
    )
    return plans[0] if plans else None


async def latest_review(store: FhirStore, patient_id: str) -> dict[str, Any] | None:
    """The person's latest readiness review that stands (by its effective date)."""
    reviews = await store.find(
        "Observation",
        [
            ("subject", f"Patient/{patient_id}"),
            ("code", f"{PATHWAY_CODES}|{READINESS_REVIEW}"),
            ("status", REVIEW_STATUSES),
            ("_sort", "-date"),
        ],
        count=1,
    )
    return reviews[0] if reviews else None


async def phase_one_missing(
    store: FhirStore, patient_id: str, *, plan: dict[str, Any] | None = None
) -> str | None:
    """What phase 1 still lacks for the person (None when it is complete). ``plan``: the
    pathway CarePlan as it is about to be written, when it is being written."""
    plan = plan or await active_plan(store, patient_id)
    if plan is None:
        return "the person has no active pathway CarePlan, so phase 1 is not recorded"
    phase_one = phase_statuses(plan).get("phase-1", {})
    if phase_one.get("status") != "completed":
        return (
            f"phase 1 (safety and stabilisation) is {phase_one.get('status', 'not recorded')}"
            f" on CarePlan/{plan.get('id', '(new)')}, not completed"
        )
    review = await latest_review(store, patient_id)
    answer = codes((review or {}).get("valueCodeableConcept", {}), PATHWAY_CODES)
    if not answer or answer[0] != "ready":
        said = f"says '{answer[0]}'" if answer else "is missing"
        return f"the readiness review {said}; phase 2 needs one that says 'ready'"
    return None


def new_plan(patient_id: str, now: str) -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "category": [
            {"coding": [coding(PATHWAY_CODES, PATHWAY_CATEGORY, "Trauma-informed pathway")]}
        ],
        "title": "Trauma-informed pathway",
        "subject": {"reference": f"Patient/{patient_id}"},
        "created": now,
        "activity": [
            {
                "detail": {
                    "code": {"coding": [coding(PATHWAY_PHASE, phase, _PHASE_TITLES[phase])]},
                    "status": "not-started",
                }
            }
            for phase in PHASES
        ],
    }


async def lock_pathway(store: FhirStore, patient_id: str) -> None:
    """Serialise the writers that could each find no active pathway CarePlan for the person
    and so make a second one (two referrals accepted at once, or a client's POST)."""
    await store.repo.lock(f"pathway-care-plan|{patient_id}")


async def ensure_plan(store: FhirStore, patient_id: str) -> None:
    """Start the person's pathway CarePlan, unless they have an active one."""
    await lock_pathway(store, patient_id)
    if await active_plan(store, patient_id) is None:
        now = store.clock().isoformat(timespec="milliseconds").replace("+00:00", "Z")
        await store.as_server().create(new_plan(patient_id, now), resource_type="CarePlan")
