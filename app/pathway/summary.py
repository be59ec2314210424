"""$pathway: where a person is on their pathway, in one call.

The caller's scopes decide what is included: each part is read only if the caller may read
its resource type (all checked before anything is read), and what was left out is named in
``omitted``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.fhir.resources import instant
from app.fhir.store import FhirStore
from app.pathway.clocks import HELD_BY_GATE, held_by_gate_event, waiting_clock
from app.pathway.codes import REFERRAL_STATE
from app.pathway.gate_rules import evidence_types_of
from app.pathway.phases import active_plan
from app.pathway.repository import GateRepository, ReferralRepository
from app.pathway.shared_care import shared_care_parts
from app.pathway.summary_phases import phase_one_overdue, phase_parts, review_part
from app.pathway.timeline import days
from app.pathway.workflow import OPEN

HELD_TOO_LONG = timedelta(days=90)
_PARTS = ("CarePlan", "Observation", "EpisodeOfCare", "ServiceRequest", "Task")


async def pathway_summary(store: FhirStore, patient_id: str) -> dict[str, Any]:
    await store.read("Patient", patient_id)
    now = store.clock()
    may = {t: store.access.permits("read", t) for t in _PARTS}
    parameters: list[dict[str, Any]] = [
        {"name": "patient", "valueReference": {"reference": f"Patient/{patient_id}"}}
    ]
    overdue: list[list[dict[str, Any]]] = []
    if may["CarePlan"]:
        plan = await active_plan(store, patient_id)
        if plan is not None:
            parameters += await phase_parts(
                store, plan, patient_id, may_read_reviews=may["Observation"]
            )
            if may["Observation"]:
                overdue += await phase_one_overdue(store, plan, patient_id, now)
    if may["Observation"]:
        parameters += await review_part(store, patient_id)
    if may["EpisodeOfCare"]:
        shared, late = await shared_care_parts(store, patient_id, now)
        parameters += shared
        overdue += late
    if may["ServiceRequest"] and may["Task"]:
        referrals, held = await _referrals(store, patient_id, now)
        parameters += referrals
        overdue += held
        parameters += await _gates(store, patient_id)
    parameters += [{"name": "overdue", "part": item} for item in overdue]
    parameters += [
        {"name": "omitted", "valueString": f"{t}: the token has no read scope"}
        for t in _PARTS
        if not may[t]
    ]
    return {"resourceType": "Parameters", "parameter": parameters}


async def _referrals(
    store: FhirStore, patient_id: str, now: datetime
) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    repository = ReferralRepository(store.repo.conn)
    found: list[dict[str, Any]] = []
    overdue: list[list[dict[str, Any]]] = []
    closed: list[dict[str, Any]] = []
    for row in await repository.of_patient(patient_id):
        events = await repository.events(row.task_id)
        if not row.open:
            closed.append({"name": "closedReferral", "part": _closed_parts(row, events, now)})
            continue
        found.append({"name": "referral", "part": _referral_parts(row, events, now)})
        if row.business_status == HELD_BY_GATE and events and now - events[-1].at > HELD_TOO_LONG:
            overdue.append(
                [
                    {"name": "kind", "valueCode": "held-over-90-days"},
                    {
                        "name": "item",
                        "valueReference": {"reference": f"ServiceRequest/{row.service_request_id}"},
                    },
                    {"name": "since", "valueDateTime": instant(events[-1].at)},
                ]
            )
    return found + closed, overdue


def _identity_parts(row: Any) -> list[dict[str, Any]]:
    """Which referral, to whom, and where it stands: the parts open and closed ones share."""
    parts: list[dict[str, Any]] = [
        {
            "name": "referral",
            "valueReference": {"reference": f"ServiceRequest/{row.service_request_id}"},
        },
        {"name": "task", "valueReference": {"reference": f"Task/{row.task_id}"}},
        {"name": "to", "valueReference": {"reference": f"HealthcareService/{row.to_service_id}"}},
        {"name": "status", "valueCode": row.status},
    ]
    if row.business_status:
        parts.append(
            {
                "name": "businessStatus",
                "valueCoding": {"system": REFERRAL_STATE, "code": row.business_status},
            }
        )
    return parts


def _referral_parts(row: Any, events: list[Any], now: datetime) -> list[dict[str, Any]]:
    clock = waiting_clock(events, now)
    parts = _identity_parts(row)
    if row.liberation_date is not None:
        parts.append({"name": "liberationDate", "valueDate": row.liberation_date.isoformat()})
    parts += [
        {"name": "waitedDays", "valueDecimal": days(clock.waited)},
        {"name": "waitedWithoutPausesDays", "valueDecimal": days(clock.waited_without_pauses)},
        {"name": "daysSinceReferral", "valueDecimal": days(clock.since_referral)},
        {"name": "daysHeldByGates", "valueDecimal": days(clock.held_by_gates)},
    ]
    return parts


def _new_reason(events: list[Any], ended: Any) -> str | None:
    """The reason given with the closing move. A Task keeps its statusReason until a client
    changes it, so one carried over from an earlier move (a gate's release) is not why the
    referral closed."""
    reason = ended.reason_text or ended.reason_code
    position = events.index(ended)
    if position > 0:
        before = events[position - 1]
        if reason == (before.reason_text or before.reason_code):
            return None
    return str(reason) if reason else None


def _closed_parts(row: Any, events: list[Any], now: datetime) -> list[dict[str, Any]]:
    """A closed referral: how and why it ended, and whether a gate was holding it then.
    Listed so that no referral leaves the person's summary unseen: a referral entered in
    error, or closed while a gate held it, is exactly what a clinician must be able to see
    (the record says who closed it and why; $timeline has every step)."""
    clock = waiting_clock(events, now)
    ended = next(
        (e for e in reversed(events) if e.to_status == row.status and e.from_status != e.to_status),
        None,
    )
    closure = next((i for i, e in enumerate(events) if e.to_status not in OPEN), 0)
    held_when_closed = closure > 0 and held_by_gate_event(events[closure - 1])
    parts = _identity_parts(row)
    if ended is not None:
        parts.append({"name": "closed", "valueDateTime": instant(ended.at)})
        reason = _new_reason(events, ended)
        if reason:
            parts.append({"name": "reason", "valueString": reason})
        if ended.who:
            parts.append({"name": "who", "valueUri": ended.who})
    parts += [
        {"name": "heldByGateWhenClosed", "valueBoolean": held_when_closed},
        {"name": "daysSinceReferral", "valueDecimal": days(clock.since_referral)},
        {"name": "daysHeldByGates", "valueDecimal": days(clock.held_by_gates)},
    ]
    return parts


async def _gates(store: FhirStore, patient_id: str) -> list[dict[str, Any]]:
    """Where each gate evaluated on the person's referrals stands now."""
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
            {"name": "holding", "valueBoolean": bool(row.held)},
            {"name": "decision", "valueCode": row.action},
        ]
        if row.released_by:
            parts.append({"name": "releasedBy", "valueCode": row.released_by})
        # The outcome comes from the person's records: shown only if the caller may read
        # every type the gate reads (as $evaluate-gates).
        needs = await evidence_types_of(store, row.gate_id, row.gate_kind)
        unreadable = [t for t in needs if not store.access.permits("read", t)]
        if unreadable:
            parts.append(
                {
                    "name": "omitted",
                    "valueString": "outcome: the token has no read scope for "
                    + ", ".join(unreadable),
                }
            )
        else:
            parts.insert(4, {"name": "outcome", "valueCode": row.outcome})
        gates.append({"name": "gate", "part": parts})
    return gates
