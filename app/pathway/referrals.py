"""Referrals: a ServiceRequest (category 3457005, performer a HealthcareService) and the Task
that carries its workflow, created together, kept in step, and never dropped.

Everything here runs as write hooks inside the write's transaction: the ServiceRequest, its
Task, the projection rows and the audit trail commit together or not at all.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from app.fhir.access import OpenAccess
from app.fhir.errors import BusinessRuleViolation
from app.fhir.hooks import WriteEvent, WriteHooks
from app.fhir.store import FhirStore
from app.pathway.codes import (
    HOLD_REASON,
    LIBERATION_DATE,
    PATIENT_REFERRAL,
    PAUSES_CLOCK,
    REFERRAL_STATE,
    REFERRAL_TASK,
    REFERRING_SERVICE,
    SNOMED,
    codes,
    coding,
    reference_id,
)
from app.pathway.directory import Service, receiving_service, routes, sending_service
from app.pathway.gate_records import protect_gate_issues, record_decisions
from app.pathway.gate_release import close_holds, reevaluate_patient
from app.pathway.gate_rules import (
    check_gate_definition,
    evaluate_gates,
    evaluation_extensions,
    hold_reason,
    holds,
    in_value_set,
)
from app.pathway.phases import TRAUMA_FOCUSSED_THERAPY, ensure_plan, phase_one_missing
from app.pathway.referral_changes import (
    FOLLOWS_TASK,
    KEPT_BY_SERVER,
    SR_OPEN,
    check_new_referral,
    check_referral_change,
    refuse_becoming_a_referral,
)
from app.pathway.repository import GateRepository, ReferralRepository
from app.pathway.workflow import (
    CLOSES_A_GATE_HOLD,
    OPEN,
    check_transition,
    held_by_gate,
    status_before_hold,
    timeline_event,
)


def install(hooks: WriteHooks) -> None:
    hooks.before("ServiceRequest", _before_service_request)
    hooks.after("ServiceRequest", _after_service_request)
    hooks.before("Task", _before_task)
    hooks.after("Task", _after_task)
    hooks.before("PlanDefinition", _before_plan)
    hooks.before("DetectedIssue", protect_gate_issues)
    for evidence in ("Observation", "MedicationStatement", "MedicationRequest"):
        hooks.after(evidence, _evidence_written)


async def _before_plan(event: WriteEvent) -> None:
    if event.after is not None:
        await check_gate_definition(event.store, event.after)


async def _evidence_written(event: WriteEvent) -> None:
    """New evidence about a person: re-evaluate the gates holding their referrals."""
    document = event.after or event.before or {}
    patient_id = reference_id(document.get("subject"), "Patient")
    if patient_id is not None:
        cause = f"{event.resource_type}/{event.resource_id}"
        await reevaluate_patient(event.store, patient_id, cause=cause)


def is_referral(document: dict[str, Any]) -> bool:
    performers = document.get("performer") or []
    return PATIENT_REFERRAL in codes(document.get("category", []), SNOMED) and bool(
        performers and reference_id(performers[0], "HealthcareService")
    )


def _repository(store: FhirStore) -> ReferralRepository:
    return ReferralRepository(store.repo.conn)


# -- the ServiceRequest ----------------------------------------------------------------------


async def _before_service_request(event: WriteEvent) -> None:
    existing = await _repository(event.store).by_service_request(event.resource_id)
    if event.after is None:  # a deletion
        if existing is not None:
            raise BusinessRuleViolation(
                "A referral is never deleted: revoke it (ServiceRequest.status = revoked) or "
                "cancel its Task, with a reason"
            )
        return
    if existing is not None:
        check_referral_change(event.before or {}, event.after, existing)
        return
    if not is_referral(event.after):
        return
    if event.before is not None:
        if not is_referral(event.before):
            refuse_becoming_a_referral()
        return  # a referral made before these rules kept projections: left as it is
    check_new_referral(event.after)
    await _accept_new_referral(event)


async def _accept_new_referral(event: WriteEvent) -> None:
    store, document = event.store, event.after
    assert document is not None
    patient_id = reference_id(document.get("subject"), "Patient")
    if patient_id is None or await store.current("Patient", patient_id) is None:
        raise BusinessRuleViolation(
            "A referral's subject must be a Patient known here "
            f"({(document.get('subject') or {}).get('reference', 'none given')} is not)",
            expression=("ServiceRequest.subject",),
        )
    to_service = await receiving_service(store, document["performer"][0])
    from_service = await sending_service(store, document.get("requester"))
    liberation = await _check_route(store, document, from_service, to_service)
    await _refuse_duplicate(store, patient_id, to_service)
    service = await store.current("HealthcareService", to_service.id)
    assert service is not None
    outcomes = await evaluate_gates(
        store,
        patient_id=patient_id,
        service=service,
        today=store.clock().date(),
        referral_code=document.get("code"),
    )
    task_id = str(uuid.uuid4())
    extensions = [e for e in document.get("extension", []) if e.get("url") not in KEPT_BY_SERVER]
    extensions += evaluation_extensions(outcomes)
    extensions.append({"url": REFERRAL_TASK, "valueReference": {"reference": f"Task/{task_id}"}})
    extensions.append(
        {
            "url": REFERRING_SERVICE,
            "valueReference": {
                "reference": f"HealthcareService/{from_service.id}",
                "display": from_service.name,
            },
        }
    )
    document["extension"] = extensions
    event.context.update(
        task_id=task_id,
        patient_id=patient_id,
        from_service=from_service,
        to_service=to_service,
        liberation=liberation,
        gates=outcomes,
    )


async def _check_route(
    store: FhirStore, document: dict[str, Any], from_service: Service, to_service: Service
) -> date | None:
    """Refuse a route the pathway does not have, or throughcare without its liberation date;
    the liberation date, when given."""
    allowed = await routes(store)
    if not allowed.allows(from_service.kind, to_service.kind):
        raise BusinessRuleViolation(
            f"The pathway has no route from a '{from_service.kind}' service to a "
            f"'{to_service.kind}' service ({from_service.name} to {to_service.name}); the "
            "routes are the referral-routes PlanDefinition",
            expression=("ServiceRequest.performer[0]",),
        )
    liberation = _liberation_date(document)
    if (from_service.kind, to_service.kind) in allowed.needs_liberation_date and not liberation:
        raise BusinessRuleViolation(
            f"A referral from a '{from_service.kind}' service to a '{to_service.kind}' service "
            f"(throughcare) needs the person's liberation date (extension {LIBERATION_DATE})",
            expression=("ServiceRequest.extension",),
        )
    return liberation


async def _refuse_duplicate(store: FhirStore, patient_id: str, to_service: Service) -> None:
    # Two creates racing for the same person and service must not both find no open
    # referral: serialise them (PostgreSQL; SQLite writers run one at a time anyway).
    await store.repo.lock(f"open-referral|{patient_id}|{to_service.id}")
    duplicate = await _repository(store).open_referral(
        patient_id=patient_id, to_service_id=to_service.id
    )
    if duplicate is not None:
        raise BusinessRuleViolation(
            f"Patient/{patient_id} already has an open referral to {to_service.name}: "
            f"ServiceRequest/{duplicate}; follow that one, or close it first",
            expression=("ServiceRequest.performer[0]",),
        )


async def _after_service_request(event: WriteEvent) -> None:
    store = event.store
    if "task_id" in event.context:
        await _create_task(event)
        return
    if event.after is None or event.before is None:
        return
    row = await _repository(store).by_service_request(event.resource_id)
    revoked = event.after.get("status") in ("revoked", "entered-in-error")
    if row is not None and row.open and revoked and event.before.get("status") in SR_OPEN:
        task = await store.current("Task", row.task_id)
        if task is not None and task.get("status") in OPEN:
            how = "revoked" if event.after["status"] == "revoked" else "marked entered in error"
            task["status"] = "cancelled"
            task["statusReason"] = {"text": f"The referrer {how} the referral (ServiceRequest)"}
            task["businessStatus"] = {"coding": [coding(REFERRAL_STATE, "withdrawn", "Withdrawn")]}
            await store.as_server().update("Task", row.task_id, task)


async def _create_task(event: WriteEvent) -> None:
    store, document, context = event.store, event.after, event.context
    assert document is not None
    from_service: Service = context["from_service"]
    to_service: Service = context["to_service"]
    code = next(
        (
            f"{c.get('system', '')}|{c['code']}"
            for c in (document.get("code") or {}).get("coding", [])
            if isinstance(c, dict) and "code" in c
        ),
        None,
    )
    await _repository(store).add(
        service_request_id=event.resource_id,
        task_id=context["task_id"],
        patient_id=context["patient_id"],
        from_service_id=from_service.id,
        to_service_id=to_service.id,
        from_kind=from_service.kind,
        to_kind=to_service.kind,
        code=code,
        liberation_date=context["liberation"],
        created_at=_instant(document),
    )
    held = holds(context["gates"])
    task: dict[str, Any] = {
        "resourceType": "Task",
        "status": "on-hold" if held else "requested",
        "businessStatus": {
            "coding": [
                coding(REFERRAL_STATE, "held-by-gate", "Held by a gate")
                if held
                else coding(REFERRAL_STATE, "awaiting-triage", "Awaiting triage")
            ]
        },
        "intent": "order",
        "focus": {"reference": f"ServiceRequest/{event.resource_id}"},
        "for": {"reference": f"Patient/{context['patient_id']}"},
        "authoredOn": document["meta"]["lastUpdated"],
        "owner": {"reference": f"HealthcareService/{to_service.id}", "display": to_service.name},
    }
    if document.get("requester"):
        task["requester"] = document["requester"]
    if document.get("code"):
        task["code"] = document["code"]
    if held:
        task["statusReason"] = hold_reason(held)
    await store.as_server().create(task, resource_type="Task", resource_id=context["task_id"])
    await record_decisions(
        store,
        outcomes=context["gates"],
        service_request_id=event.resource_id,
        task_id=context["task_id"],
        patient_id=context["patient_id"],
        at=_instant(document),
    )


# -- the Task --------------------------------------------------------------------------------


async def _before_task(event: WriteEvent) -> None:
    if event.before is None:  # made by the referral's own rule, in this transaction
        return
    row = await _repository(event.store).by_task(event.resource_id)
    if row is None:
        return
    if event.after is None:
        raise BusinessRuleViolation(
            "A referral's Task is never deleted: cancel it (status cancelled) with a reason"
        )
    before = event.before
    for element in ("focus", "for", "owner"):
        if before.get(element) != event.after.get(element):
            raise BusinessRuleViolation(
                f"A referral Task's {element} cannot change",
                expression=(f"Task.{element}",),
            )
    # The gate first: a held referral's way out is the gate's, whatever the state machine says.
    await _check_gate_hold(event.store, row, event.after, before)
    events = await _repository(event.store).events(row.task_id)
    check_transition(before, event.after, before_hold=status_before_hold(events))
    if event.after.get("status") == "in-progress" and before.get("status") != "in-progress":
        await _check_phase_one(event.store, row, event.after)


async def _check_gate_hold(
    store: FhirStore, row: Any, after: dict[str, Any], before: dict[str, Any]
) -> None:
    """A referral held by an enforced gate leaves the hold only when the gate releases it
    (evidence, a change of its mode) or a clinician overrides it ($override-gate), both of
    which end the hold on the record first; or when the referral is closed (rejected,
    cancelled, failed or entered in error, each with its own reason). A plain update
    would let it through with no decision recorded. And only a gate decision puts a referral
    in held-by-gate: a client's would be a hold no gate record explains."""
    holding = await GateRepository(store.repo.conn).held(row.service_request_id)
    if not holding:
        if (
            held_by_gate(after)
            and not held_by_gate(before)
            and not isinstance(store.access, OpenAccess)
        ):
            raise BusinessRuleViolation(
                "held-by-gate is set by a gate's decision, which this referral has none of: "
                "to pause it, put the Task on-hold with a hold-reason code (referral-state "
                "on-hold)",
                expression=("Task.businessStatus",),
            )
        return
    status = after.get("status")
    if status in CLOSES_A_GATE_HOLD:
        return  # the state machine's rule for closing a gate's hold decides (workflow)
    if not held_by_gate(after):
        names = ", ".join(f"'{r.gate_code}' (PlanDefinition/{r.gate_id})" for r in holding)
        raise BusinessRuleViolation(
            f"Task/{row.task_id} is held by the gate {names}: it stays on-hold, held-by-gate, "
            "until the gate is met (add the evidence it needs; its DetectedIssue names it) or "
            f"a clinician overrides it with a reason (POST /Task/{row.task_id}/$override-gate)",
            expression=("Task.status",) if status != "on-hold" else ("Task.businessStatus",),
        )


