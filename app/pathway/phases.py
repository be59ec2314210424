"""Phases: safety and stabilisation (phase 1) before trauma-focussed work (phase 2), then
reintegration, tracked on one active pathway CarePlan per person.

Phase 1 is complete when its activity is completed and the person's latest readiness review
says ready. Trauma-focussed work does not start before that unless a clinician overrides
with a reason; people may move back, with a reason, and every move is on the phase timeline.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.canonical import WAYMARK
from app.fhir.errors import BusinessRuleViolation
from app.fhir.hooks import WriteEvent, WriteHooks
from app.fhir.store import FhirStore
from app.pathway.codes import PATHWAY_PHASE, codes, coding, reference_id
from app.pathway.repository import PhaseRepository

PATHWAY_CODES = f"{WAYMARK}/CodeSystem/pathway-codes"
PATHWAY_CATEGORY = "trauma-informed-pathway"
READINESS_REVIEW = "readiness-review"
TRAUMA_FOCUSSED_THERAPY = f"{WAYMARK}/ValueSet/trauma-focussed-therapy"
PHASE_OVERRIDE = f"{WAYMARK}/StructureDefinition/phase-gate-override"
PHASES = ("phase-1", "phase-2", "phase-3")
_PHASE_TITLES = {
    "phase-1": "Safety and stabilisation",
    "phase-2": "Trauma-focussed work",
    "phase-3": "Reintegration",
}
_STARTED = frozenset({"in-progress", "completed"})


def install(hooks: WriteHooks) -> None:
    hooks.before("CarePlan", _before_care_plan)
    hooks.after("CarePlan", _after_care_plan)


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
    reviews = await store.find(
        "Observation",
        [
            ("subject", f"Patient/{patient_id}"),
            ("code", f"{PATHWAY_CODES}|{READINESS_REVIEW}"),
            ("_sort", "-date"),
        ],
        count=1,
    )
    return reviews[0] if reviews else None


async def phase_one_missing(store: FhirStore, patient_id: str) -> str | None:
    """What phase 1 still lacks for the person (None when it is complete)."""
    plan = await active_plan(store, patient_id)
    if plan is None:
        return "the person has no active pathway CarePlan, so phase 1 is not recorded"
    phase_one = phase_statuses(plan).get("phase-1", {})
    if phase_one.get("status") != "completed":
        return (
            f"phase 1 (safety and stabilisation) is {phase_one.get('status', 'not recorded')}"
            f" on CarePlan/{plan['id']}, not completed"
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


async def _before_care_plan(event: WriteEvent) -> None:
    after = event.after
    if after is None or not is_pathway_plan(after):
        return
    patient_id = reference_id(after.get("subject"), "Patient")
    if patient_id is None:
        raise BusinessRuleViolation(
            "A pathway CarePlan's subject is a Patient", expression=("CarePlan.subject",)
        )
    if after.get("status") == "active":
        await lock_pathway(event.store, patient_id)
        other = await active_plan(event.store, patient_id)
        if other is not None and other["id"] != event.resource_id:
            raise BusinessRuleViolation(
                f"Patient/{patient_id} already has an active pathway CarePlan: "
                f"CarePlan/{other['id']}; update that one",
                expression=("CarePlan.status",),
            )
    before = phase_statuses(event.before or {})
    now = phase_statuses(after)
    for phase, detail in now.items():
        old = before.get(phase, {}).get("status")
        new = detail.get("status")
        if _moves_back(phase, old, new) and not _reason(detail):
            raise BusinessRuleViolation(
                f"Moving {phase} from '{old}' back to '{new}' needs a reason "
                "(activity.detail.statusReason)",
                expression=("CarePlan.activity.detail.statusReason",),
            )
    phase_two = now.get("phase-2", {})
    if phase_two.get("status") == "in-progress" and before.get("phase-2", {}).get("status") != (
        "in-progress"
    ):
        override = [e for e in phase_two.get("extension", []) if e.get("url") == PHASE_OVERRIDE]
        missing = await phase_one_missing(event.store, patient_id)
        if missing and not any(str(e.get("valueString", "")).strip() for e in override):
            raise BusinessRuleViolation(
                f"Phase 2 (trauma-focussed work) cannot start: {missing}. A clinician may "
                f"override with a reason ({PHASE_OVERRIDE} on the phase-2 activity's detail)",
                expression=("CarePlan.activity.detail.status",),
            )


def _moves_back(phase: str, old: str | None, new: str | None) -> bool:
    if old is None or new is None or old == new:
        return False
    if phase == "phase-1":
        return old == "completed"
    return old in _STARTED and new not in _STARTED


def _reason(detail: dict[str, Any]) -> bool:
    reason = detail.get("statusReason")
    return isinstance(reason, dict) and bool(reason.get("text") or reason.get("coding"))


async def _after_care_plan(event: WriteEvent) -> None:
    after = event.after
    if after is None or not is_pathway_plan(after):
        return
    for values in phase_events(event.before, after):
        await PhaseRepository(event.store.repo.conn).add(**values)
    patient_id = reference_id(after.get("subject"), "Patient")
    if patient_id is not None:
        from app.pathway.gate_release import reevaluate_patient

        await reevaluate_patient(event.store, patient_id)


def phase_events(before: dict[str, Any] | None, after: dict[str, Any]) -> list[dict[str, Any]]:
    """The phase timeline rows a CarePlan version makes (shared by the rebuild)."""
    old = phase_statuses(before or {})
    meta = after.get("meta", {})
    rows = []
    for phase, detail in sorted(phase_statuses(after).items()):
        previous = old.get(phase, {}).get("status")
        if previous == detail.get("status"):
            continue
        reason = detail.get("statusReason") or {}
        overrides = [e for e in detail.get("extension", []) if e.get("url") == PHASE_OVERRIDE]
        rows.append(
            {
                "care_plan_id": str(after["id"]),
                "version_id": int(meta["versionId"]),
                "phase": phase,
                "patient_id": str(reference_id(after.get("subject"), "Patient")),
                "at": datetime.fromisoformat(str(meta["lastUpdated"]).replace("Z", "+00:00")),
                "from_status": previous,
                "to_status": str(detail.get("status")),
                "reason": reason.get("text")
                or (f"override: {overrides[0].get('valueString')}" if overrides else None),
                "who": meta.get("source"),
            }
        )
    return rows
