"""Gates acting on referrals: evaluated when a referral is made, held or let through as the
gate's mode says, re-evaluated when evidence arrives or time passes, released or overridden.

A held referral is never dropped: its Task is on hold (businessStatus held-by-gate) with a
DetectedIssue naming the gate, until evidence, a change of the gate's mode, or a recorded
override releases it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import orjson

from app.canonical import WAYMARK
from app.fhir.errors import BusinessRuleViolation, Issue
from app.fhir.resources import instant
from app.fhir.store import FhirStore
from app.pathway.codes import HOLD_REASON, REFERRAL_STATE, coding, reference_id
from app.pathway.gates import (
    GATE_EVIDENCE,
    GATE_ID,
    GATE_KIND,
    GATE_MODE,
    GATE_SUBSTANCES,
    OPIOID_SUBSTITUTION,
    Gate,
    Outcome,
    evaluate,
    evidence_from,
    gate_from,
    is_gate,
)
from app.pathway.repository import GateRepository

GATE_EVALUATION = f"{WAYMARK}/StructureDefinition/gate-evaluation"
RELEASED_BY = f"{WAYMARK}/StructureDefinition/gate-released-by"
_EVIDENCE_CODES = f"{GATE_EVIDENCE}|last-use-date,{GATE_EVIDENCE}|use-days-past-28"


# -- definitions -----------------------------------------------------------------------------


async def check_gate_definition(store: FhirStore, plan: dict[str, Any]) -> None:
    """Refuse (422, naming the element) a gate PlanDefinition that could not be applied."""
    if is_gate(plan):
        gate_from(plan, known_substances=await value_set_codes(store, GATE_SUBSTANCES))


async def gates_guarding(
    store: FhirStore, service: dict[str, Any]
) -> list[tuple[Gate, dict[str, Any]]]:
    """The active gates acting on a service, with their PlanDefinitions."""
    plans = await store.find(
        "PlanDefinition",
        [
            ("type", f"{GATE_KIND}|abstinence,{GATE_KIND}|phase,{GATE_KIND}|other"),
            ("status", "active"),
        ],
        count=500,
    )
    found = []
    for plan in plans:
        gate = gate_from(plan)
        if gate.guards(service):
            found.append((gate, plan))
    return found


async def value_set_codes(store: FhirStore, url: str) -> frozenset[str]:
    sets = await store.find("ValueSet", [("url", url)], count=1)
    return frozenset(
        str(concept["code"])
        for value_set in sets
        for include in value_set.get("compose", {}).get("include", [])
        for concept in include.get("concept", [])
    )


# -- evaluation ------------------------------------------------------------------------------


async def evaluate_gates(
    store: FhirStore,
    *,
    patient_id: str,
    service: dict[str, Any],
    today: date,
    referral_code: Any = None,
) -> list[Outcome]:
    """Each gate acting on a referral with ``referral_code`` (a CodeableConcept) into
    ``service``, evaluated for the patient today."""
    gates = []
    for gate, _ in await gates_guarding(store, service):
        if gate.applies_to is not None and not await in_value_set(
            store, referral_code, gate.applies_to
        ):
            continue
        if gate.kind in ("abstinence", "phase"):
            gates.append(gate)
    if not gates:
        return []
    outcomes = [
        await _phase_outcome(store, g, patient_id, today) for g in gates if g.kind == "phase"
    ]
    abstinence = [g for g in gates if g.kind == "abstinence"]
    if not abstinence:
        return outcomes
    subject = [("subject", f"Patient/{patient_id}")]
    observations = await store.find("Observation", [*subject, ("code", _EVIDENCE_CODES)], count=500)
    medications: list[dict[str, Any]] = []
    ost_codes: frozenset[str] = frozenset()
    if any(g.ost_counts for g in abstinence):
        ost_codes = await value_set_codes(store, OPIOID_SUBSTITUTION)
        for resource_type in ("MedicationStatement", "MedicationRequest"):
            medications += await store.find(
                resource_type, [*subject, ("status", "active")], count=500
            )
    evidence = evidence_from(observations, medications, ost_codes)
    return outcomes + [evaluate(gate, evidence, today) for gate in abstinence]


async def _phase_outcome(store: FhirStore, gate: Gate, patient_id: str, today: date) -> Outcome:
    from app.pathway.phases import phase_one_missing

    missing = await phase_one_missing(store, patient_id)
    if missing is None:
        return Outcome(gate, "met", (), today, None, "Met: phase 1 is complete.")
    return Outcome(gate, "not-met", (), None, None, f"Not met: {missing}.")


async def in_value_set(store: FhirStore, concept: Any, url: str) -> bool:
    sets = await store.find("ValueSet", [("url", url)], count=1)
    members = {
        (include.get("system"), concept_["code"])
        for value_set in sets
        for include in value_set.get("compose", {}).get("include", [])
        for concept_ in include.get("concept", [])
    }
    given = {
        (c.get("system"), c.get("code"))
        for c in (concept or {}).get("coding", [])
        if isinstance(c, dict)
    }
    return bool(members & given)


def evaluation_extensions(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """What a referral records of the gates evaluated when it was made (kept on the
    ServiceRequest, so the gate decisions can be rebuilt from the resources)."""
    extensions = []
    for outcome in outcomes:
        parts: list[dict[str, Any]] = [
            {"url": "gate", "valueReference": {"reference": f"PlanDefinition/{outcome.gate.id}"}},
            {"url": "code", "valueCode": outcome.gate.code},
            {"url": "kind", "valueCode": outcome.gate.kind},
            {"url": "mode", "valueCode": outcome.gate.mode},
            {"url": "outcome", "valueCode": outcome.outcome},
        ]
        if outcome.met_on is not None:
            parts.append({"url": "metOn", "valueDate": outcome.met_on.isoformat()})
        extensions.append({"url": GATE_EVALUATION, "extension": parts})
    return extensions


def holds(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.gate.mode == "enforced" and o.outcome != "met"]


def hold_reason(held: list[Outcome]) -> dict[str, Any]:
    return {
        "coding": [coding(HOLD_REASON, "gate-not-met", "Entry criterion not met")],
        "text": "Held by " + "; ".join(f"{o.gate.title} ({o.detail})" for o in held),
    }


async def record_decisions(
    store: FhirStore,
    *,
    outcomes: list[Outcome],
    service_request_id: str,
    task_id: str,
    patient_id: str,
    at: datetime,
) -> None:
    """A decision row per gate, and a DetectedIssue per gate not met that acts (enforced: the
    hold; advisory: the warning, also returned to the caller)."""
    repository = GateRepository(store.repo.conn)
    for outcome in outcomes:
        issue_id = None
        if outcome.outcome != "met" and outcome.gate.mode in ("enforced", "advisory"):
            issue = detected_issue(outcome, service_request_id, patient_id, at)
            stored = await store.as_server().create(issue, resource_type="DetectedIssue")
            issue_id = stored.stored.id
            if outcome.gate.mode == "advisory":
                store.warnings.append(
                    Issue(
                        "business-rule",
                        f"Advisory gate not met: {outcome.gate.title}. {outcome.detail} "
                        f"Recorded as DetectedIssue/{issue_id}; the referral goes ahead.",
                        severity="warning",
                    )
                )
        await repository.add(
            service_request_id=service_request_id,
            gate_id=outcome.gate.id,
            task_id=task_id,
            patient_id=patient_id,
            gate_code=outcome.gate.code,
            gate_kind=outcome.gate.kind,
            mode=outcome.gate.mode,
            outcome=outcome.outcome,
            evaluated_at=at,
            held=outcome.gate.mode == "enforced" and outcome.outcome != "met",
            released_at=None,
            released_by=None,
            detected_issue_id=issue_id,
        )


def detected_issue(
    outcome: Outcome, service_request_id: str, patient_id: str, at: datetime
) -> dict[str, Any]:
    words = outcome.detail
    if outcome.met_on is not None:
        words += f" If nothing changes it is met on {outcome.met_on.isoformat()}."
    enforced = outcome.gate.mode == "enforced"
    words += (
        " The referral is held until the gate is met or overridden."
        if enforced
        else " The gate is advisory: the referral goes ahead."
    )
    issue: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "extension": [
            {"url": GATE_MODE, "valueCode": outcome.gate.mode},
            {"url": f"{WAYMARK}/StructureDefinition/gate-outcome", "valueCode": outcome.outcome},
        ],
        "status": "final",
        "code": {
            "coding": [
                {"system": GATE_ID, "code": outcome.gate.code, "display": outcome.gate.title}
            ]
        },
        "severity": "high" if enforced else "low",
        "patient": {"reference": f"Patient/{patient_id}"},
        "identifiedDateTime": instant(at),
        "implicated": [
            {"reference": f"ServiceRequest/{service_request_id}"},
            {"reference": f"PlanDefinition/{outcome.gate.id}"},
        ],
        "detail": words,
    }
    if outcome.evidence:
        issue["evidence"] = [{"detail": [{"reference": ref} for ref in outcome.evidence]}]
    return issue


# -- release ---------------------------------------------------------------------------------


async def reevaluate_referral(
    store: FhirStore, service_request_id: str, *, skip_locked: bool = False
) -> bool:
    """Release the referral's holds whose gates are now met (or no longer enforced); release
    the referral when none is left. True when the referral was released."""
    repository = GateRepository(store.repo.conn)
    held = await repository.held(service_request_id, skip_locked=skip_locked)
    if not held:
        return False
    patient_id, task_id = held[0].patient_id, held[0].task_id
    request = await store.current("ServiceRequest", service_request_id)
    performer = (request or {}).get("performer", [{}])[0]
    service_id = reference_id(performer, "HealthcareService")
    service = await store.current("HealthcareService", service_id) if service_id else None
    if service is None:
        return False
    now = store.clock()
    outcomes = {
        o.gate.id: o
        for o in await evaluate_gates(
            store,
            patient_id=patient_id,
            service=service,
            today=now.date(),
            referral_code=(request or {}).get("code"),
        )
    }
    released_all = True
    for row in held:
        outcome = outcomes.get(row.gate_id)
        if outcome is None or outcome.gate.mode != "enforced":
            by = "mode"  # the gate was suspended, made advisory, retired or no longer guards it
        elif outcome.outcome == "met":
            by = "evidence"
        else:
            released_all = False
            continue
        await repository.release(service_request_id, row.gate_id, at=now, by=by)
        if row.detected_issue_id:
            await _mitigate(
                store,
                row.detected_issue_id,
                at=now,
                by=by,
                text="Released: the gate is now met"
                if by == "evidence"
                else "Released: the gate is no longer enforced on this service",
            )
    if released_all:
        await release_task(store.as_server(), task_id)
    return released_all


async def release_task(store: FhirStore, task_id: str) -> None:
    """Put a held referral's Task back to requested, through ``store`` (the server's own, or
    the caller's for an override, so that the release is authorised and audited as theirs)."""
    task = await store.current("Task", task_id)
    if task is None or task.get("status") != "on-hold":
        return
    task["status"] = "requested"
    task["businessStatus"] = {
        "coding": [coding(REFERRAL_STATE, "awaiting-triage", "Awaiting triage")]
    }
    task.pop("statusReason", None)
    await store.update("Task", task_id, task)


