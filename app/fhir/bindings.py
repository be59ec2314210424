"""Required code bindings that fhir.resources does not check.

fhir.resources accepts any string in a ``code`` element (``ServiceRequest.status = "bogus"``),
so the required bindings of the resources served are checked here, as data: a path (dotted,
lists traversed) and the codes its ValueSet allows in FHIR R4 (4.0.1).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from app.fhir.errors import Issue

_PUBLICATION = frozenset({"draft", "active", "retired", "unknown"})
_REQUEST_STATUS = frozenset(
    {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
)
_REQUEST_INTENT = frozenset(
    {
        "proposal",
        "plan",
        "directive",
        "order",
        "original-order",
        "reflex-order",
        "filler-order",
        "instance-order",
        "option",
    }
)
_PRIORITY = frozenset({"routine", "urgent", "asap", "stat"})
_OBSERVATION_STATUS = frozenset(
    {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    }
)
_GENDER = frozenset({"male", "female", "other", "unknown"})
_DAYS = frozenset({"mon", "tue", "wed", "thu", "fri", "sat", "sun"})

TASK_STATUS = frozenset(
    {
        "draft",
        "requested",
        "received",
        "accepted",
        "rejected",
        "ready",
        "cancelled",
        "in-progress",
        "on-hold",
        "failed",
        "completed",
        "entered-in-error",
    }
)
CARE_PLAN_ACTIVITY_STATUS = frozenset(
    {
        "not-started",
        "scheduled",
        "in-progress",
        "on-hold",
        "completed",
        "cancelled",
        "stopped",
        "unknown",
        "entered-in-error",
    }
)

REQUIRED_BINDINGS: dict[str, tuple[tuple[str, frozenset[str]], ...]] = {
    "Patient": (
        ("gender", _GENDER),
        ("contact.gender", _GENDER),
        ("link.type", frozenset({"replaced-by", "replaces", "refer", "seealso"})),
    ),
    "Practitioner": (("gender", _GENDER),),
    "PractitionerRole": (("availableTime.daysOfWeek", _DAYS),),
    "HealthcareService": (("availableTime.daysOfWeek", _DAYS),),
    "Location": (
        ("status", frozenset({"active", "suspended", "inactive"})),
        ("mode", frozenset({"instance", "kind"})),
        ("hoursOfOperation.daysOfWeek", _DAYS),
    ),
    "ServiceRequest": (
        ("status", _REQUEST_STATUS),
        ("intent", _REQUEST_INTENT),
        ("priority", _PRIORITY),
    ),
    "Task": (
        ("status", TASK_STATUS),
        (
            "intent",
            frozenset(
                {
                    "unknown",
                    "proposal",
                    "plan",
                    "order",
                    "original-order",
                    "reflex-order",
                    "filler-order",
                    "instance-order",
                    "option",
                }
            ),
        ),
        ("priority", _PRIORITY),
    ),
    "CarePlan": (
        ("status", _REQUEST_STATUS),
        ("intent", frozenset({"proposal", "plan", "order", "option"})),
        ("activity.detail.status", CARE_PLAN_ACTIVITY_STATUS),
    ),
    "EpisodeOfCare": (
        (
            "status",
            frozenset(
                {
                    "planned",
                    "waitlist",
                    "active",
                    "onhold",
                    "finished",
                    "cancelled",
                    "entered-in-error",
                }
            ),
        ),
        (
            "statusHistory.status",
            frozenset(
                {
                    "planned",
                    "waitlist",
                    "active",
                    "onhold",
                    "finished",
                    "cancelled",
                    "entered-in-error",
                }
            ),
        ),
    ),
    "Encounter": (
        (
            "status",
            frozenset(
                {
                    "planned",
                    "arrived",
                    "triaged",
                    "in-progress",
                    "onleave",
                    "finished",
                    "cancelled",
                    "entered-in-error",
                    "unknown",
                }
            ),
        ),
    ),
    "Observation": (("status", _OBSERVATION_STATUS),),
    "QuestionnaireResponse": (
        (
            "status",
            frozenset({"in-progress", "completed", "amended", "entered-in-error", "stopped"}),
        ),
    ),
    "MedicationStatement": (
        (
            "status",
            frozenset(
                {
                    "active",
                    "completed",
                    "entered-in-error",
                    "intended",
                    "stopped",
                    "on-hold",
                    "unknown",
                    "not-taken",
                }
            ),
        ),
    ),
    "MedicationRequest": (
        (
            "status",
            frozenset(
                {
                    "active",
                    "on-hold",
                    "cancelled",
                    "completed",
                    "entered-in-error",
                    "stopped",
                    "draft",
                    "unknown",
                }
            ),
        ),
        ("intent", _REQUEST_INTENT - {"directive"}),
        ("priority", _PRIORITY),
    ),
    "Consent": (
        (
            "status",
            frozenset({"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"}),
        ),
        ("provision.type", frozenset({"deny", "permit"})),
    ),
    "DocumentReference": (
        ("status", frozenset({"current", "superseded", "entered-in-error"})),
        ("docStatus", frozenset({"preliminary", "final", "amended", "entered-in-error"})),
    ),
    "Communication": (
        (
            "status",
            frozenset(
                {
                    "preparation",
                    "in-progress",
                    "not-done",
                    "on-hold",
                    "stopped",
                    "completed",
                    "entered-in-error",
                    "unknown",
                }
            ),
        ),
        ("priority", _PRIORITY),
    ),
    "CommunicationRequest": (("status", _REQUEST_STATUS), ("priority", _PRIORITY)),
    "Flag": (("status", frozenset({"active", "inactive", "entered-in-error"})),),
    "DetectedIssue": (
        ("status", _OBSERVATION_STATUS),
        ("severity", frozenset({"high", "moderate", "low"})),
    ),
    "Provenance": (
        ("entity.role", frozenset({"derivation", "revision", "quotation", "source", "removal"})),
    ),
    "AuditEvent": (
        ("action", frozenset({"C", "R", "U", "D", "E"})),
        ("outcome", frozenset({"0", "4", "8", "12"})),
    ),
    "Subscription": (
        ("status", frozenset({"requested", "active", "error", "off"})),
        ("channel.type", frozenset({"rest-hook", "websocket", "email", "sms", "message"})),
    ),
    "PlanDefinition": (
        ("status", _PUBLICATION),
        ("action.priority", _PRIORITY),
        ("action.condition.kind", frozenset({"applicability", "start", "stop"})),
    ),
    "ActivityDefinition": (
        ("status", _PUBLICATION),
        ("intent", _REQUEST_INTENT),
        ("priority", _PRIORITY),
    ),
    "CodeSystem": (
        ("status", _PUBLICATION),
        ("content", frozenset({"not-present", "example", "fragment", "complete", "supplement"})),
        (
            "hierarchyMeaning",
            frozenset({"grouped-by", "is-a", "part-of", "classified-with"}),
        ),
    ),
    "ValueSet": (("status", _PUBLICATION),),
    "Measure": (("status", _PUBLICATION),),
    "MeasureReport": (
        ("status", frozenset({"complete", "pending", "error"})),
        ("type", frozenset({"individual", "subject-list", "summary", "data-collection"})),
    ),
    "OperationDefinition": (
        ("status", _PUBLICATION),
        ("kind", frozenset({"operation", "query"})),
        ("parameter.use", frozenset({"in", "out"})),
    ),
}


def _values_at(node: Any, parts: list[str], trail: str) -> Iterator[tuple[str, Any]]:
    if not parts:
        yield trail, node
        return
    if not isinstance(node, dict) or parts[0] not in node:
        return
    child = node[parts[0]]
    here = f"{trail}.{parts[0]}"
    if isinstance(child, list):
        for index, item in enumerate(child):
            yield from _values_at(item, parts[1:], f"{here}[{index}]")
    else:
        yield from _values_at(child, parts[1:], here)


def binding_issues(resource_type: str, document: dict[str, Any]) -> list[Issue]:
    issues: list[Issue] = []
    for path, allowed in REQUIRED_BINDINGS.get(resource_type, ()):
        for expression, value in _values_at(document, path.split("."), resource_type):
            if isinstance(value, str) and value not in allowed:
                issues.append(
                    Issue(
                        "code-invalid",
                        f"'{value}' is not a valid code for {path}; "
                        f"allowed: {', '.join(sorted(allowed))}",
                        expression=(expression,),
                    )
                )
    return issues
