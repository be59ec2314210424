"""The rules on a person's pathway CarePlan and readiness reviews, as write hooks.

- One active pathway CarePlan per person.
- Moving back (a completed phase reopened, a phase in progress put on hold or stopped) needs a
  reason of its own in ``activity.detail.statusReason``; phase 1 is not reopened while phase 2
  goes on in progress (the same update puts phase 2 on hold).
- Phase 2 does not start (in-progress or completed) before phase 1 is complete, unless a
  clinician overrode the phase gate with ``$override-gate`` on the CarePlan, which records
  the override on a DetectedIssue that only the server writes.
- A readiness review that counts says ready, not-ready or deferred, and names who made it
  and when.
Every change of a phase's status is a row of the phase timeline (``phase_event``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.fhir.errors import BusinessRuleViolation
from app.fhir.hooks import WriteEvent, WriteHooks
from app.fhir.store import FhirStore
from app.pathway.codes import PATHWAY_PHASE, codes, reference_id
from app.pathway.gate_records import is_gate_issue
from app.pathway.phases import (
    PATHWAY_CODES,
    PHASE_OVERRIDE,
    READINESS_REVIEW,
    REVIEW_ANSWERS,
    REVIEW_STATUSES,
    STARTED,
    active_plan,
    is_pathway_plan,
    lock_pathway,
    phase_one_missing,
    phase_statuses,
)
from app.pathway.repository import PhaseRepository

#: On the DetectedIssue of a phase-2 override: the CarePlan version the override replaced,
#: so that it lets through that one write only.
OVERRIDE_OF = f"{PHASE_OVERRIDE}-of"


def install(hooks: WriteHooks) -> None:
    hooks.before("CarePlan", _before_care_plan)
    hooks.after("CarePlan", _after_care_plan)
    hooks.before("Observation", _check_readiness_review)


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
    before = event.before or {}
    _check_moves_back(before, after)
    await _check_phase_two_start(event.store, event.resource_id, patient_id, before, after)


def _index(plan: dict[str, Any], phase: str) -> int:
    for position, activity in enumerate(plan.get("activity", [])):
        if phase in codes(activity.get("detail", {}).get("code", {}), PATHWAY_PHASE):
            return position
    return 0


def _moves_back(old: str | None, new: str | None) -> bool:
    if old is None or new is None or old == new:
        return False
    return old == "completed" or (old == "in-progress" and new not in STARTED)


def _check_moves_back(before: dict[str, Any], after: dict[str, Any]) -> None:
    old_phases, new_phases = phase_statuses(before), phase_statuses(after)
    for phase, detail in new_phases.items():
        old_detail = old_phases.get(phase, {})
        old, new = old_detail.get("status"), detail.get("status")
        if not _moves_back(old, new):
            continue
        where = f"CarePlan.activity[{_index(after, phase)}].detail.statusReason"
        reason = detail.get("statusReason")
        if not _is_reason(reason) or reason == old_detail.get("statusReason"):
            raise BusinessRuleViolation(
                f"Moving {phase} from '{old}' back to '{new}' needs a reason of its own "
                "(activity.detail.statusReason: text or a code); one left from an earlier "
                "move does not say why this one happened",
                expression=(where,),
            )
    reopened = old_phases.get("phase-1", {}).get("status") == "completed" and (
        new_phases.get("phase-1", {}).get("status") != "completed"
    )
    if reopened and new_phases.get("phase-2", {}).get("status") == "in-progress":
        raise BusinessRuleViolation(
            "Phase 1 is reopened while phase 2 (trauma-focussed work) stays in progress: put "
            "phase 2 on hold (or stop it), with a reason, in the same update",
            expression=(f"CarePlan.activity[{_index(after, 'phase-2')}].detail.status",),
        )


def _is_reason(reason: Any) -> bool:
    return isinstance(reason, dict) and bool(reason.get("text") or reason.get("coding"))


async def _check_phase_two_start(
    store: FhirStore,
    plan_id: str,
    patient_id: str,
    before: dict[str, Any],
    after: dict[str, Any],
) -> None:
    old = phase_statuses(before).get("phase-2", {}).get("status")
    detail = phase_statuses(after).get("phase-2", {})
    if old in STARTED or detail.get("status") not in STARTED:
        return
    missing = await phase_one_missing(store, patient_id, plan=after)
    if missing is None:
        return
    version = before.get("meta", {}).get("versionId")
    if await _override_recorded(store, detail, f"CarePlan/{plan_id}/_history/{version}"):
        return
    raise BusinessRuleViolation(
        f"Phase 2 (trauma-focussed work) cannot start: {missing}. A clinician may override "
        f"the phase gate with a reason: POST /CarePlan/{plan_id}/$override-gate (needs the "
        "scope waymark/gate.override)",
        expression=(f"CarePlan.activity[{_index(after, 'phase-2')}].detail.status",),
    )


async def _override_recorded(store: FhirStore, detail: dict[str, Any], replaces: str) -> bool:
    """Whether the phase-2 detail names an override the server recorded for this very write
    (its DetectedIssue names the CarePlan version being replaced)."""
    for extension in detail.get("extension", []):
        if extension.get("url") != PHASE_OVERRIDE:
            continue
        parts = {p.get("url"): p for p in extension.get("extension", [])}
        issue_id = reference_id(
            parts.get("detectedIssue", {}).get("valueReference"), "DetectedIssue"
        )
        issue = await store.current("DetectedIssue", issue_id) if issue_id else None
        if issue is None or not is_gate_issue(issue):
            continue
        if any(
            e.get("url") == OVERRIDE_OF and e.get("valueReference", {}).get("reference") == replaces
            for e in issue.get("extension", [])
        ):
            return True
    return False


async def _after_care_plan(event: WriteEvent) -> None:
    after = event.after
    if after is None or not is_pathway_plan(after):
        return
    for values in phase_events(event.before, after):
        await PhaseRepository(event.store.repo.conn).add(**values)
    patient_id = reference_id(after.get("subject"), "Patient")
    if patient_id is not None:
        from app.pathway.gate_release import reevaluate_patient

        await reevaluate_patient(event.store, patient_id, cause=f"CarePlan/{event.resource_id}")


def phase_events(before: dict[str, Any] | None, after: dict[str, Any]) -> list[dict[str, Any]]:
    """The phase timeline rows a CarePlan version makes (shared by the rebuild). A row's
    reason is the one given in that version: a statusReason or an override that is new."""
    old = phase_statuses(before or {})
    meta = after.get("meta", {})
    rows = []
    for phase, detail in sorted(phase_statuses(after).items()):
        previous = old.get(phase, {})
        if previous.get("status") == detail.get("status"):
            continue
        rows.append(
            {
                "care_plan_id": str(after["id"]),
                "version_id": int(meta["versionId"]),
                "phase": phase,
                "patient_id": str(reference_id(after.get("subject"), "Patient")),
                "at": datetime.fromisoformat(str(meta["lastUpdated"]).replace("Z", "+00:00")),
                "from_status": previous.get("status"),
                "to_status": str(detail.get("status")),
                "reason": _new_reason(previous, detail),
                "who": meta.get("source"),
            }
        )
    return rows


def _new_reason(previous: dict[str, Any], detail: dict[str, Any]) -> str | None:
    overrides = [e for e in detail.get("extension", []) if e.get("url") == PHASE_OVERRIDE]
    if overrides and overrides != [
        e for e in previous.get("extension", []) if e.get("url") == PHASE_OVERRIDE
    ]:
        parts = {p.get("url"): p for p in overrides[-1].get("extension", [])}
        return f"override: {parts.get('reason', {}).get('valueString')}"
    reason = detail.get("statusReason")
    if not isinstance(reason, dict) or not _is_reason(reason):
        return None
    if reason == previous.get("statusReason"):
        return None
    if reason.get("text"):
        return str(reason["text"])
    coded = reason["coding"][0]
    return str(coded.get("display") or f"{coded.get('system', '')}|{coded.get('code', '')}")


async def _check_readiness_review(event: WriteEvent) -> None:
    """A readiness review that counts must say what it decided, who decided and when: 422
    naming the element that is missing."""
    review = event.after
    if review is None or READINESS_REVIEW not in codes(review.get("code", {}), PATHWAY_CODES):
        return
    if review.get("status") not in REVIEW_STATUSES.split(","):
        return
    answers = codes(review.get("valueCodeableConcept", {}), PATHWAY_CODES)
    if not answers or answers[0] not in REVIEW_ANSWERS:
        raise BusinessRuleViolation(
            "A readiness review's value is a code from "
            f"{PATHWAY_CODES}: {', '.join(REVIEW_ANSWERS)}",
            expression=("Observation.valueCodeableConcept",),
        )
    if not review.get("performer"):
        raise BusinessRuleViolation(
            "A readiness review names the clinician who made it (Observation.performer)",
            expression=("Observation.performer",),
        )
    period = review.get("effectivePeriod") or {}
    when = review.get("effectiveDateTime") or review.get("effectiveInstant") or period.get("start")
    if not when:
        raise BusinessRuleViolation(
            "A readiness review has the date it was made (Observation.effectiveDateTime)",
            expression=("Observation.effective[x]",),
        )
