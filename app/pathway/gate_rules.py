"""Gates acting on referrals: their definitions checked, the gates of a service found, and
their evaluation for a person (what a referral records of it, and whether it holds).

What happens to a hold afterwards is in ``gate_release``; the record of each decision in
``gate_records``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from app.fhir.store import FhirStore
from app.pathway.codes import HOLD_REASON, coding
from app.pathway.gate_records import GATE_EVALUATION
from app.pathway.gates import (
    GATE_EVIDENCE,
    GATE_KIND,
    GATE_SUBSTANCES,
    KINDS,
    OPIOID_SUBSTITUTION,
    Gate,
    Outcome,
    evaluate,
    evidence_from,
    gate_from,
    is_gate,
)

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
    return [(gate, plan) for gate, plan in await _active_gates(store) if gate.guards(service)]


async def _active_gates(store: FhirStore) -> list[tuple[Gate, dict[str, Any]]]:
    """Every active gate, read and parsed once per transaction (``waymark gates reevaluate``
    looks at hundreds of referrals in one)."""
    memo = store.derived_from("PlanDefinition")
    if "gates" not in memo:
        plans = await store.find(
            "PlanDefinition",
            [
                ("type", ",".join(f"{GATE_KIND}|{kind}" for kind in KINDS)),
                ("status", "active"),
            ],
            count=500,
        )
        memo["gates"] = [(gate_from(plan), plan) for plan in plans]
    gates: list[tuple[Gate, dict[str, Any]]] = memo["gates"]
    return gates


async def value_set_members(store: FhirStore, url: str) -> frozenset[tuple[str | None, str]]:
    """The (system, code) pairs a ValueSet's compose includes by enumeration."""
    memo = store.derived_from("ValueSet")
    if url not in memo:
        sets = await store.find("ValueSet", [("url", url)], count=1)
        memo[url] = frozenset(
            (include.get("system"), str(concept["code"]))
            for value_set in sets
            for include in value_set.get("compose", {}).get("include", [])
            for concept in include.get("concept", [])
        )
    members: frozenset[tuple[str | None, str]] = memo[url]
    return members


async def value_set_codes(store: FhirStore, url: str) -> frozenset[str]:
    return frozenset(code for _, code in await value_set_members(store, url))


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
    gates = await gates_acting(store, service=service, referral_code=referral_code)
    return await evaluate_for(store, gates, patient_id=patient_id, today=today)


async def gates_acting(
    store: FhirStore, *, service: dict[str, Any], referral_code: Any = None
) -> list[Gate]:
    """The gates with a rule (abstinence, phase) acting on a referral with ``referral_code``
    into ``service``."""
    gates = []
    for gate, _ in await gates_guarding(store, service):
        if gate.applies_to is not None and not await in_value_set(
            store, referral_code, gate.applies_to
        ):
            continue
        if gate.kind in KINDS:
            gates.append(gate)
    return gates


def evidence_types(gate: Gate) -> tuple[str, ...]:
    """The resource types a gate's evaluation reads (beyond its PlanDefinition): what a
    caller must be allowed to read to see its outcome."""
    if gate.kind == "phase":
        return ("CarePlan", "Observation")  # phase 1's record and the readiness review
    if gate.ost_counts:
        return ("Observation", "MedicationStatement", "MedicationRequest")
    return ("Observation",)


async def evidence_types_of(store: FhirStore, gate_id: str, kind: str) -> tuple[str, ...]:
    """``evidence_types`` of the gate ``gate_id``; for a gate no longer active, every type a
    gate of its kind may read (opioid substitution counting), so that nothing is shown that
    might depend on a record the caller may not read."""
    for gate, _ in await _active_gates(store):
        if gate.id == gate_id:
            return evidence_types(gate)
    if kind == "phase":
        return ("CarePlan", "Observation")
    return ("Observation", "MedicationStatement", "MedicationRequest")


async def evaluate_for(
    store: FhirStore, gates: list[Gate], *, patient_id: str, today: date
) -> list[Outcome]:
    """``gates`` evaluated for the patient today, reading only the evidence they need."""
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
    ost_codes: frozenset[tuple[str | None, str]] = frozenset()
    if any(g.ost_counts for g in abstinence):
        ost_codes = await value_set_members(store, OPIOID_SUBSTITUTION)
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
    members = await value_set_members(store, url)
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
    """The held Task's statusReason. A Task is read by clients that may not read the person's
    records, so it names each gate and, for an unknown outcome, the kind of evidence needed,
    never the evidence itself (a date of last use, a phase's state): that stays in the gate's
    DetectedIssue and in operations that check the caller may read it."""
    return {
        "coding": [coding(HOLD_REASON, "gate-not-met", "Entry criterion not met")],
        "text": "Held by " + "; ".join(_held_because(o) for o in held),
    }


def _held_because(outcome: Outcome) -> str:
    if outcome.outcome == "unknown":
        return f"{outcome.gate.title} ({outcome.detail})"
    return f"{outcome.gate.title} (Not met: its DetectedIssue gives the evidence)"
