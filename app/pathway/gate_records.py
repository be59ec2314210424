"""The record of gate decisions: the gate projection's rows and the DetectedIssues behind them.

Each decision is written twice in one transaction: as a row of the ``gate_decision`` log and
in a resource it can be rebuilt from. The evaluation when a referral is made is kept on its
ServiceRequest (``gate-evaluation`` extensions); every later decision on a gate (a hold's
changed outcome, a release, an override, a closure) is an entry of the ``gate-decision`` log
of the gate's DetectedIssue on that referral. Those DetectedIssues are the server's: a client
may neither write nor change them, so no forged release can enter the record.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from app.canonical import WAYMARK
from app.fhir.access import OpenAccess
from app.fhir.errors import BusinessRuleViolation, Issue
from app.fhir.hooks import WriteEvent
from app.fhir.resources import instant
from app.fhir.store import FhirStore
from app.pathway.codes import codes
from app.pathway.gates import GATE_ID, GATE_MODE, Outcome
from app.pathway.repository import GateRepository

GATE_EVALUATION = f"{WAYMARK}/StructureDefinition/gate-evaluation"
GATE_DECISION = f"{WAYMARK}/StructureDefinition/gate-decision"
GATE_OUTCOME = f"{WAYMARK}/StructureDefinition/gate-outcome"
RELEASED_BY = f"{WAYMARK}/StructureDefinition/gate-released-by"
#: On a mitigation: the resource whose write released the hold, and the client that wrote it.
RELEASE_EVIDENCE = f"{WAYMARK}/StructureDefinition/gate-release-evidence"
RELEASE_WRITER = f"{WAYMARK}/StructureDefinition/gate-release-writer"


@dataclass(frozen=True, slots=True)
class Decision:
    """One row of the gate projection, before it is numbered."""

    service_request_id: str
    task_id: str
    patient_id: str
    gate_id: str
    gate_code: str
    gate_kind: str
    action: str  # evaluated | held | reevaluated | released | overridden | closed
    mode: str
    outcome: str
    at: datetime
    held: bool
    released_by: str | None = None  # evidence | mode | override
    who: str | None = None
    reason: str | None = None

    @classmethod
    def following(cls, row: Any, **changes: Any) -> Decision:
        """The next decision on the gate of ``row`` (a current projection row)."""
        base = cls(
            service_request_id=row.service_request_id,
            task_id=row.task_id,
            patient_id=row.patient_id,
            gate_id=row.gate_id,
            gate_code=row.gate_code,
            gate_kind=row.gate_kind,
            action=row.action,
            mode=row.mode,
            outcome=row.outcome,
            at=row.at,
            held=row.held,
        )
        return replace(base, **changes)

    def row(self) -> dict[str, Any]:
        released = self.action in ("released", "overridden")
        return {
            "service_request_id": self.service_request_id,
            "task_id": self.task_id,
            "patient_id": self.patient_id,
            "gate_id": self.gate_id,
            "gate_code": self.gate_code,
            "gate_kind": self.gate_kind,
            "action": self.action,
            "mode": self.mode,
            "outcome": self.outcome,
            "at": self.at,
            "held": self.held,
            "released_at": self.at if released else None,
            "released_by": self.released_by,
            "who": self.who,
            "reason": self.reason,
        }


def moment(at: datetime) -> datetime:
    """``at`` as a FHIR instant keeps it (milliseconds), so that the row and the resource it
    is rebuilt from agree."""
    return at.replace(microsecond=at.microsecond - at.microsecond % 1000)


# -- the evaluation when a referral is made --------------------------------------------------


async def record_decisions(
    store: FhirStore,
    *,
    outcomes: list[Outcome],
    service_request_id: str,
    task_id: str,
    patient_id: str,
    at: datetime,
) -> None:
    """The first row per gate, and a DetectedIssue per gate not met that acts (enforced: the
    hold; advisory: the warning, also returned to the caller)."""
    repository = GateRepository(store.repo.conn)
    for outcome in outcomes:
        issue_id = None
        gate = outcome.gate
        acts = outcome.outcome != "met" and gate.mode in ("enforced", "advisory")
        if acts:
            issue = detected_issue(outcome, service_request_id, patient_id, at)
            stored = await store.as_server().create(issue, resource_type="DetectedIssue")
            issue_id = stored.stored.id
            if gate.mode == "advisory":
                store.warnings.append(
                    Issue(
                        "business-rule",
                        f"Advisory gate not met: {gate.title}. {outcome.detail} "
                        f"Recorded as DetectedIssue/{issue_id}; the referral goes ahead.",
                        severity="warning",
                    )
                )
        holding = gate.mode == "enforced" and outcome.outcome != "met"
        decision = Decision(
            service_request_id,
            task_id,
            patient_id,
            gate.id,
            gate.code,
            gate.kind,
            "held" if holding else "evaluated",
            gate.mode,
            outcome.outcome,
            moment(at),
            holding,
        )
        await repository.add(**decision.row(), seq=0, current=True, detected_issue_id=issue_id)


def detected_issue(
    outcome: Outcome, service_request_id: str, patient_id: str, at: datetime
) -> dict[str, Any]:
    words = outcome.detail
    if outcome.met_on is not None:
        words += f" If nothing changes it is met on {outcome.met_on.isoformat()}."
    enforced = outcome.gate.mode == "enforced"
    words += (
        " The referral is held until the gate is met or overridden."
        if enforced
        else " The gate is advisory: the referral goes ahead."
    )
    issue = _issue(
        outcome.gate.id,
        outcome.gate.code,
        outcome.gate.title,
        mode=outcome.gate.mode,
        outcome=outcome.outcome,
        patient_id=patient_id,
        implicated=f"ServiceRequest/{service_request_id}",
        at=at,
    )
    issue.update(severity="high" if enforced else "low", detail=words)
    if outcome.evidence:
        issue["evidence"] = [{"detail": [{"reference": ref} for ref in outcome.evidence]}]
    return issue


def _issue(
    gate_id: str,
    code: str,
    title: str,
    *,
    mode: str,
    outcome: str,
    patient_id: str,
    implicated: str,
    at: datetime,
) -> dict[str, Any]:
    return {
        "resourceType": "DetectedIssue",
        "extension": [
            {"url": GATE_MODE, "valueCode": mode},
            {"url": GATE_OUTCOME, "valueCode": outcome},
        ],
        "status": "final",
        "code": {"coding": [{"system": GATE_ID, "code": code, "display": title}]},
        "patient": {"reference": f"Patient/{patient_id}"},
        "identifiedDateTime": instant(at),
        "implicated": [{"reference": implicated}, {"reference": f"PlanDefinition/{gate_id}"}],
    }


# -- later decisions -------------------------------------------------------------------------


async def record(
    store: FhirStore,
    previous: Any,
    decision: Decision,
    *,
    note: str | None = None,
    title: str | None = None,
    evidence: str | None = None,
) -> None:
    """Append ``decision`` after ``previous`` (the gate's current row, or None) to the
    projection and to the log of the gate's DetectedIssue on the referral (made if the gate
    has none yet: an override of a gate that did not hold). ``note``: a mitigation, in words,
    for a release or an override; ``evidence``: the resource whose write led to it (named
    in the mitigation, with ``decision.who`` who wrote it)."""
    issue_id = previous.detected_issue_id if previous is not None else None
    if issue_id is None:
        issue_id = await _issue_for(store, decision, title or decision.gate_code)
    issue = await store.current("DetectedIssue", issue_id)
    if issue is not None:
        issue.setdefault("extension", []).append(log_entry(decision))
        _set_outcome(issue, decision)
        if note:
            extensions: list[dict[str, Any]] = [
                {"url": RELEASED_BY, "valueCode": decision.released_by}
            ]
            if evidence is not None:
                extensions.append(
                    {"url": RELEASE_EVIDENCE, "valueReference": {"reference": evidence}}
                )
                if decision.who:
                    extensions.append({"url": RELEASE_WRITER, "valueUri": decision.who})
            issue.setdefault("mitigation", []).append(
                {"extension": extensions, "action": {"text": note}, "date": instant(decision.at)}
            )
        await store.as_server().update("DetectedIssue", issue_id, issue)
    await GateRepository(store.repo.conn).append(
        previous, **decision.row(), detected_issue_id=issue_id
    )


async def _issue_for(store: FhirStore, decision: Decision, title: str) -> str:
    """The gate's DetectedIssue on the referral, made for a decision that has none."""
    found = await store.find(
        "DetectedIssue",
        [
            ("implicated", f"ServiceRequest/{decision.service_request_id}"),
            ("code", f"{GATE_ID}|{decision.gate_code}"),
        ],
        count=1,
    )
    if found:
        return str(found[0]["id"])
    issue = _issue(
        decision.gate_id,
        decision.gate_code,
        title,
        mode=decision.mode,
        outcome=decision.outcome,
        patient_id=decision.patient_id,
        implicated=f"ServiceRequest/{decision.service_request_id}",
        at=decision.at,
    )
    issue.update(
        severity="moderate",
        detail=f"{title}: the gate did not hold this referral when it was made; recorded "
        "here for the decisions taken on it since.",
    )
    stored = await store.as_server().create(issue, resource_type="DetectedIssue")
    return stored.stored.id


