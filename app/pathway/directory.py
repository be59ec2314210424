"""The directory: services, their kinds, and which kinds may refer to which (the routes).

Services are HealthcareServices with a Waymark service kind in ``type``; routes are the
actions of the ``referral-routes`` PlanDefinition. Both are data, read through the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.fhir.errors import BusinessRuleViolation
from app.fhir.store import FhirStore
from app.pathway.codes import (
    ROUTE_FROM,
    ROUTE_REQUIRES_LIBERATION_DATE,
    ROUTES_PLAN,
    SERVICE_KIND,
    codes,
    reference_id,
)


@dataclass(frozen=True, slots=True)
class Service:
    id: str
    kind: str
    name: str


@dataclass
class Routes:
    """Receiving kind -> the kinds that may refer into it; and which routes need a
    liberation date (throughcare from prison)."""

    into: dict[str, set[str]] = field(default_factory=dict)
    needs_liberation_date: set[tuple[str, str]] = field(default_factory=set)

    def allows(self, from_kind: str, to_kind: str) -> bool:
        return from_kind in self.into.get(to_kind, set())


def service_from(document: dict[str, Any]) -> Service | None:
    """The service a HealthcareService is, if it is active and has a Waymark kind."""
    kinds = codes(document.get("type", []), SERVICE_KIND)
    if document.get("active") is False or len(kinds) != 1:
        return None
    return Service(str(document["id"]), kinds[0], str(document.get("name", document["id"])))


async def receiving_service(store: FhirStore, performer: Any) -> Service:
    service_id = reference_id(performer, "HealthcareService")
    document = await store.current("HealthcareService", service_id) if service_id else None
    service = service_from(document) if document else None
    if service is None:
        raise BusinessRuleViolation(
            f"The performer {_shown(performer)} is not an active service with a Waymark "
            f"service kind (HealthcareService.type from {SERVICE_KIND})",
            expression=("ServiceRequest.performer[0]",),
        )
    return service


async def sending_service(store: FhirStore, requester: Any) -> Service:
    """The service a referral comes from: the PractitionerRole's healthcareService (the UK
    Core way), or the one active service of the requesting Organization."""
    where = ("ServiceRequest.requester",)
    if (role_id := reference_id(requester, "PractitionerRole")) is not None:
        role = await store.current("PractitionerRole", role_id)
        services = [
            service_id
            for ref in (role or {}).get("healthcareService", [])
            if (service_id := reference_id(ref, "HealthcareService")) is not None
        ]
        if len(services) != 1:
            raise BusinessRuleViolation(
                f"The requester PractitionerRole/{role_id} must name exactly one "
                f"healthcareService (it names {len(services)}), so the sending service is known",
                expression=where,
            )
        document = await store.current("HealthcareService", services[0])
        service = service_from(document) if document else None
        if service is None:
            raise BusinessRuleViolation(
                f"HealthcareService/{services[0]}, the requester's service, is not an active "
                "service with a Waymark service kind",
                expression=where,
            )
        return service
    if (org_id := reference_id(requester, "Organization")) is not None:
        found = await store.find(
            "HealthcareService",
            [("organization", f"Organization/{org_id}"), ("active", "true")],
            count=2,
        )
        offered = [s for s in (service_from(d) for d in found) if s is not None]
        if len(offered) != 1:
            raise BusinessRuleViolation(
                f"The requester Organization/{org_id} has {len(offered)} active services; "
                "name the sending service with a PractitionerRole whose healthcareService is it",
                expression=where,
            )
        return offered[0]
    raise BusinessRuleViolation(
        "A referral's requester must be a PractitionerRole (with its healthcareService) or an "
        "Organization with one active service",
        expression=where,
    )


async def routes(store: FhirStore) -> Routes:
    """The routes of the active referral-routes PlanDefinition (none if it is missing), read
    once per transaction."""
    memo = store.derived_from("PlanDefinition")
    if "routes" not in memo:
        memo["routes"] = _routes_of(
            await store.find("PlanDefinition", [("url", ROUTES_PLAN), ("status", "active")])
        )
    found: Routes = memo["routes"]
    return found


def _routes_of(plans: list[dict[str, Any]]) -> Routes:
    found = Routes()
    for plan in plans:
        for action in plan.get("action", []):
            for to_kind in codes(action.get("code", []), SERVICE_KIND):
                for extension in action.get("extension", []):
                    kind = extension.get("valueCoding", {}).get("code")
                    if not isinstance(kind, str):
                        continue
                    if extension.get("url") == ROUTE_FROM:
                        found.into.setdefault(to_kind, set()).add(kind)
                    elif extension.get("url") == ROUTE_REQUIRES_LIBERATION_DATE:
                        found.needs_liberation_date.add((kind, to_kind))
    return found


def _shown(reference: Any) -> str:
    text = reference.get("reference") if isinstance(reference, dict) else None
    return f"'{text}'" if isinstance(text, str) else "(none)"
