"""The gate operations: $evaluate-gates, $gates and $override-gate (their rules; the HTTP
edges are in app/api/operations.py)."""

from __future__ import annotations

from typing import Any

import orjson

from app.fhir.errors import Forbidden, InvalidRequest, NotFound
from app.fhir.store import FhirStore
from app.pathway.codes import reference_id
from app.pathway.gate_release import override
from app.pathway.gate_rules import evaluate_for, evidence_types, gates_acting, gates_guarding
from app.pathway.gates import Gate, Outcome
from app.pathway.phase_override import override_phase_two
from app.pathway.repository import ReferralRepository
from app.security.principal import Principal
from app.security.scopes import GATE_OVERRIDE_SCOPE


async def evaluate_referral_gates(store: FhirStore, service_request_id: str) -> dict[str, Any]:
    """$evaluate-gates. What the caller may read is decided from its scopes before anything
    else is read: the gates are PlanDefinitions (none is named without read access to them),
    and a gate's outcome, evidence and detail come from the person's records (the types
    ``evidence_types`` names): without read access to all of them the gate is named but not
    evaluated. What was left out is said, in the gate's ``omitted`` part and in one top-level
    ``omitted`` per type, as $pathway does."""
    stored = await store.read("ServiceRequest", service_request_id)
    request = orjson.loads(stored.content or b"{}")
    row = await ReferralRepository(store.repo.conn).by_service_request(service_request_id)
    performer = (request.get("performer") or [{}])[0]
    service_id = reference_id(performer, "HealthcareService")
    service = await store.current("HealthcareService", service_id) if service_id else None
    patient_id = reference_id(request.get("subject"), "Patient")
    if row is None or service is None or patient_id is None:
        raise NotFound(f"ServiceRequest/{service_request_id} is not a referral")
    if not store.access.permits("read", "PlanDefinition"):
        return _parameters_of([], {"PlanDefinition"})
    acting = await gates_acting(store, service=service, referral_code=request.get("code"))
    gates = [g for g in acting if g.kind == "phase"] + [g for g in acting if g.kind != "phase"]
    unreadable = {
        g.id: [t for t in evidence_types(g) if not store.access.permits("read", t)] for g in gates
    }
    outcomes = await evaluate_for(
        store,
        [g for g in gates if not unreadable[g.id]],
        patient_id=patient_id,
        today=store.clock().date(),
    )
    evaluated = {o.gate.id: o for o in outcomes}
    parts = [_gate_parts(gate, evaluated.get(gate.id), unreadable[gate.id]) for gate in gates]
    return _parameters_of(parts, {t for types in unreadable.values() for t in types})


def _gate_parts(gate: Gate, outcome: Outcome | None, unreadable: list[str]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"name": "gate", "valueReference": {"reference": f"PlanDefinition/{gate.id}"}},
        {"name": "code", "valueCode": gate.code},
        {"name": "title", "valueString": gate.title},
        {"name": "kind", "valueCode": gate.kind},
        {"name": "mode", "valueCode": gate.mode},
    ]
    if outcome is None:
        parts.append(
            {
                "name": "omitted",
                "valueString": "outcome, evidence and detail: the token has no read scope for "
                + ", ".join(unreadable),
            }
        )
        return {"name": "gate", "part": parts}
    parts += [
        {"name": "outcome", "valueCode": outcome.outcome},
        *({"name": "evidence", "valueReference": {"reference": r}} for r in outcome.evidence),
        {"name": "detail", "valueString": outcome.detail},
    ]
    if outcome.met_on is not None:
        parts.append({"name": "metOn", "valueDate": outcome.met_on.isoformat()})
    if outcome.needed:
        parts.append({"name": "needed", "valueString": outcome.needed})
    return {"name": "gate", "part": parts}


def _parameters_of(gates: list[dict[str, Any]], omitted: set[str]) -> dict[str, Any]:
    parameters = gates + [
        {"name": "omitted", "valueString": f"{t}: the token has no read scope"}
        for t in sorted(omitted)
    ]
    return {"resourceType": "Parameters", **({"parameter": parameters} if parameters else {})}


async def gates_of_service(store: FhirStore, service_id: str, *, base_url: str) -> dict[str, Any]:
    stored = await store.read("HealthcareService", service_id)
    store.access.authorise("search-type", "PlanDefinition")
    store.access.authorise("read", "PlanDefinition")  # the answer is the PlanDefinitions
    gates = await gates_guarding(store, orjson.loads(stored.content or b"{}"))
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "total": len(gates),
        "entry": [
            {"fullUrl": f"{base_url}/PlanDefinition/{plan['id']}", "resource": plan}
            for _, plan in gates
        ],
    }


async def override_gate(
    store: FhirStore, task_id: str, parameters: Any, *, principal: Principal | None
) -> dict[str, Any]:
    """$override-gate on a referral's Task."""
    client_id = _may_override(principal, "Task")
    store.access.authorise("update", "Task", task_id)
    gate, reason = _gate_and_reason(parameters)
    return await override(store, task_id, gate_code=gate, reason=reason, client_id=client_id)


async def override_phase_gate(
    store: FhirStore, care_plan_id: str, parameters: Any, *, principal: Principal | None
) -> dict[str, Any]:
    """$override-gate on a pathway CarePlan: phase 2 starts before phase 1 is complete."""
    client_id = _may_override(principal, "CarePlan")
    store.access.authorise("update", "CarePlan", care_plan_id)
    gate, reason = _gate_and_reason(parameters)
    return await override_phase_two(
        store, care_plan_id, gate_code=gate, reason=reason, client_id=client_id
    )


def _may_override(principal: Principal | None, resource_type: str) -> str:
    if principal is None or GATE_OVERRIDE_SCOPE not in principal.scopes:
        raise Forbidden(
            f"Overriding a gate needs the scope {GATE_OVERRIDE_SCOPE} "
            f"(and system/{resource_type}.u)"
        )
    return principal.client_id


def _gate_and_reason(parameters: Any) -> tuple[str, str]:
    values = _parameters(parameters)
    gate, reason = values.get("gate"), values.get("reason")
    if not gate or not reason or not reason.strip():
        raise InvalidRequest(
            "$override-gate takes a Parameters resource with 'gate' (valueCode) and 'reason' "
            "(valueString, saying why)",
            expression=("Parameters.parameter",),
        )
    return gate, reason.strip()


def _parameters(document: Any) -> dict[str, str]:
    if not isinstance(document, dict) or document.get("resourceType") != "Parameters":
        raise InvalidRequest("The body must be a Parameters resource", expression=("resourceType",))
    found = {}
    for parameter in document.get("parameter", []):
        if isinstance(parameter, dict) and isinstance(parameter.get("name"), str):
            value = parameter.get("valueCode", parameter.get("valueString"))
            if isinstance(value, str):
                found[parameter["name"]] = value
    return found
