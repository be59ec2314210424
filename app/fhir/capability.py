"""The CapabilityStatement, generated from what the running application really serves.

Interactions are read from the application's routes (each FHIR route is named after the
interaction it implements) and intersected with each resource type's policy; search
parameters come from the search registry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.fhir.resources import FHIR_VERSION, SERVED, ResourcePolicy, instant
from app.fhir.search.registry import all_served, parameters_for

TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)

#: System interactions, by the name of the route that implements them.
SYSTEM_INTERACTIONS = {"transaction": ("transaction", "batch")}

# /$code, /Type/$code or /Type/{id}/$code: the paths FHIR gives operations.
_OPERATION_PATH = re.compile(
    r"^(?:/(?P<type>[A-Z][A-Za-z]+)(?:/\{[a-z_]+\})?)?/\$(?P<code>[a-z][a-z0-9-]*)$"
)


@dataclass(frozen=True, slots=True)
class Operation:
    """A routed FHIR operation: where it is (a resource type, or the system), its name, and
    the canonical URL of its OperationDefinition."""

    resource_type: str | None
    name: str
    definition: str


def routed_operations(routes: Iterable[tuple[str, str]], definition_base: str) -> list[Operation]:
    """The operations among (path, route name) pairs. A route is named after the id of its
    OperationDefinition, so its definition is ``definition_base/<route name>``."""
    found = []
    for path, route_name in routes:
        match = _OPERATION_PATH.match(path)
        if match is not None:
            definition = f"{definition_base}/{route_name}"
            found.append(Operation(match["type"], match["code"], definition))
    return found


def _search_includes(resource_type: str) -> list[str]:
    references = [p.code for p in parameters_for(resource_type).values() if p.type == "reference"]
    return [f"{resource_type}:{code}" for code in references] + (
        [f"{resource_type}:*"] if references else []
    )


def _search_rev_includes(resource_type: str) -> list[str]:
    """Every reference parameter of any type that may point at ``resource_type``."""
    return [
        f"{source}:{param.code}"
        for source, params in all_served().items()
        for param in params.values()
        if param.type == "reference" and (not param.targets or resource_type in param.targets)
    ]


def capability_statement(
    *,
    implemented: Iterable[str],
    base_url: str,
    software_version: str,
    now: datetime,
    max_bundle_entries: int | None = None,
    security: dict[str, Any] | None = None,
    operations: Iterable[Operation] = (),
) -> dict[str, Any]:
    """``security`` is the ``rest.security`` element (how clients authenticate), if any."""
    implemented = set(implemented)
    operations = list(operations)
    resources = [
        _resource(resource_type, policy, implemented, operations)
        for resource_type, policy in SERVED.items()
    ]
    rest: dict[str, Any] = {"mode": "server", **({"security": security} if security else {})}
    rest["resource"] = resources
    rest.update(_system_interactions(implemented, max_bundle_entries))
    system_operations = [_operation(o) for o in operations if o.resource_type is None]
    if system_operations:
        rest["operation"] = system_operations
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(now),
        "publisher": "Waymark",
        "kind": "instance",
        "software": {"name": "Waymark", "version": software_version},
        "implementation": {
            "description": "Waymark clinical-pathway FHIR server",
            "url": base_url,
        },
        "fhirVersion": FHIR_VERSION,
        "format": ["json", "application/fhir+json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [rest],
    }


def _resource(
    resource_type: str, policy: ResourcePolicy, implemented: set[str], operations: list[Operation]
) -> dict[str, Any]:
    interactions = [
        {"code": code}
        for code in TYPE_INTERACTIONS
        if code in implemented and code in policy.interactions
    ]
    codes = {i["code"] for i in interactions}
    writes = bool({"create", "update"} & codes)
    # Conditional update is served in transaction and batch entries (PUT Type?criteria),
    # not as a REST interaction: PUT /Type?criteria answers 405.
    conditional_update = "update" in codes and "transaction" in implemented
    entry: dict[str, Any] = {
        "type": resource_type,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
        "interaction": interactions,
        "versioning": "versioned-update",
        "readHistory": "vread" in implemented,
        "updateCreate": writes,
        "conditionalCreate": writes and "create" in implemented,
        "conditionalRead": "not-supported",
        "conditionalUpdate": conditional_update,
        "conditionalDelete": "not-supported",
        "searchParam": [
            {
                "name": p.code,
                "definition": p.definition,
                "type": p.type,
                "documentation": p.documentation,
            }
            for p in parameters_for(resource_type).values()
        ],
    }
    optional = _optional_elements(
        resource_type, policy, "search-type" in codes, conditional_update, operations
    )
    entry.update({name: value for name, value in optional.items() if value})  # FHIR: no []/""
    return entry


def _optional_elements(
    resource_type: str,
    policy: ResourcePolicy,
    searched: bool,
    conditional_update: bool,
    operations: list[Operation],
) -> dict[str, Any]:
    notes = [policy.documentation] if policy.documentation else []
    if conditional_update:
        notes.append(
            "Conditional update: as a PUT Type?criteria entry of a transaction or batch Bundle."
        )
    optional: dict[str, Any] = {}
    if searched:
        optional["searchInclude"] = _search_includes(resource_type)
        optional["searchRevInclude"] = _search_rev_includes(resource_type)
    optional["operation"] = [_operation(o) for o in operations if o.resource_type == resource_type]
    optional["documentation"] = " ".join(notes)
    return optional


def _operation(operation: Operation) -> dict[str, str]:
    return {"name": operation.name, "definition": operation.definition}


def _system_interactions(
    implemented: set[str], max_bundle_entries: int | None
) -> dict[str, list[dict[str, str]]]:
    limit = f" At most {max_bundle_entries} entries per Bundle." if max_bundle_entries else ""
    documentation = {
        "transaction": "All entries or none, in FHIR's order; urn:uuid and conditional "
        "references resolved." + limit,
        "batch": "Each entry on its own, with its own status and outcome." + limit,
    }
    interactions = [
        {"code": code, "documentation": documentation[code]}
        for route, codes in SYSTEM_INTERACTIONS.items()
        if route in implemented
        for code in codes
    ]
    return {"interaction": interactions} if interactions else {}
