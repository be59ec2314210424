"""The referral Task's state machine (FHIR's Task workflow) and the timeline events it makes.

Task.status follows FHIR's Task state machine; Task.businessStatus carries Waymark's finer
referral state. Each change of either is one event on the referral's timeline, derived from
the Task versions alone, so that the timeline can be rebuilt from history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.fhir.errors import BusinessRuleViolation
from app.pathway.codes import HOLD_REASON, REFERRAL_STATE, codes

OPEN = frozenset({"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"})
_ALLOWED = {
    "draft": {"requested", "cancelled"},
    "requested": {"received", "accepted", "rejected", "cancelled", "on-hold"},
    "received": {"accepted", "rejected", "cancelled", "on-hold"},
    "accepted": {"ready", "in-progress", "cancelled", "on-hold"},
    "ready": {"in-progress", "cancelled", "on-hold", "failed"},
    "in-progress": {"completed", "failed", "on-hold", "cancelled"},
    "on-hold": {"requested", "received", "accepted", "ready", "in-progress", "cancelled", "failed"},
}
#: Moves that must say why, in Task.statusReason.
NEEDS_REASON = frozenset({"rejected", "cancelled", "on-hold", "failed"})


def check_transition(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Refuse (422) a change of status FHIR's Task state machine does not allow, or one
    that needs a reason and has none."""
    old, new = before.get("status"), after.get("status")
    if old == new:
        return
    if new != "entered-in-error" and new not in _ALLOWED.get(str(old), set()):
        allowed = sorted(_ALLOWED.get(str(old), set()) | {"entered-in-error"})
        raise BusinessRuleViolation(
            f"A referral Task cannot go from '{old}' to '{new}'; from '{old}' it may go to: "
            + (", ".join(allowed) if old in _ALLOWED else "entered-in-error only (it is closed)"),
            expression=("Task.status",),
        )
    reason = after.get("statusReason")
    if new in NEEDS_REASON and not (
        isinstance(reason, dict) and (reason.get("text") or reason.get("coding"))
    ):
        raise BusinessRuleViolation(
            f"Moving a referral to '{new}' needs a Task.statusReason saying why"
            + (f" (codes from {HOLD_REASON})" if new == "on-hold" else ""),
            expression=("Task.statusReason",),
        )


def timeline_event(
    before: dict[str, Any] | None,
    after: dict[str, Any],
    *,
    service_request_id: str,
    clock_pausing_reasons: frozenset[str],
) -> dict[str, Any] | None:
    """The timeline row a Task version makes (None when neither state changed)."""
    business = _business_status(after)
    if before is not None and (
        before.get("status") == after.get("status") and _business_status(before) == business
    ):
        return None
    reason = after.get("statusReason") if isinstance(after.get("statusReason"), dict) else {}
    reason_codes = codes(reason, HOLD_REASON) if reason else []
    any_code = next(
        (
            f"{c.get('system', '')}|{c['code']}"
            for c in (reason or {}).get("coding", [])
            if isinstance(c, dict) and "code" in c
        ),
        None,
    )
    meta = after.get("meta", {})
    status = str(after["status"])
    return {
        "task_id": str(after["id"]),
        "version_id": int(meta["versionId"]),
        "service_request_id": service_request_id,
        "at": datetime.fromisoformat(str(meta["lastUpdated"]).replace("Z", "+00:00")),
        "from_status": None if before is None else before.get("status"),
        "to_status": status,
        "business_status": business,
        "reason_code": any_code,
        "reason_text": (reason or {}).get("text"),
        "pauses_clock": status == "on-hold" and bool(set(reason_codes) & clock_pausing_reasons),
        "who": meta.get("source"),
    }


def _business_status(task: dict[str, Any]) -> str | None:
    found = codes(task.get("businessStatus", {}), REFERRAL_STATE)
    return found[0] if found else None