async def override(
    store: FhirStore, task_id: str, *, gate_code: str, reason: str, client_id: str
) -> dict[str, Any]:
    """Release a held referral from one gate, recording who, when and why."""
    task = await store.read("Task", task_id)  # the caller must be allowed to read it
    focus = orjson.loads(task.content or b"{}").get("focus")
    request_id = reference_id(focus, "ServiceRequest")
    repository = GateRepository(store.repo.conn)
    held = [r for r in await repository.held(request_id or "") if r.gate_code == gate_code]
    if request_id is None or not held:
        raise BusinessRuleViolation(
            f"Task/{task_id} is not held by a gate with code '{gate_code}'",
            expression=("Parameters.parameter[gate]",),
        )
    now = store.clock()
    row = held[0]
    await repository.release(request_id, row.gate_id, at=now, by="override")
    if row.detected_issue_id:
        await _mitigate(
            store,
            row.detected_issue_id,
            at=now,
            by="override",
            text=f"Overridden by client {client_id}: {reason}",
        )
    if not await repository.held(request_id):
        await release_task(store, task_id)
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "task", "valueReference": {"reference": f"Task/{task_id}"}},
            {"name": "gate", "valueCode": gate_code},
            {"name": "released", "valueBoolean": not await repository.held(request_id)},
        ],
    }


