"""Keeping a referral's ServiceRequest and Task in step: what a ServiceRequest may become, and
what its Task's closing makes of it.

A referral is made when it is sent: its ServiceRequest is created active (a draft stays in the
sending system), and a ServiceRequest that was not a referral does not become one by an update
(its Task, gates and timeline start when it is created). Once closed, by its Task or by being
revoked, a referral stays closed: a new one is a new referral.
"""

from __future__ import annotations

from typing import Any

from app.fhir.errors import BusinessRuleViolation
from app.pathway.codes import REFERRAL_TASK, REFERRING_SERVICE
from app.pathway.gate_records import GATE_EVALUATION

SR_OPEN = frozenset({"active", "on-hold"})
#: What a closed Task makes its ServiceRequest.
FOLLOWS_TASK = {
    "cancelled": "revoked",
    "rejected": "revoked",
    "failed": "revoked",
    "completed": "completed",
    "entered-in-error": "entered-in-error",
}
#: Extensions of a referral's ServiceRequest that only the server writes.
KEPT_BY_SERVER = (REFERRAL_TASK, REFERRING_SERVICE, GATE_EVALUATION)


def check_new_referral(after: dict[str, Any]) -> None:
    if after.get("status") != "active":
        raise BusinessRuleViolation(
            f"A referral is created when it is sent, with status 'active' (not "
            f"'{after.get('status')}'): a draft stays in the sending system until then",
            expression=("ServiceRequest.status",),
        )


def refuse_becoming_a_referral() -> None:
    raise BusinessRuleViolation(
        "A ServiceRequest becomes a referral only when it is created as one (category "
        "3457005 and a HealthcareService performer): create a new ServiceRequest for the "
        "referral, so that its Task, gates and timeline start with it",
        expression=("ServiceRequest.category",),
    )


def check_referral_change(before: dict[str, Any], after: dict[str, Any], row: Any) -> None:
    """Refuse (422) a change a referral's ServiceRequest may not make: a different subject,
    performer, requester or category, the server's extensions, or a status out of step with
    its Task."""
    for element in ("subject", "performer", "requester", "category"):
        if before.get(element) != after.get(element):
            raise BusinessRuleViolation(
                f"A referral's {element} cannot change; revoke it and refer again",
                expression=(f"ServiceRequest.{element}",),
            )
    for url in KEPT_BY_SERVER:
        kept = [e for e in before.get("extension", []) if e.get("url") == url]
        sent = [e for e in after.get("extension", []) if e.get("url") == url]
        if kept != sent:
            raise BusinessRuleViolation(
                f"The extension {url} is kept by the server and cannot change",
                expression=("ServiceRequest.extension",),
            )
    _check_status(str(before.get("status")), str(after.get("status")), row)


def _check_status(old: str, new: str, row: Any) -> None:
    if old == new:
        return
    where = ("ServiceRequest.status",)
    if old not in SR_OPEN:
        raise BusinessRuleViolation(
            f"The referral is closed (ServiceRequest {old}); it cannot become '{new}'. "
            "Refer again with a new ServiceRequest",
            expression=where,
        )
    if not row.open:
        expected = FOLLOWS_TASK.get(row.status)
        if new != expected:
            raise BusinessRuleViolation(
                f"The referral is closed: its Task (Task/{row.task_id}) is {row.status}, so its "
                f"ServiceRequest can only become '{expected}'",
                expression=where,
            )
        return
    if new == "completed":
        raise BusinessRuleViolation(
            f"Complete the referral's Task (Task/{row.task_id}); its ServiceRequest follows",
            expression=where,
        )
    if new not in SR_OPEN | {"revoked", "entered-in-error"}:
        raise BusinessRuleViolation(
            f"A referral's ServiceRequest cannot go from '{old}' to '{new}'",
            expression=where,
        )
