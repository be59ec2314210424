"""The CapabilityStatement, generated from what the running application really serves.

Interactions are read from the application's routes (each FHIR route is named after the
interaction it implements) and intersected with each resource type's policy; search
parameters come from the search registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from app.fhir.resources import FHIR_VERSION, SERVED, instant
from app.fhir.search.registry import parameters_for

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


def capability_statement(
    *,
    implemented: Iterable[str],
    base_url: str,
    software_version: str,
    now: datetime,
    max_bundle_entries: int | None = None,
    security: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``security`` is the ``rest.security`` element (how clients authenticate), if any."""
    implemented = set(implemented)
    resources = []
    for resource_type, policy in SERVED.items():
        interactions = [
            {"code": code}
            for code in TYPE_INTERACTIONS
            if code in implemented and code in policy.interactions
        ]
        writes = bool({"create", "update"} & {i["code"] for i in interactions})
        entry: dict[str, Any] = {
            "type": resource_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
            "interaction": interactions,
            "versioning": "versioned-update",
            "readHistory": "vread" in implemented,
            "updateCreate": writes,
            "conditionalCreate": writes and "create" in implemented,
            "conditionalRead": "not-supported",
            "conditionalUpdate": False,
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
        if policy.documentation:
            entry["documentation"] = policy.documentation
        resources.append(entry)
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
        "rest": [
            {
                "mode": "server",
                **({"security": security} if security else {}),
                "resource": resources,
                **_system_interactions(implemented, max_bundle_entries),
            }
        ],
    }


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