async def _mitigate(store: FhirStore, issue_id: str, *, at: datetime, by: str, text: str) -> None:
    issue = await store.current("DetectedIssue", issue_id)
    if issue is None:
        return
    issue.setdefault("mitigation", []).append(
        {
            "extension": [{"url": RELEASED_BY, "valueCode": by}],
            "action": {"text": text},
            "date": instant(at),
        }
    )
    await store.as_server().update("DetectedIssue", issue_id, issue)


async def reevaluate_patient(store: FhirStore, patient_id: str) -> None:
    """New evidence or a phase change for a person: re-evaluate the gates holding their
    referrals."""
    repository = GateRepository(store.repo.conn)
    for service_request_id in await repository.held_referrals_of(patient_id):
        await reevaluate_referral(store, service_request_id)


async def reevaluate_held(
    store: FhirStore, *, after: str, limit: int
) -> tuple[int, int, str | None]:
    """One batch of ``waymark gates reevaluate``: (looked at, released, the last id, or None
    when there are no more). Reads only the held referrals, in id order."""
    batch = await GateRepository(store.repo.conn).held_referrals(after=after, limit=limit)
    released = 0
    for service_request_id in batch:
        if await reevaluate_referral(store, service_request_id, skip_locked=True):
            released += 1
    return len(batch), released, batch[-1] if len(batch) == limit else None
