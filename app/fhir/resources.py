"""The one import point for fhir.resources: Waymark speaks FHIR R4 (4.0.1) on the wire.

fhir.resources' R4B models are wire-compatible with R4 for every resource served here, so they
are used for structural validation. Nothing else in the code base imports ``fhir.resources``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

FHIR_VERSION = "4.0.1"

ALL_INTERACTIONS = frozenset(
    {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history-instance",
        "history-type",
        "create",
        "search-type",
    }
)
READ_ONLY_INTERACTIONS = frozenset(
    {"read", "vread", "history-instance", "history-type", "search-type"}
)


@dataclass(frozen=True, slots=True)
class ResourcePolicy:
    """What the REST API lets clients do with one resource type."""

    interactions: frozenset[str] = ALL_INTERACTIONS
    documentation: str = ""


# The resource types served (DESIGN.md, "Resources served").
SERVED: dict[str, ResourcePolicy] = {
    name: ResourcePolicy()
    for name in (
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "HealthcareService",
        "Location",
        "ServiceRequest",
        "Task",
        "CarePlan",
        "EpisodeOfCare",
        "Encounter",
        "Condition",
        "Observation",
        "QuestionnaireResponse",
        "MedicationStatement",
        "MedicationRequest",
        "Consent",
        "DocumentReference",
        "Communication",
        "CommunicationRequest",
        "Flag",
        "DetectedIssue",
        "Provenance",
        "Subscription",
        "PlanDefinition",
        "ActivityDefinition",
        "CodeSystem",
        "ValueSet",
        "Measure",
        "MeasureReport",
        "OperationDefinition",
    )
}
SERVED["AuditEvent"] = ResourcePolicy(
    interactions=READ_ONLY_INTERACTIONS,
    documentation="Written by the server for every interaction; never created, changed or "
    "deleted through the API.",
)
SERVED = dict(sorted(SERVED.items()))


def instant(value: datetime) -> str:
    """A FHIR instant in UTC, to the millisecond."""
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@cache
def model_class(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


@cache
def mandatory_elements(resource_type: str) -> frozenset[str]:
    """The top-level elements of ``resource_type`` with a minimum cardinality of 1, as the
    JSON names them (a required choice keeps every one of its names, e.g. medication[x]).
    Computed once per type from the model's field information."""
    names = set()
    for name, info in model_class(resource_type).model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        required = extra.get("element_required") or extra.get("one_of_many_required")
        if info.is_required() or required:
            names.add(info.alias or name)
    return frozenset(names)


#: Resource types that exist only as the base of others: no resource is of these types.
_ABSTRACT_RESOURCES = frozenset({"Resource", "DomainResource"})


def is_resource_type(name: str) -> bool:
    """Whether ``name`` is a concrete FHIR resource type (served here or not), as a contained
    resource may be. Not cached: names come from clients, and misses would pile up."""
    if name in _ABSTRACT_RESOURCES:
        return False
    try:
        found = get_fhir_model_class(name)
    except ValueError:
        return False
    return bool(found.has_resource_base())


def warm_up() -> None:
    """Pay the import and first-validation cost at start-up, not on the first request."""
    for resource_type in SERVED:
        model_class(resource_type)
    model_class("Patient").model_validate(
        {"resourceType": "Patient", "name": [{"family": "Warm"}], "birthDate": "1970-01-01"}
    )