def _set_outcome(issue: dict[str, Any], decision: Decision) -> None:
    for extension in issue.get("extension", []):
        if extension.get("url") == GATE_OUTCOME:
            extension["valueCode"] = decision.outcome
        elif extension.get("url") == GATE_MODE:
            extension["valueCode"] = decision.mode


def log_entry(decision: Decision) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"url": "action", "valueCode": decision.action},
        {"url": "at", "valueInstant": instant(decision.at)},
        {"url": "kind", "valueCode": decision.gate_kind},
        {"url": "mode", "valueCode": decision.mode},
        {"url": "outcome", "valueCode": decision.outcome},
        {"url": "held", "valueBoolean": decision.held},
    ]
    if decision.released_by:
        parts.append({"url": "releasedBy", "valueCode": decision.released_by})
    if decision.who:
        parts.append({"url": "who", "valueUri": decision.who})
    if decision.reason:
        parts.append({"url": "reason", "valueString": decision.reason})
    return {"url": GATE_DECISION, "extension": parts}


def log_of(issue: dict[str, Any]) -> list[dict[str, Any]]:
    """The decisions a DetectedIssue's log holds, in order, as part name -> value."""
    return [
        {
            part["url"]: next(v for k, v in part.items() if k.startswith("value"))
            for part in extension.get("extension", [])
        }
        for extension in issue.get("extension", [])
        if extension.get("url") == GATE_DECISION
    ]


# -- protecting the record -------------------------------------------------------------------


def is_gate_issue(document: dict[str, Any] | None) -> bool:
    return bool(document) and bool(codes((document or {}).get("code", {}), GATE_ID))


async def protect_gate_issues(event: WriteEvent) -> None:
    """A DetectedIssue that records a gate decision is the server's: refuse (422) a client's
    create, change or deletion of one, so that its log and mitigations stay true."""
    if isinstance(event.store.access, OpenAccess):  # the server's own write
        return
    if is_gate_issue(event.before) or is_gate_issue(event.after):
        raise BusinessRuleViolation(
            "DetectedIssues coded from "
            f"{GATE_ID} record gate decisions and are written by Waymark only: a hold is "
            "released when its gate is met (write the evidence) or by POST "
            "/Task/{id}/$override-gate with a reason",
            expression=("DetectedIssue.code",),
        )