async def _check_phase_one(store: FhirStore, row: Any, task: dict[str, Any]) -> None:
    """Trauma-focussed work starts after phase 1, unless a clinician overrode the phase gate
    on this referral."""
    if not await in_value_set(store, task.get("code"), TRAUMA_FOCUSSED_THERAPY):
        return
    missing = await phase_one_missing(store, row.patient_id)
    if missing is None:
        return
    decisions = await GateRepository(store.repo.conn).of_referral(row.service_request_id)
    if any(d.gate_kind == "phase" and d.released_by == "override" for d in decisions):
        return
    raise BusinessRuleViolation(
        f"Trauma-focussed work cannot start yet: {missing}. A clinician may override the "
        "phase gate with a reason (POST /Task/{id}/$override-gate)",
        expression=("Task.status",),
    )


async def _after_task(event: WriteEvent) -> None:
    if event.after is None:
        return
    store = event.store
    repository = _repository(store)
    row = await repository.by_task(event.resource_id)
    if row is None:
        return
    values = timeline_event(
        event.before,
        event.after,
        service_request_id=row.service_request_id,
        clock_pausing_reasons=await clock_pausing_reasons(store),
    )
    if values is None:
        return
    await repository.add_event(**values)
    status = str(event.after["status"])
    await repository.set_state(
        event.resource_id,
        status=status,
        business_status=values["business_status"],
        is_open=status in OPEN,
    )
    if status == "accepted":
        await ensure_plan(store, row.patient_id)
    if status not in OPEN:
        await close_holds(
            store,
            row.service_request_id,
            closed_as=status,
            why=values["reason_text"] or values["reason_code"],
            who=values["who"],
        )
    await _follow_task(store, row.service_request_id, status)


