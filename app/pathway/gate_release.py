"""Holds ending: re-evaluation (new evidence, time passing, a gate's mode changed), overrides
by a clinician, and a held referral closed.

A held referral is never dropped: its Task stays on hold until evidence, a change of the gate's
mode, or a recorded override releases it, or until the referral is closed. Each of those is a
decision on the record (``gate_records``), in the same transaction as the Task's change.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from app.fhir.errors import BusinessRuleViolation
from app.fhir.store import FhirStore
from app.pathway.codes import REFERRAL_STATE, coding, reference_id
from app.pathway.gate_records import Decision, moment, record
from app.pathway.gate_rules import evaluate_gates
from app.pathway.gates import Outcome
from app.pathway.repository import GateRepository, ReferralRepository


async def reevaluate_referral(
    store: FhirStore,
    service_request_id: str,
    *,
    skip_locked: bool = False,
    cause: str | None = None,
) -> bool:
    """Release the referral's holds whose gates are now met (or no longer enforced), record
    a hold whose outcome or mode changed, and release the referral when no hold is left.
    True when the referral was released.

    ``cause``: the resource whose write led to the re-evaluation (``Observation/{id}``), by
    the caller of ``store``. Any client allowed to write evidence can so release a hold: each
    decision then names the resource and its writer (the log's ``who`` and ``reason``, the
    DetectedIssue's mitigation in its gate-release-evidence and gate-release-writer extensions,
    the released Task's statusReason and so its timeline), so that
    a reviewer sees what released it and who wrote that."""
    repository = GateRepository(store.repo.conn)
    held = await repository.held(service_request_id, skip_locked=skip_locked)
    if not held:
        return False
    row = await ReferralRepository(store.repo.conn).by_service_request(service_request_id)
    if row is not None and not row.open:
        # Closed while held before holds were closed with their referral: close them now
        # rather than "release" a closed referral.
        await close_holds(store, service_request_id)
        return False
    outcomes = await _outcomes_now(store, service_request_id)
    if outcomes is None:
        return False
    now = moment(store.clock())
    because = _written(cause, store.access.source)
    released_all = True
    for row in held:
        outcome = outcomes.get(row.gate_id)
        decision = _reevaluation(row, outcome, now)
        if decision is None:
            released_all = False
            continue
        if decision.held:
            released_all = False
        if because is not None:
            decision = replace(decision, who=store.access.source, reason=because)
        await record(store, row, decision, note=_release_note(decision), evidence=cause)
    if released_all:
        reason = None if because is None else f"Released from its gate hold: {because}"
        await release_task(store.as_server(), held[0].task_id, reason=reason)
    return released_all


def _written(cause: str | None, who: str | None) -> str | None:
    """What a re-evaluation followed, in words (None: not a write, e.g. time passing)."""
    if cause is None:
        return None
    return f"{cause} was written by {who or 'the server'}"


async def _outcomes_now(store: FhirStore, service_request_id: str) -> dict[str, Outcome] | None:
    """The referral's gates evaluated now, by gate id (None when it is no longer a referral
    into an existing service)."""
    request = await store.current("ServiceRequest", service_request_id)
    row = await ReferralRepository(store.repo.conn).by_service_request(service_request_id)
    performer = (request or {}).get("performer", [{}])[0]
    service_id = reference_id(performer, "HealthcareService")
    service = await store.current("HealthcareService", service_id) if service_id else None
    if service is None or row is None:
        return None
    evaluated = await evaluate_gates(
        store,
        patient_id=row.patient_id,
        service=service,
        today=store.clock().date(),
        referral_code=(request or {}).get("code"),
    )
    return {o.gate.id: o for o in evaluated}


def _reevaluation(row: Any, outcome: Outcome | None, now: Any) -> Decision | None:
    """What a re-evaluation decides for one hold (None: nothing changed)."""
    if outcome is None or outcome.gate.mode != "enforced":
        # The gate was suspended, made advisory, retired or no longer guards the service.
        mode = outcome.gate.mode if outcome is not None else row.mode
        result = outcome.outcome if outcome is not None else row.outcome
        return Decision.following(
            row,
            action="released",
            mode=mode,
            outcome=result,
            at=now,
            held=False,
            released_by="mode",
        )
    if outcome.outcome == "met":
        return Decision.following(
            row,
            action="released",
            mode="enforced",
            outcome="met",
            at=now,
            held=False,
            released_by="evidence",
        )
    if outcome.outcome == row.outcome and row.mode == "enforced":
        return None  # the same decision again: nothing new to record
    return Decision.following(
        row, action="reevaluated", mode="enforced", outcome=outcome.outcome, at=now, held=True
    )


def _release_note(decision: Decision) -> str | None:
    if decision.released_by == "evidence":
        return "Released: the gate is now met"
    if decision.released_by == "mode":
        return "Released: the gate is no longer enforced on this service"
    return None


async def release_task(store: FhirStore, task_id: str, *, reason: str | None = None) -> None:
    """Put a held referral's Task back to requested, through ``store`` (the server's own, or
    the caller's for an override, so that the release is authorised and audited as theirs).
    ``reason``: why, kept as the Task's statusReason (and so on the referral's timeline)."""
    task = await store.current("Task", task_id)
    if task is None or task.get("status") != "on-hold":
        return
    task["status"] = "requested"
    task["businessStatus"] = {
        "coding": [coding(REFERRAL_STATE, "awaiting-triage", "Awaiting triage")]
    }
    task.pop("statusReason", None)
    if reason is not None:
        task["statusReason"] = {"text": reason}
    await store.update("Task", task_id, task)


async def close_holds(
    store: FhirStore,
    service_request_id: str,
    *,
    closed_as: str | None = None,
    why: str | None = None,
    who: str | None = None,
) -> None:
    """The referral was closed while held (its Task ``closed_as``, for the reason ``why``, by
    the client ``who``): its holds end, so that no re-evaluation visits it again or releases a
    closed referral. Each hold's record keeps its held period: a ``closed`` decision with its
    time, reason and client is appended, and nothing before it is changed."""
    now = moment(store.clock())
    reason = None
    if closed_as is not None:
        reason = f"The referral's Task was {closed_as}" + (f": {why}" if why else "")
    for row in await GateRepository(store.repo.conn).held(service_request_id):
        decision = Decision.following(
            row, action="closed", at=now, held=False, who=who, reason=reason
        )
        await record(store, row, decision)


async def override(
    store: FhirStore, task_id: str, *, gate_code: str, reason: str, client_id: str
) -> dict[str, Any]:
    """Release a referral from one gate, recording who, when and why: a gate that holds it,
    or the phase gate on trauma-focussed work that it did not hold (made while the gate was
    suspended, or before phase 1 was reopened), which still keeps the work from starting."""
    task = await store.read("Task", task_id)  # the caller must be allowed to read it
    focus = orjson.loads(task.content or b"{}").get("focus")
    request_id = reference_id(focus, "ServiceRequest") or ""
    repository = GateRepository(store.repo.conn)
    held = [r for r in await repository.held(request_id) if r.gate_code == gate_code]
    now = moment(store.clock())
    who = store.access.source
    if held:
        decision = Decision.following(
            held[0],
            action="overridden",
            at=now,
            held=False,
            released_by="override",
            who=who,
            reason=reason,
        )
        note = f"Overridden by client {client_id}: {reason}"
        await record(store, held[0], decision, note=note)
        if not await repository.held(request_id):
            await release_task(store, task_id)
    else:
        await _override_phase_gate(store, request_id, task_id, gate_code, reason, client_id)
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "task", "valueReference": {"reference": f"Task/{task_id}"}},
            {"name": "gate", "valueCode": gate_code},
            {"name": "released", "valueBoolean": not await repository.held(request_id)},
        ],
    }


async def _override_phase_gate(
    store: FhirStore, request_id: str, task_id: str, gate_code: str, reason: str, client_id: str
) -> None:
    row = await ReferralRepository(store.repo.conn).by_service_request(request_id)
    outcomes = await _outcomes_now(store, request_id) if row is not None else None
    outcome = next((o for o in (outcomes or {}).values() if o.gate.code == gate_code), None)
    if row is None or outcome is None or outcome.gate.kind != "phase" or outcome.outcome == "met":
        raise BusinessRuleViolation(
            f"Task/{task_id} is not held by a gate with code '{gate_code}', and that is not "
            "a phase gate keeping its trauma-focussed work from starting",
            expression=("Parameters.parameter[gate]",),
        )
    current = {
        r.gate_id: r for r in await GateRepository(store.repo.conn).current_of_referral(request_id)
    }
    decision = Decision(
        request_id,
        task_id,
        row.patient_id,
        outcome.gate.id,
        outcome.gate.code,
        "phase",
        "overridden",
        outcome.gate.mode,
        outcome.outcome,
        moment(store.clock()),
        False,
        released_by="override",
        who=store.access.source,
        reason=reason,
    )
    note = f"Overridden by client {client_id}: {reason}"
    await record(store, current.get(outcome.gate.id), decision, note=note, title=outcome.gate.title)


async def reevaluate_patient(store: FhirStore, patient_id: str, *, cause: str) -> None:
    """New evidence or a phase change for a person (``cause``, the resource written):
    re-evaluate the gates holding their referrals."""
    repository = GateRepository(store.repo.conn)
    for service_request_id in await repository.held_referrals_of(patient_id):
        await reevaluate_referral(store, service_request_id, cause=cause)


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
