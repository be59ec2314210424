"""The codes and URLs the pathway rules read. The CodeSystems and ValueSets themselves are
data, in ``seed/terminology``, served as FHIR resources at these canonical URLs."""

from __future__ import annotations

from typing import Any

from app.canonical import WAYMARK

SNOMED = "http://snomed.info/sct"
PATIENT_REFERRAL = "3457005"  # ServiceRequest.category of a referral

SERVICE_KIND = f"{WAYMARK}/CodeSystem/service-kind"
REFERRAL_STATE = f"{WAYMARK}/CodeSystem/referral-state"
HOLD_REASON = f"{WAYMARK}/CodeSystem/hold-reason"
PATHWAY_PHASE = f"{WAYMARK}/CodeSystem/pathway-phase"

ROUTES_PLAN = f"{WAYMARK}/PlanDefinition/referral-routes"
ROUTE_FROM = f"{WAYMARK}/StructureDefinition/route-from"
ROUTE_REQUIRES_LIBERATION_DATE = f"{WAYMARK}/StructureDefinition/route-requires-liberation-date"
LIBERATION_DATE = f"{WAYMARK}/StructureDefinition/liberation-date"
REFERRAL_TASK = f"{WAYMARK}/StructureDefinition/referral-task"
REFERRING_SERVICE = f"{WAYMARK}/StructureDefinition/referring-service"

PAUSES_CLOCK = "pauses-clock"  # the hold-reason property: the person owns the reason


def codes(concept: Any, system: str) -> list[str]:
    """The codes of ``system`` in a CodeableConcept (or a list of them)."""
    concepts = concept if isinstance(concept, list) else [concept]
    return [
        str(coding["code"])
        for item in concepts
        if isinstance(item, dict)
        for coding in item.get("coding", ())
        if isinstance(coding, dict) and coding.get("system") == system and "code" in coding
    ]


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    found = {"system": system, "code": code}
    if display:
        found["display"] = display
    return found


def reference_id(reference: Any, resource_type: str) -> str | None:
    """The id in a local ``Type/id`` reference of the given type, else None."""
    text = reference.get("reference") if isinstance(reference, dict) else None
    if isinstance(text, str):
        parts = text.split("/")
        if len(parts) in (2, 4) and parts[0] == resource_type and parts[1]:
            return parts[1]
    return None