async def _follow_task(store: FhirStore, service_request_id: str, task_status: str) -> None:
    """Keep the ServiceRequest in step: a Task closed without its work revokes it, a
    completed one completes it."""
    wanted = FOLLOWS_TASK.get(task_status)
    if wanted is None:
        return
    request = await store.current("ServiceRequest", service_request_id)
    if request is not None and request.get("status") in SR_OPEN:
        request["status"] = wanted
        await store.as_server().update("ServiceRequest", service_request_id, request)


async def clock_pausing_reasons(store: FhirStore) -> frozenset[str]:
    """Hold reasons the person owns (the hold-reason CodeSystem's pauses-clock property)."""
    memo = store.derived_from("CodeSystem")
    if HOLD_REASON not in memo:
        systems = await store.find("CodeSystem", [("url", HOLD_REASON)], count=1)
        memo[HOLD_REASON] = frozenset(
            str(concept["code"])
            for system in systems
            for concept in system.get("concept", [])
            for prop in concept.get("property", [])
            if prop.get("code") == PAUSES_CLOCK and prop.get("valueBoolean") is True
        )
    reasons: frozenset[str] = memo[HOLD_REASON]
    return reasons


def _liberation_date(document: dict[str, Any]) -> date | None:
    for extension in document.get("extension", []):
        if extension.get("url") == LIBERATION_DATE and isinstance(extension.get("valueDate"), str):
            try:
                return date.fromisoformat(extension["valueDate"])
            except ValueError:
                return None
    return None


def _instant(document: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(document["meta"]["lastUpdated"]).replace("Z", "+00:00"))
