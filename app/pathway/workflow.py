"""The referral Task's state machine (FHIR's Task workflow) and the timeline events it makes.

Task.status follows FHIR's Task state machine; Task.businessStatus carries Waymark's finer
referral state. Each change of either is one event on the referral's timeline, derived from
the Task versions alone, so that the timeline can be rebuilt from history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.fhir.errors import BusinessRuleViolation
from app.pathway.clocks import HELD_BY_GATE
from app.pathway.codes import HOLD_REASON, REFERRAL_STATE, codes

OPEN = frozenset({"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"})
#: Where each open status may go. On-hold is not in it: a referral comes back from a hold to
#: the status it had before, or where the machine allows from there (see ``check_transition``).
_ALLOWED = {
    "draft": {"requested", "cancelled"},
    "requested": {"received", "accepted", "rejected", "cancelled", "on-hold"},
    "received": {"accepted", "rejected", "cancelled", "on-hold"},
    "accepted": {"ready", "in-progress", "cancelled", "on-hold"},
    "ready": {"in-progress", "cancelled", "on-hold", "failed"},
    "in-progress": {"completed", "failed", "on-hold", "cancelled"},
}
#: Moves that must say why, in Task.statusReason. Entered-in-error too: it takes a referral
#: off the person's open referrals (a held one out of its gate's hold), so the record must say
#: why, or a referral could disappear with no one able to tell whether it was a mistake.
NEEDS_REASON = frozenset({"rejected", "cancelled", "on-hold", "failed", "entered-in-error"})
#: How a referral held by a gate may end other than through the gate, whatever the state
#: machine allows from where it was before the hold (always requested): the service declines
#: it, it is withdrawn, the service records that it could not go ahead, or it is marked
#: entered in error; each with its own reason. A gate decides when a held referral goes
#: ahead, never that it cannot be closed.
CLOSES_A_GATE_HOLD = frozenset({"rejected", "cancelled", "failed", "entered-in-error"})


def held_by_gate(task: dict[str, Any]) -> bool:
    """The Task is on hold by a gate's decision (only a gate sets held-by-gate)."""
    return task.get("status") == "on-hold" and codes(
        task.get("businessStatus", {}), REFERRAL_STATE
    ) == [HELD_BY_GATE]


def allowed_moves(
    status: str | None, *, before_hold: str | None = None, gate_hold: bool = False
) -> set[str]:
    """Where a Task in ``status`` may go. From on-hold: back to ``before_hold`` (the status
    it had before the hold; a Task made on hold, by its gates, was requested), or anywhere the
    machine allows from there, so that a hold never skips a step; and from a gate's hold
    (``gate_hold``), to any of ``CLOSES_A_GATE_HOLD``."""
    if status == "on-hold":
        resumed = before_hold or "requested"
        moves = ({resumed} | _ALLOWED.get(resumed, set())) - {"on-hold"}
        return moves | CLOSES_A_GATE_HOLD if gate_hold else moves
    return set(_ALLOWED.get(str(status), set()))


def check_transition(
    before: dict[str, Any], after: dict[str, Any], *, before_hold: str | None = None
) -> None:
    """Refuse (422) a change of status FHIR's Task state machine does not allow, or one
    that needs a reason and gives no new one."""
    old, new = before.get("status"), after.get("status")
    if old == new:
        return
    allowed = allowed_moves(old, before_hold=before_hold, gate_hold=held_by_gate(before))
    if new != "entered-in-error" and new not in allowed:
        came_back = f" (it was '{before_hold or 'requested'}' before the hold)"
        raise BusinessRuleViolation(
            f"A referral Task cannot go from '{old}' to '{new}'"
            + (came_back if old == "on-hold" else "")
            + f"; from '{old}' it may go to: "
            + (
                ", ".join(sorted(allowed | {"entered-in-error"}))
                if old in OPEN
                else "entered-in-error only (it is closed)"
            ),
            expression=("Task.status",),
        )
    if new in NEEDS_REASON:
        _check_reason(before, after, old=str(old), new=str(new))


def _check_reason(before: dict[str, Any], after: dict[str, Any], *, old: str, new: str) -> None:
    reason = after.get("statusReason")
    given = isinstance(reason, dict) and bool(reason.get("text") or reason.get("coding"))
    if not given:
        raise BusinessRuleViolation(
            f"Moving a referral to '{new}' needs a Task.statusReason saying why"
            + (f" (codes from {HOLD_REASON})" if new == "on-hold" else ""),
            expression=("Task.statusReason",),
        )
    # A reason left over from an earlier move would put the wrong 'why' on the timeline.
    if reason == before.get("statusReason"):
        raise BusinessRuleViolation(
            f"Moving a referral to '{new}' needs its own Task.statusReason: the one given is "
            f"left from an earlier move (the Task is '{old}' with that reason)",
            expression=("Task.statusReason",),
        )


def status_before_hold(events: Sequence[Any]) -> str | None:
    """The status a held Task had before its latest hold (timeline rows, in order); None
    when it was made on hold."""
    for event in reversed(events):
        if event.to_status == "on-hold":
            return str(event.from_status) if event.from_status else None
    return None


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
